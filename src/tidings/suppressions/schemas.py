"""API shapes of the suppression list: entries, pages, and reports of adds and imports."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, RootModel

MAX_ENTRIES_PER_CALL = 10_000
MAX_SOURCE_LENGTH = 200
MAX_REASON_LENGTH = 1000


class SuppressionChannel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class SuppressionKind(StrEnum):
    """An address (email address, E.164 phone number) or a whole email domain."""

    ADDRESS = "address"
    DOMAIN = "domain"


class SuppressionType(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    SPAM_COMPLAINT = "spam_complaint"
    MANUAL = "manual"
    SOFT_BOUNCE = "soft_bounce"


class SuppressionEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(
        min_length=1,
        max_length=320,
        description="An email address, an email domain (`example.com` or `@example.com`), or "
        "an E.164 phone number for `sms`",
        examples=["ada@example.com"],
    )
    channel: SuppressionChannel = SuppressionChannel.EMAIL
    kind: SuppressionKind | None = Field(
        default=None,
        description="Left out: `address` when the email value has an `@` before its domain, "
        "`domain` otherwise; always `address` for `sms`",
    )
    type: SuppressionType = SuppressionType.MANUAL
    source: str = Field(default="api", min_length=1, max_length=MAX_SOURCE_LENGTH)
    reason: str | None = Field(default=None, max_length=MAX_REASON_LENGTH)


class SuppressionBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[SuppressionEntry] = Field(min_length=1, max_length=MAX_ENTRIES_PER_CALL)


class SuppressionAdd(RootModel[SuppressionEntry | SuppressionBatch]):
    """One suppression entry, or `{"entries": [...]}` with up to 10,000 of them."""


class SuppressionOut(BaseModel):
    id: str
    channel: SuppressionChannel
    kind: SuppressionKind
    value: str
    type: SuppressionType
    source: str
    reason: str | None
    soft_bounce_count: int
    created_at: datetime
    updated_at: datetime


class SuppressionList(BaseModel):
    items: list[SuppressionOut]
    next_cursor: str | None


class RejectedEntry(BaseModel):
    index: int = Field(description="Position of the entry in the request's `entries` (0 alone)")
    value: str
    reason: str


class SuppressionsAdded(BaseModel):
    added: int = Field(description="Entries that were not suppressed before")
    updated: int = Field(description="Entries suppressed already, now with the type sent")
    rejected: list[RejectedEntry]
    suppression: SuppressionOut | None = Field(
        default=None, description="The suppression, when the body was one entry"
    )


class RejectedLine(BaseModel):
    line: int = Field(description="1-based line of the CSV file (the header is line 1)")
    reason: str


class ImportReport(BaseModel):
    imported: int = Field(description="Rows that added a suppression")
    updated: int = Field(description="Rows whose value was suppressed already")
    rejected: list[RejectedLine] = Field(description="The first 1,000 rejected rows")
    rejected_count: int = Field(description="All rejected rows")
    lines: int = Field(description="Lines read, the header included")
