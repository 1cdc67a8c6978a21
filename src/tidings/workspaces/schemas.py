"""API shapes of workspaces and API keys."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from tidings.rules.schemas import Zone


class Scope(StrEnum):
    CAMPAIGNS_READ = "campaigns:read"
    CAMPAIGNS_WRITE = "campaigns:write"
    EXECUTIONS_TRIGGER = "executions:trigger"
    PROFILES_READ = "profiles:read"
    PROFILES_WRITE = "profiles:write"
    REPORTS_READ = "reports:read"
    ADMIN = "admin"


class UnsetConsent(StrEnum):
    """Whether marketing may go to a recipient whose consent on the channel is unset (or who
    has no stored profile)."""

    ALLOW = "allow"
    DENY = "deny"


class WorkspaceOut(BaseModel):
    id: str
    name: str
    unset_consent: UnsetConsent | None = Field(
        default=None,
        description="This workspace's policy for unset consent; null: TIDINGS_UNSET_CONSENT",
    )
    timezone: str | None = Field(
        default=None, description="Quiet hours' zone for profiles without one; null: UTC"
    )
    created_at: datetime


class WorkspacePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unset_consent: UnsetConsent | None = Field(
        default=None,
        description="allow or deny marketing to recipients with unset consent; "
        "null: back to the server's TIDINGS_UNSET_CONSENT",
    )
    timezone: Zone | None = Field(
        default=None,
        description="IANA zone of quiet hours for profiles without a time zone; null: UTC",
        examples=["Europe/Paris"],
    )


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))


class ApiKeyOut(BaseModel):
    id: str
    name: str
    display_prefix: str = Field(description="The first characters of the key, to recognise it")
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    secret: str = Field(description="Shown once: store it now, Tidings keeps only a hash")


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]
