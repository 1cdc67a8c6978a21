"""API shapes of profiles: identities, attributes, consent, push tokens, merges."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tidings.vocabulary import NAMESPACE_PATTERN, Channel

MAX_ATTRIBUTE_BYTES = 100_000
MAX_ATTRIBUTE_DEPTH = 10
LOCALE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
MAX_PUSH_TOKEN_CHARS = 4096
# Bundle ids (com.example.app), FCM app ids (1:123:android:abc): no spaces or control
# characters, as the app id also travels in query strings.
APP_ID_PATTERN = r"^[^\s\x00-\x1f\x7f]+$"
# A token is opaque; control characters (NUL above all) are refused, as no provider issues
# them and PostgreSQL cannot store NUL.
PUSH_TOKEN_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class ConsentStatus(StrEnum):
    IN = "in"
    OUT = "out"
    UNSET = "unset"


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(pattern=NAMESPACE_PATTERN)
    id: str = Field(min_length=1, max_length=320)


class Platform(StrEnum):
    IOS = "ios"
    ANDROID = "android"
    WEB = "web"


class PushTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app_id: str = Field(
        min_length=1, max_length=200, pattern=APP_ID_PATTERN, examples=["com.example.app"]
    )
    platform: Platform
    token: str = Field(min_length=1, max_length=MAX_PUSH_TOKEN_CHARS, pattern=PUSH_TOKEN_PATTERN)


class PushTokenOut(BaseModel):
    app_id: str
    platform: Platform
    token: str
    created_at: datetime = Field(description="When the token was registered for this profile")
    last_seen_at: datetime = Field(description="When it was last registered again")


class PushTokenList(BaseModel):
    items: list[PushTokenOut] = Field(description="The most recently seen first")


class ProfileMerge(BaseModel):
    """POST /v1/profiles/merge: the profile `from` names is merged into the one `into` names."""

    model_config = ConfigDict(extra="forbid")

    into: Identity = Field(description="An identity of the profile that remains")
    source: Identity = Field(
        alias="from", description="An identity of the profile merged into it, then deleted"
    )


class ProfileUpsert(BaseModel):
    """PUT body: attributes, time zone and locale are replaced; identities and consent merge."""

    model_config = ConfigDict(extra="forbid")

    identities: list[Identity] = Field(default_factory=list, max_length=20)
    attributes: dict[str, Any] = Field(default_factory=dict)
    consent: dict[Channel, ConsentStatus] = Field(default_factory=dict)
    timezone: str | None = Field(default=None, max_length=64, examples=["Europe/Paris"])
    locale: str | None = Field(default=None, pattern=LOCALE_PATTERN, examples=["fr-FR"])
    push_tokens: list[PushTokenIn] = Field(
        default_factory=list,
        max_length=20,
        description="Registered as with PUT .../push-tokens; never removed by an upsert",
    )


class ConsentOut(BaseModel):
    status: ConsentStatus
    updated_at: datetime | None = None
    source: str | None = None


class ProfileOut(BaseModel):
    id: str
    identities: list[Identity]
    attributes: dict[str, Any]
    consent: dict[Channel, ConsentOut]
    timezone: str | None
    locale: str | None
    created_at: datetime
    updated_at: datetime


class ConsentEventOut(BaseModel):
    """One change of a profile's consent on a channel."""

    id: str
    channel: Channel
    previous_status: ConsentStatus | None = Field(
        description="The status before the change; null on the history's first entry for "
        "consent stored before the history was kept (only the latest state was)"
    )
    status: ConsentStatus
    source: str = Field(
        description="What changed it: api, import, console, merge, unsubscribe_link, "
        "one_click, complaint, <provider>_unsubscribe, sms_keyword",
        examples=["api"],
    )
    occurred_at: datetime
    detail: str | None = Field(
        description="What made the change, when known: api_key:<id>, message:<id>, "
        "user:<console email>, profile:<id merged in>, twilio:<inbound message sid>",
        examples=["message:0192b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b"],
    )
    merged_from: str | None = Field(
        description="The id of the profile this change was recorded on, when a merge brought "
        "it to this one (after several merges, the first profile); null for a change made to "
        "this profile",
    )


class ConsentHistory(BaseModel):
    items: list[ConsentEventOut] = Field(description="The newest first")
    next_cursor: str | None


class ImportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


class RejectedRow(BaseModel):
    line: int = Field(description="Line of the file where the row starts (the first is 1)")
    reason: str


class ImportReportOut(BaseModel):
    """What an import did: rows are upserted in batches, a bad row is rejected alone."""

    created: int = Field(description="Rows that created a profile")
    updated: int = Field(description="Rows that changed an existing profile")
    unchanged: int = Field(description="Rows that matched a profile and changed nothing")
    rejected: list[RejectedRow] = Field(
        description="Rejected rows with their line and reason, the first 1,000 of them"
    )
    rejected_total: int = Field(description="Every rejected row, listed or not")
    lines: int = Field(description="Lines read, the CSV header and blank lines included")
    import_id: str | None = Field(
        default=None, description="The import's job: GET /v1/profile-imports/{import_id}"
    )


class ImportFieldError(BaseModel):
    field: str
    message: str
    line: int | None = None
    column: int | None = None


class ImportJobOut(BaseModel):
    """A profile import and its progress, written with each batch it commits."""

    id: str
    state: Literal["queued", "running", "succeeded", "failed", "interrupted"] = Field(
        description="interrupted: its process stopped writing progress (a restart); the rows "
        "it committed stay"
    )
    source: str = Field(description="api, console or cli")
    created_by: str | None = Field(description="The API key's or console user's id")
    file_name: str | None
    format: ImportFormat
    bytes_total: int | None = Field(description="The file's size, when known beforehand")
    bytes_read: int
    lines: int = Field(description="Lines read and committed so far")
    created: int
    updated: int
    unchanged: int
    rejected_total: int
    rejected: list[RejectedRow] = Field(description="The first rejected rows, at most 100")
    error: str | None
    errors: list[ImportFieldError] = Field(description="The field errors of a failed import")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime = Field(description="When progress was last written")


class ImportJobList(BaseModel):
    items: list[ImportJobOut] = Field(description="The newest first")
    next_cursor: str | None
