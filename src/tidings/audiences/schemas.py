"""API shapes of audiences: list and rule audiences, their members, estimates, rejections."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tidings.profiles.schemas import Identity

MAX_MEMBERS_PER_CALL = 10_000
RULE_DESCRIPTION = (
    "An expression over profiles (see 'Audience rules' in docs/api.md), checked when saved; "
    "errors give its line and column"
)
RULE_EXAMPLE = 'attributes.plan == "gold" and consent.email == "in" and created_at > now - 30d'


class AudienceCreate(BaseModel):
    """With `rule`, a rule audience; without it, a list audience (with `members` or empty)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    members: list[Identity] = Field(
        default_factory=list,
        max_length=MAX_MEMBERS_PER_CALL,
        description="Identities of existing profiles; unknown ones are rejected, not created",
    )
    rule: str | None = Field(default=None, description=RULE_DESCRIPTION, examples=[RULE_EXAMPLE])


class AudienceUpdate(BaseModel):
    """Fields sent change; `description: null` clears it; `rule` only on a rule audience."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    rule: str | None = Field(default=None, description=RULE_DESCRIPTION, examples=[RULE_EXAMPLE])


class RuleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: str = Field(description=RULE_DESCRIPTION, examples=[RULE_EXAMPLE])


class Estimate(BaseModel):
    count: int = Field(description="Profiles the rule matches now, at most the cap")
    exact: bool = Field(
        description="false when the count reached the cap: then at least `count` profiles match"
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
    kind: Literal["list", "rule"]
    rule: str | None = Field(description="The rule of a rule audience, as written; else null")
    member_count: int | None = Field(
        description="Members of a list audience; null for a rule audience (see `estimate`)"
    )
    estimate: Estimate | None = Field(
        default=None,
        description="A rule audience read alone (not in lists): how many profiles it matches now",
    )
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
