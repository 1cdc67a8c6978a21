"""API shapes of the native execution API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tidings.vocabulary import NAMESPACE_PATTERN

MAX_UNITARY_RECIPIENTS = 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecipientIdentity(_Strict):
    namespace: str = Field(pattern=NAMESPACE_PATTERN)
    id: str = Field(min_length=1, max_length=320)


class ChannelData(_Strict):
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    push_token: str | None = Field(default=None, max_length=4096)


class Recipient(_Strict):
    identity: RecipientIdentity
    external: bool = Field(
        default=False,
        description="Personalize from this call's data alone: no stored profile is read or "
        "created (AJO's `external` recipients)",
    )
    channel_data: ChannelData | None = None
    profile: dict[str, Any] | None = Field(
        default=None, description="Attributes for this message, over the stored profile's"
    )
    context: dict[str, Any] | None = Field(
        default=None, description="Merged over the call's shared context for this recipient"
    )


class ExecutionCreate(_Strict):
    campaign_id: str = Field(min_length=1, max_length=64)
    request_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="Idempotency key"
    )
    recipients: list[Recipient] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_UNITARY_RECIPIENTS,
        description="A unitary execution's recipients; leave out for an audience execution",
    )
    audience_id: str | None = Field(
        default=None,
        max_length=64,
        description="Audience executions: this audience instead of the campaign's",
    )
    context: dict[str, Any] = Field(default_factory=dict)
    execute_at: AwareDatetime | None = Field(
        default=None, description="When to send; now when left out or in the past"
    )


class ExecutionAccepted(BaseModel):
    execution_id: str
    request_id: str | None
    accepted: int = Field(description="Messages queued by this call (0 for an audience one)")
    status: str = Field(
        default="accepted",
        description="`accepted` (messages queued) or `scheduled` (an audience execution)",
    )


class ExecutionOut(BaseModel):
    id: str
    campaign_id: str
    version: int
    kind: str = Field(description="`unitary`, `audience` or `proof`")
    status: str = Field(
        description="scheduled, running (messages pending or the audience being queued), "
        "completed (every message in a final state), cancelled or failed"
    )
    request_id: str | None
    audience_id: str | None = None
    recipients: int = Field(description="Messages queued so far")
    counts: dict[str, int] = Field(description="Messages per state")
    execute_at: datetime | None = None
    fired_at: datetime | None = Field(
        default=None, description="When an audience execution started queueing messages"
    )
    finished_at: datetime | None = None
    failure: str | None = Field(default=None, description="Why a failed execution failed")
    created_at: datetime


class MessageRecipient(BaseModel):
    namespace: str
    id: str


class MessageOut(BaseModel):
    id: str
    recipient: MessageRecipient
    channel: str
    state: str
    reason: str | None
    attempts: int
    last_error: str | None
    provider_message_id: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    sms_encoding: str | None = Field(
        default=None, description="SMS sent: gsm7 or ucs2, the encoding its body needed"
    )
    sms_segments: int | None = Field(default=None, description="SMS sent: segments it cost")
    is_proof: bool = Field(default=False, description="A proof for a tester: left out of reports")


class MessageList(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None
