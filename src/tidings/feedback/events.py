"""What every feedback source is read into: one event per recipient, and how an event names
the message it is about (our id in the Message-ID, or a VERP envelope address)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

# Tidings' message ids are UUIDs, and mime.build_message writes `<message_id@domain>`.
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_MESSAGE_ID = re.compile(rf"<?\s*({_UUID})@[^>\s]+\s*>?", re.IGNORECASE)
# VERP: a Return-Path `bounces+<message id>@domain` (see docs/operations.md).
_VERP = re.compile(rf"[^@+\s]+\+({_UUID})@[^@\s]+", re.IGNORECASE)
MAX_DETAIL = 1000


class FeedbackKind(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    # A remote MTA still tries (DSN `Action: delayed`, SendGrid `deferred`): logged only.
    DELAYED = "delayed"
    COMPLAINT = "complaint"
    DELIVERED = "delivered"
    UNSUBSCRIBE = "unsubscribe"


class FeedbackSource(StrEnum):
    DSN = "dsn"
    ARF = "arf"
    SES = "ses"
    SENDGRID = "sendgrid"


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One piece of feedback about one recipient of one message.

    `event_id` is unique per source for a distinct event: the same event delivered twice
    (a webhook retried, a DSN sent again) carries the same id and is applied once.
    """

    kind: FeedbackKind
    source: FeedbackSource
    event_id: str
    recipient: str | None = None
    # Our message id, read from the original Message-ID or a VERP address.
    message_ref: str | None = None
    provider_message_id: str | None = None
    status: str | None = None
    detail: str | None = None
    occurred_at: datetime | None = None


def message_ref_from_message_id(value: str | None) -> str | None:
    """Our message id in a Message-ID header value Tidings wrote, else None."""
    if not value:
        return None
    found = _MESSAGE_ID.fullmatch(value.strip())
    return found.group(1).lower() if found else None


def message_ref_from_verp(address: str | None) -> str | None:
    """Our message id in a VERP address `local+<message id>@domain`, else None."""
    if not address:
        return None
    found = _VERP.fullmatch(address.strip().strip("<>"))
    return found.group(1).lower() if found else None


def clip(text: str | None, limit: int = MAX_DETAIL) -> str | None:
    """A provider's text made one line and short enough to store."""
    if not text:
        return None
    return " ".join(text.split())[:limit] or None


def event_key(*parts: str | None) -> str:
    """A fixed-length event id from the parts that identify an event (e.g. a provider's
    notification id and a recipient): 64 hex characters whatever their length."""
    return hashlib.sha256("\n".join(part or "" for part in parts).encode()).hexdigest()
