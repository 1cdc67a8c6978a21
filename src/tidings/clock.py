"""The one place that reads the wall clock, so services and tests agree on what "now" is."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
