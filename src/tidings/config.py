"""Settings read from TIDINGS_* environment variables, with the defaults of the embedded shape."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("var")


class Settings(BaseSettings):
    """Every knob an operator can turn; the README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str = ""
    bootstrap_api_key: str | None = None
    smtp_url: str | None = None
    public_url: str | None = None
    auto_migrate: bool = True
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    log_level: str = "info"
    # Delivery: a batch claimed at a time, how long a claim holds, and how retries back off
    # (exponential with full jitter, capped; then the message fails with its last reason).
    delivery_batch_size: int = Field(default=200, ge=1, le=5000)
    delivery_lease_seconds: float = Field(default=120.0, gt=0)
    # A message whose lease ran out more than this many times (each worker holding it died)
    # fails as `worker_crashed` instead of killing the next worker (delivery/queue.py).
    delivery_max_lease_expiries: int = Field(default=5, ge=1, le=1000)
    max_attempts: int = Field(default=8, ge=1, le=100)
    retry_base_seconds: float = Field(default=5.0, gt=0)
    retry_max_seconds: float = Field(default=3600.0, gt=0)
    # Guards on user-authored content: a template may not be larger than this nor spend more
    # than this much fuel (minijinja's unit of interpreter work) in one render.
    # Largest request body accepted: room for 20 recipients with 200 KB of context between them,
    # a profile and a template, refused before anything is parsed.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    # Largest file streamed to an import route (profiles, suppressions), row by row.
    max_import_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    # A profile import job that has written no progress for this long is read as
    # `interrupted` (its process died); its committed rows stay. Well above the 10 s heartbeat
    # of a live import, so a slow one is not taken for dead between two of its writes.
    import_stale_seconds: float = Field(default=300.0, ge=60)
    # Requests per second one API key may send to this process (bursts of twice that); 0: no
    # limit. Over it, 429 with Retry-After.
    api_rate_limit: float = Field(default=0.0, ge=0)
    template_max_bytes: int = Field(default=256 * 1024, gt=0)
    template_fuel: int = Field(default=200_000, gt=0)
    # Authoring renders (review's trial render, previews, proofs) run in a child process capped
    # at this much address space and this many seconds: fuel bounds a template's work, not
    # the memory it builds (content/sandbox.py).
    template_memory_limit_mb: int = Field(default=256, ge=64)
    template_check_seconds: float = Field(default=5.0, gt=0)
    # Soft bounces of an address (in a row) after which it becomes a `soft_bounce` suppression.
    soft_bounce_threshold: int = Field(default=3, ge=1, le=1000)
    # Marketing to a recipient whose consent on the channel is unset (or who has no stored
    # profile): "allow" (AJO's reading: unset is consent) or "deny". A workspace may override.
    unset_consent: Literal["allow", "deny"] = "allow"
    # Signs the links Tidings puts in messages (unsubscribe). Unset: a random key generated once
    # and kept in <data_dir>/secret_key; processes that do not share a data dir must set it.
    secret_key: str | None = None
    # Provider feedback (tidings.feedback): the bounce mailbox's SMTP listener (off unset), the
    # hosts SNS certificates and subscription URLs may come from, the SNS topics accepted
    # (comma-separated ARNs; empty: any), and SendGrid's Event Webhook verification key.
    bounce_smtp_host: str = "127.0.0.1"
    bounce_smtp_port: int | None = Field(default=None, ge=1, le=65535)
    sns_host_pattern: str = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"
    sns_topic_arns: str = ""
    sendgrid_webhook_public_key: str | None = None
    # Base URL of Twilio's REST API; tests point it at a local server speaking its protocol.
    twilio_api_base: str = "https://api.twilio.com"
    # Base URL of FCM's HTTP v1 API, and of APNs (unset: Apple's production or sandbox host, as
    # the configuration's apns_environment says); tests point them at local servers.
    fcm_api_base: str = "https://fcm.googleapis.com"
    apns_api_base: str | None = None
    # The dev mailbox (/dev/mailbox): with `tidings serve` on a loopback host, the dev sink's
    # messages (and emails with no SMTP relay at all) are kept in memory and shown there.
    dev_mailbox: bool = True
    # Operations (tidings.operations). Logs: JSON lines (serve, api, worker; other commands
    # default to console), every request or only 5xx and slow ones. Metrics: /metrics open,
    # or behind this bearer token; `tidings worker` serves them on metrics_port when set.
    # Retention: personal data of finished messages cleared after this many days (0: kept).
    log_format: Literal["json", "console"] | None = None
    access_log: bool = False
    slow_request_seconds: float = Field(default=1.0, ge=0)
    metrics_token: str | None = None
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    retention_days: int = Field(default=0, ge=0)
    # Feedback webhooks (tidings.webhooks): addresses inside the server's network (loopback,
    # private, link-local, CGNAT...) are refused unless allowed here, all of them or by CIDR
    # (comma-separated); how long one delivery attempt may take.
    webhook_allow_private: bool = False
    webhook_allowed_networks: str = ""
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("bootstrap_api_key")
    @classmethod
    def _key_long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("TIDINGS_BOOTSTRAP_API_KEY must be at least 16 characters")
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key_long_enough(cls, value: str | None) -> str | None:
        # Whoever knows the key can unsubscribe anyone: it must be as hard to guess as the
        # generated one (32 random bytes are 43 characters of base64).
        if value is not None and len(value.strip()) < 32:
            raise ValueError("TIDINGS_SECRET_KEY must be at least 32 characters")
        return value.strip() if value is not None else None

    @field_validator("sendgrid_webhook_public_key")
    @classmethod
    def _sendgrid_key_valid(cls, value: str | None) -> str | None:
        # A key that cannot verify anything would refuse every event: say so at start.
        from tidings.feedback.sendgrid import public_key

        if value and value.strip():
            public_key(value)
            return value.strip()
        return None

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _webhook_networks_valid(cls, value: str) -> str:
        from tidings.webhooks.client import parse_networks

        try:
            parse_networks(value)
        except ValueError as exc:
            raise ValueError(f"TIDINGS_WEBHOOK_ALLOWED_NETWORKS: {exc}") from None
        return value

    @field_validator("sns_host_pattern")
    @classmethod
    def _sns_host_pattern_valid(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(
                f"TIDINGS_SNS_HOST_PATTERN is not a regular expression: {exc}"
            ) from None
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_valid(cls, value: str | None) -> str | None:
        # The same rule as a configuration's smtp_url: a bad one fails at start, clearly.
        from tidings.channels.schemas import check_smtp_url

        if value:
            try:
                check_smtp_url(value)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return value or None

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tidings.db').as_posix()}"

    @cached_property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")
