"""Per-key request rates: a token bucket per API key, in this process."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from tidings.errors import RateLimited


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class KeyRateLimiter:
    """At most `rate` requests per second per key, with bursts of `burst`.

    Each process counts its own requests: behind N API processes a key gets up to N times the
    rate (docs/operations.md). A rate of 0 turns the limit off.
    """

    MAX_KEYS = 100_000

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, 2 * rate)
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str, now: float | None = None) -> None:
        """Spends one request of the key's allowance; RateLimited when there is none."""
        if self.rate <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                if len(self._buckets) >= self.MAX_KEYS:
                    self._buckets.clear()
                bucket = self._buckets[key_id] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return
            wait = (1 - bucket.tokens) / self.rate
        raise RateLimited(
            f"this API key sends more than {self.rate:g} requests per second; retry later",
            retry_after=wait,
        )


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds: round up, never 0."""
    return str(max(1, math.ceil(seconds)))
