"""What both push providers share: HTTP clients with explicit limits, errors, Retry-After.

A connection that fails or times out is transient: the notification may have left (a timeout
after the request was written), the at-least-once bound every channel states.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from tidings.channels.adapters import SendFailed

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
# Requests of one batch in flight at once (per provider): FCM over HTTP/1.1 needs a connection
# each, APNs multiplexes them as streams of one HTTP/2 connection.
MAX_CONCURRENT = 32
# A Retry-After beyond this is taken as this: the retry policy's own ceiling still applies.
MAX_RETRY_AFTER = 3600.0

INVALID_TOKEN = "invalid_token"
PAYLOAD_TOO_LARGE = "payload_too_large"
PROVIDER_MISCONFIGURED = "provider_misconfigured"
PROVIDER_AUTH_FAILED = "provider_auth_failed"


def new_client(*, http2_only: bool = False) -> httpx.AsyncClient:
    """Explicit timeouts and pool limits; redirects never followed (a provider that redirects
    a POST is misconfigured, and following could leak the bearer token). `http2_only` speaks
    HTTP/2 alone: negotiated by ALPN over TLS, with prior knowledge over plain http:// (tests)."""
    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT, pool=READ_TIMEOUT)
    limits = httpx.Limits(max_connections=MAX_CONCURRENT, max_keepalive_connections=8)
    if http2_only:
        return httpx.AsyncClient(
            http1=False, http2=True, timeout=timeout, limits=limits, follow_redirects=False
        )
    return httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), MAX_RETRY_AFTER)


def is_transient(status: int) -> bool:
    return status in (408, 429) or status >= 500


def transport_failure(message_id: str, exc: httpx.HTTPError, provider: str) -> SendFailed:
    if isinstance(exc, httpx.TimeoutException):
        return SendFailed(
            message_id, "timeout", f"{provider} did not answer in time", retryable=True
        )
    return SendFailed(
        message_id,
        "connection_error",
        f"{provider} could not be reached: {type(exc).__name__}: {exc}",
        retryable=True,
    )


def snake(name: str) -> str:
    """`BadDeviceToken` -> `bad_device_token`, `SENDER_ID_MISMATCH` -> `sender_id_mismatch`:
    provider error names as reason codes."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()[:48]


class ProviderUnavailable(Exception):
    """The provider's credentials could not be turned into a token: why, and whether later
    may work (the token endpoint was down) or not (the credentials are refused)."""

    def __init__(
        self, reason: str, detail: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after

    def failure(self, message_id: str) -> SendFailed:
        return SendFailed(
            message_id,
            self.reason,
            self.detail,
            retryable=self.retryable,
            retry_after=self.retry_after,
        )
