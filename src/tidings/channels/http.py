"""What the channels that speak HTTP share: clients with explicit limits, classifying answers.

A 2xx is accepted; 408, 429 and 5xx are worth another try later (after the Retry-After the
provider asked for, if any); another status is permanent. A connection that fails or times out
is transient: the message may have left (a timeout after the request was written), the same
at-least-once bound the SMTP adapter states.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from tidings.channels.adapters import SendFailed

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
# A Retry-After beyond this is taken as this: the retry policy's own ceiling still applies.
MAX_RETRY_AFTER = 3600.0


def new_client(
    max_connections: int, max_keepalive: int, *, http2_only: bool = False
) -> httpx.AsyncClient:
    """Explicit timeouts and pool limits; redirects never followed (a provider that redirects
    a POST is misconfigured, and following could leak credentials). `http2_only` speaks
    HTTP/2 alone: negotiated by ALPN over TLS, with prior knowledge over plain http:// (tests)."""
    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT, pool=READ_TIMEOUT)
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive)
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
