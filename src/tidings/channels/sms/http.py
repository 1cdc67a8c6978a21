"""The SMS providers' HTTP client: limits for one adapter, and the shared classification."""

from __future__ import annotations

import httpx

from tidings.channels.http import (
    MAX_RETRY_AFTER,
    is_transient,
    retry_after,
    transport_failure,
)
from tidings.channels.http import new_client as _new_client

__all__ = ["MAX_RETRY_AFTER", "is_transient", "new_client", "retry_after", "transport_failure"]

MAX_CONNECTIONS = 16


def new_client() -> httpx.AsyncClient:
    """One client per adapter."""
    return _new_client(MAX_CONNECTIONS, MAX_CONNECTIONS)
