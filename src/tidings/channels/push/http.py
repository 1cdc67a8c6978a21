"""What both push providers share: their HTTP client's limits, reason codes, token errors.

A connection that fails or times out is transient: the notification may have left (a timeout
after the request was written), the at-least-once bound every channel states.
"""

from __future__ import annotations

import re

import httpx

from tidings.channels.adapters import SendFailed
from tidings.channels.http import (
    MAX_RETRY_AFTER,
    is_transient,
    retry_after,
    transport_failure,
)
from tidings.channels.http import new_client as _new_client

__all__ = [
    "MAX_RETRY_AFTER",
    "is_transient",
    "new_client",
    "retry_after",
    "transport_failure",
]

# Requests of one batch in flight at once (per provider): FCM over HTTP/1.1 needs a connection
# each, APNs multiplexes them as streams of one HTTP/2 connection.
MAX_CONCURRENT = 32

INVALID_TOKEN = "invalid_token"
PAYLOAD_TOO_LARGE = "payload_too_large"
PROVIDER_MISCONFIGURED = "provider_misconfigured"
PROVIDER_AUTH_FAILED = "provider_auth_failed"


def new_client(*, http2_only: bool = False) -> httpx.AsyncClient:
    return _new_client(MAX_CONCURRENT, 8, http2_only=http2_only)


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
