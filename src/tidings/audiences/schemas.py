"""API shapes of audiences: list audiences, their members, and what a change rejected."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tidings.profiles.schemas import Identity

MAX_MEMBERS_PER_CALL = 10_000


class AudienceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    members: list[Identity] = Field(
        default_factory=list,
        max_length=MAX_MEMBERS_PER_CALL,
        description="Identities of existing profiles; unknown ones are rejected, not created",
    )


class MembersChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    members: list[Identity] = Field(min_length=1, max_length=MAX_MEMBERS_PER_CALL)


class RejectedMember(BaseModel):
    index: int = Field(description="Position of the identity in the request's `members`")
    namespace: str
    id: str
    reason: str


class AudienceOut(BaseModel):
    id: str
    name: str
    description: str | None
    kind: Literal["list"]
    member_count: int
    created_at: datetime
    updated_at: datetime


class AudienceCreated(AudienceOut):
    rejected: list[RejectedMember] = Field(
        default_factory=list, description="Members of the request that were not added"
    )


class AudienceList(BaseModel):
    items: list[AudienceOut]
    next_cursor: str | None


class MembersChanged(BaseModel):
    added: int | None = Field(default=None, description="New members (adding only)")
    removed: int | None = Field(default=None, description="Members removed (removing only)")
    rejected: list[RejectedMember]
