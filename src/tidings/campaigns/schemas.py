"""API shapes of campaigns, versions, review and preview."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from tidings.campaigns.state import CampaignStatus, VersionState
from tidings.profiles.schemas import Identity
from tidings.vocabulary import NAMESPACE_PATTERN, Category, Channel
from tidings.web import FieldProblem

Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
CONTENT_DESCRIPTION = (
    "Per channel: email {subject, html, text?}; sms {body}; push {title, body, data?, deeplink?}. "
    "Templates use Jinja syntax over `profile`, `context`, `campaign` and `unsubscribe_url`."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AudienceSpec(_Strict):
    identity_namespace: str | None = Field(
        default=None,
        pattern=NAMESPACE_PATTERN,
        description="Namespace of recipients' identities; default: phone for SMS, else email",
    )
    create_new_profiles: bool = False
    audience_id: str | None = Field(default=None, max_length=64)
    high_throughput: bool = Field(
        default=False,
        description="Transactional only: triggered for external recipients with no stored "
        "profile (AJO's high-throughput executions), so content may use `context`, not `profile`",
    )


MIN_YEAR, MAX_YEAR = 2000, 9000


def _within_storable_years(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if not MIN_YEAR <= in_utc.year <= MAX_YEAR:
        raise ValueError(f"must be between the years {MIN_YEAR} and {MAX_YEAR}")
    return value


ScheduleTime = Annotated[AwareDatetime | None, AfterValidator(_within_storable_years)]


class ScheduleSpec(_Strict):
    start_at: ScheduleTime = None
    end_at: ScheduleTime = None
    rate_per_second: int | None = Field(default=None, ge=1, le=100_000)


class CampaignCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    category: Category
    channel: Channel
    channel_configuration_id: str | None = Field(default=None, max_length=64)
    content: dict[str, Any] | None = Field(default=None, description=CONTENT_DESCRIPTION)
    audience: AudienceSpec | None = None
    schedule: ScheduleSpec | None = None


class CampaignPatch(_Strict):
    """Fields sent replace the stored ones; content, audience and schedule merge key by key."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    tags: list[Tag] | None = Field(default=None, max_length=20)
    category: Category | None = None
    channel: Channel | None = None
    channel_configuration_id: str | None = Field(default=None, max_length=64)
    content: dict[str, Any] | None = Field(default=None, description=CONTENT_DESCRIPTION)
    audience: dict[str, Any] | None = Field(default=None, description="AudienceSpec, partial")
    schedule: dict[str, Any] | None = Field(default=None, description="ScheduleSpec, partial")


class VersionRef(BaseModel):
    id: str
    number: int
    state: VersionState


class AudienceOut(BaseModel):
    identity_namespace: str
    create_new_profiles: bool
    audience_id: str | None
    # Versions stored before the field existed lack the key.
    high_throughput: bool = False


class CampaignOut(BaseModel):
    """A campaign as authored in its newest version (the draft version, if one is open)."""

    id: str
    status: CampaignStatus
    name: str
    description: str
    tags: list[str]
    category: Category
    channel: Channel
    channel_configuration_id: str | None
    content: dict[str, Any] | None
    audience: AudienceOut
    schedule: ScheduleSpec
    version: VersionRef
    live_version: int | None
    draft_version: int | None
    duplicated_from_id: str | None
    rule_set_ids: list[str] = Field(
        default_factory=list,
        description="Business rule sets beside the workspace's defaults: "
        "PUT /v1/campaigns/{id}/rule-sets",
    )
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None
    stopped_at: datetime | None
    completed_at: datetime | None
    archived_at: datetime | None


class CampaignList(BaseModel):
    items: list[CampaignOut]
    next_cursor: str | None


class VersionOut(BaseModel):
    id: str
    number: int
    state: VersionState
    name: str
    description: str
    tags: list[str]
    channel_configuration_id: str | None
    content: dict[str, Any] | None
    audience: AudienceOut
    schedule: ScheduleSpec
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None


class VersionList(BaseModel):
    items: list[VersionOut]


class ContentVariables(BaseModel):
    profile: list[str] = Field(description="Profile attribute paths the content reads")
    context: list[str] = Field(description="Context paths the content reads")


class ReviewOut(BaseModel):
    ready: bool
    version: int
    errors: list[FieldProblem]
    warnings: list[FieldProblem]
    variables: ContentVariables


class PreviewRequest(_Strict):
    profile: dict[str, Any] | None = Field(
        default=None, description="Attributes of a test profile (or give identity)"
    )
    identity: Identity | None = Field(default=None, description="A stored profile to render for")
    context: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Default: the newest version"
    )


class PreviewOut(BaseModel):
    channel: Channel
    version: int
    content: dict[str, Any]
