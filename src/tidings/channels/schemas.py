"""API shapes of channel configurations; secret fields are write-only."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    model_validator,
)

from tidings.channels.email.dkim import check_dns_name, load_private_key
from tidings.channels.email.smtp import SmtpRelay
from tidings.vocabulary import E164_PATTERN, Category, Channel

HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,76}$")
# Headers Tidings writes itself; a configuration may not override them.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "dkim-signature",
        "reply-to",
    }
)


def check_smtp_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("must name a host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if port == 0:
        raise ValueError("has an invalid port")
    SmtpRelay.from_url(value)  # its options (?starttls=); raises ValueError
    return value


def _check_e164(value: str) -> str:
    if not E164_PATTERN.match(value):
        raise ValueError("must be an E.164 phone number such as +14155550100")
    return value


def _check_headers(value: dict[str, str]) -> dict[str, str]:
    for name, header_value in value.items():
        if not HEADER_NAME.match(name):
            raise ValueError(f"'{name}' is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"'{name}' is set by Tidings and cannot be overridden")
        if "\r" in header_value or "\n" in header_value:
            raise ValueError(f"the value of '{name}' contains a line break")
    return value


def _check_single_line(value: str) -> str:
    # It becomes part of the From header: a line break would let it add headers.
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("must not contain control characters or line breaks")
    return value


SmtpUrl = Annotated[str, Field(max_length=2000), AfterValidator(check_smtp_url)]
E164 = Annotated[str, AfterValidator(_check_e164)]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Fields stored apart and never returned by the API.
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()


def _check_dkim_key(value: str) -> str:
    load_private_key(value)  # raises ValueError saying what is wrong
    return value


class EmailSettings(_Settings):
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("dkim_private_key",)

    from_address: EmailStr
    from_name: Annotated[str, AfterValidator(_check_single_line)] | None = Field(
        default=None, max_length=200
    )
    reply_to: EmailStr | None = None
    smtp_url: SmtpUrl | None = Field(
        default=None,
        description="smtp:// or smtps:// URL of the relay, credentials included; "
        "falls back to TIDINGS_SMTP_URL. Returned without its password.",
    )
    open_tracking: bool = False
    click_tracking: bool = False
    headers: Annotated[dict[str, str], AfterValidator(_check_headers)] = Field(
        default_factory=dict, max_length=50
    )
    allow_complaint_suppressed: bool = Field(
        default=False,
        description="Transactional configurations only: send to addresses suppressed for a "
        "spam complaint (every other suppression still blocks). Ignored for marketing.",
    )
    inline_css: bool = Field(
        default=True,
        description="Copy the rules of <style> blocks into style attributes, which is all many "
        "mail clients read; HTML without <style> is left as it is",
    )
    smtp_pool_size: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="SMTP sessions kept open to the relay by each worker process (default 4)",
    )
    smtp_rate_per_second: float | None = Field(
        default=None,
        gt=0,
        le=100_000,
        description="Most messages a second each worker process sends through this "
        "configuration's relay; unset: as fast as the relay takes them",
    )
    dkim_domain: Annotated[str, AfterValidator(check_dns_name)] | None = Field(
        default=None, max_length=253, description="d= of the DKIM signature"
    )
    dkim_selector: Annotated[str, AfterValidator(check_dns_name)] | None = Field(
        default=None,
        max_length=253,
        description="s= of the DKIM signature: the key is published at "
        "<selector>._domainkey.<domain>",
    )
    dkim_private_key: Annotated[str, AfterValidator(_check_dkim_key)] | None = Field(
        default=None,
        max_length=10_000,
        description="PEM private key, RSA (2048 bits advised) or Ed25519; write-only",
    )

    @model_validator(mode="after")
    def _dkim_complete(self) -> EmailSettings:
        given = [self.dkim_domain, self.dkim_selector, self.dkim_private_key]
        if any(given) and not all(given):
            raise ValueError("DKIM needs dkim_domain, dkim_selector and dkim_private_key together")
        return self


def _check_body_template(value: dict[str, Any]) -> dict[str, Any]:
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError as error:
        # Integers past 64 bits, lone surrogates, nesting past orjson's limit: not a 500.
        raise ValueError(f"cannot be stored as JSON: {error}") from None
    if size > 10_000:
        raise ValueError("must be at most 10,000 bytes of JSON")
    return value


def _check_header_name(value: str) -> str:
    if not HEADER_NAME.match(value):
        raise ValueError(f"'{value}' is not a valid header name")
    return value


class SmsSettings(_Settings):
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("auth_token", "auth_header_value")

    provider: Literal["twilio", "generic", "dev"] = "dev"
    from_number: E164 | None = None
    messaging_service_sid: str | None = Field(default=None, max_length=64)
    account_sid: str | None = Field(default=None, max_length=64)
    auth_token: str | None = Field(default=None, max_length=256)
    endpoint_url: HttpUrl | None = None
    # The generic provider (channels/sms/generic.py): how a message is sent to endpoint_url.
    http_method: Literal["POST", "PUT"] = "POST"
    body_template: Annotated[dict[str, Any], AfterValidator(_check_body_template)] | None = Field(
        default=None,
        description="JSON body; strings may hold {{to}}, {{from}}, {{body}}, {{message_id}}; "
        'a string "{{media_urls}}" becomes the list of media URLs. '
        'Default {"to": "{{to}}", "from": "{{from}}", "body": "{{body}}"}.',
    )
    auth_header_name: Annotated[str, AfterValidator(_check_header_name)] | None = None
    auth_header_value: Annotated[str, AfterValidator(_check_single_line)] | None = Field(
        default=None, max_length=4096
    )
    id_path: str = Field(
        default="id",
        max_length=200,
        description="Dotted path of the provider's message id in its JSON answer",
    )

    @model_validator(mode="after")
    def _provider_needs(self) -> SmsSettings:
        if self.provider == "twilio":
            missing = [name for name in ("account_sid", "auth_token") if not getattr(self, name)]
            if not (self.from_number or self.messaging_service_sid):
                missing.append("from_number")
            if missing:
                raise ValueError("twilio needs " + ", ".join(missing))
        if self.provider == "generic" and self.endpoint_url is None:
            raise ValueError("the generic provider needs endpoint_url")
        return self


class PushSettings(_Settings):
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("fcm_service_account_json", "apns_private_key")

    provider: Literal["fcm", "apns", "dev"] = "dev"
    app_id: str | None = Field(default=None, max_length=200)
    fcm_project_id: str | None = Field(default=None, max_length=200)
    fcm_service_account_json: str | None = Field(default=None, max_length=20_000)
    apns_team_id: str | None = Field(default=None, max_length=20)
    apns_key_id: str | None = Field(default=None, max_length=20)
    apns_private_key: str | None = Field(default=None, max_length=10_000)
    apns_bundle_id: str | None = Field(default=None, max_length=200)
    apns_environment: Literal["production", "sandbox"] = "production"

    @model_validator(mode="after")
    def _provider_needs(self) -> PushSettings:
        required = {
            "fcm": ("fcm_project_id", "fcm_service_account_json"),
            "apns": ("apns_team_id", "apns_key_id", "apns_private_key", "apns_bundle_id"),
            "dev": (),
        }[self.provider]
        missing = [name for name in required if not getattr(self, name)]
        if missing:
            raise ValueError(f"{self.provider} needs " + ", ".join(missing))
        # Credentials that cannot sign are refused now rather than at every send.
        from tidings.channels.push.fcm import ServiceAccount
        from tidings.channels.push.jwt import check_p256_key, check_rsa_key

        if self.provider == "fcm" and self.fcm_service_account_json:
            account = ServiceAccount.parse(self.fcm_service_account_json)
            try:
                check_rsa_key(account.private_key)
            except ValueError as exc:
                raise ValueError(f"fcm_service_account_json: {exc}") from None
        if self.provider == "apns" and self.apns_private_key:
            try:
                check_p256_key(self.apns_private_key)
            except ValueError as exc:
                raise ValueError(f"apns_private_key: {exc}") from None
        return self


SETTINGS_MODELS: dict[Channel, type[_Settings]] = {
    Channel.EMAIL: EmailSettings,
    Channel.SMS: SmsSettings,
    Channel.PUSH: PushSettings,
}


class ChannelConfigurationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    channel: Channel
    category: Category
    email: EmailSettings | None = None
    sms: SmsSettings | None = None
    push: PushSettings | None = None

    @model_validator(mode="after")
    def _settings_of_the_channel(self) -> ChannelConfigurationCreate:
        for channel in Channel:
            given = getattr(self, channel.value) is not None
            if channel is self.channel and not given:
                raise ValueError(f"a {channel} configuration needs its '{channel}' settings")
            if channel is not self.channel and given:
                raise ValueError(f"'{channel}' settings do not belong to a {self.channel} one")
        return self

    def settings(self) -> _Settings:
        settings: _Settings = getattr(self, self.channel.value)
        return settings


class ChannelConfigurationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    channel: Channel | None = Field(default=None, description="Cannot change; accepted if equal")
    category: Category | None = None
    email: dict[str, Any] | None = Field(default=None, description="EmailSettings, partial")
    sms: dict[str, Any] | None = Field(default=None, description="SmsSettings, partial")
    push: dict[str, Any] | None = Field(default=None, description="PushSettings, partial")


class ChannelConfigurationOut(BaseModel):
    id: str
    name: str
    channel: Channel
    category: Category
    email: dict[str, Any] | None = None
    sms: dict[str, Any] | None = None
    push: dict[str, Any] | None = None
    secrets_set: list[str] = Field(description="Names of write-only secrets that have a value")
    created_at: datetime
    updated_at: datetime


class ChannelConfigurationList(BaseModel):
    items: list[ChannelConfigurationOut]
    next_cursor: str | None
