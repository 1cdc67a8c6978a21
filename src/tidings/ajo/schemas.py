"""AJO's wire shapes (../shared/reference/ajo-messaging.yaml), and their mapping to Tidings'.

Unknown fields are ignored rather than refused: integrations written for AJO send fields such
as mergePolicyName that mean nothing here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tidings.executions.schemas import (
    MAX_UNITARY_RECIPIENTS,
    ChannelData,
    ExecutionCreate,
    Recipient,
    RecipientIdentity,
)
from tidings.vocabulary import NAMESPACE_PATTERN


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AjoChannelData(_Wire):
    email_address: str | None = Field(default=None, alias="emailAddress", max_length=320)
    mobile_phone_number: str | None = Field(default=None, alias="mobilePhoneNumber", max_length=32)


class AjoRecipient(_Wire):
    type: Literal["aep", "external"]
    user_id: str = Field(alias="userId", min_length=1, max_length=320)
    namespace: str = Field(pattern=NAMESPACE_PATTERN)
    channel_data: AjoChannelData | None = Field(default=None, alias="channelData")
    profile: dict[str, Any] | None = None
    context: dict[str, Any] | None = None


class AjoUnitaryRequest(_Wire):
    request_id: str = Field(alias="requestId", min_length=1, max_length=200)
    campaign_id: str = Field(alias="campaignId", min_length=1, max_length=64)
    recipients: list[AjoRecipient] = Field(min_length=1, max_length=MAX_UNITARY_RECIPIENTS)

    def to_execution(self) -> ExecutionCreate:
        return ExecutionCreate(
            campaign_id=self.campaign_id,
            request_id=self.request_id,
            recipients=[
                Recipient(
                    identity=RecipientIdentity(namespace=r.namespace, id=r.user_id),
                    external=r.type == "external",
                    channel_data=ChannelData(
                        email=r.channel_data.email_address,
                        phone=r.channel_data.mobile_phone_number,
                    )
                    if r.channel_data
                    else None,
                    profile=r.profile,
                    context=r.context,
                )
                for r in self.recipients
            ],
        )


class AjoAudience(_Wire):
    id: str = Field(min_length=1, max_length=64)


class AjoSchedule(_Wire):
    execute_at: AwareDatetime | None = Field(default=None, alias="executeAt")


class AjoAudienceRequest(_Wire):
    """imExecutionRequestAudience: requestId is optional here (required for unitary)."""

    request_id: str | None = Field(default=None, alias="requestId", min_length=1, max_length=200)
    campaign_id: str = Field(alias="campaignId", min_length=1, max_length=64)
    audience: AjoAudience | None = None
    context: dict[str, Any] | None = None
    schedule: AjoSchedule | None = None

    def to_execution(self) -> ExecutionCreate:
        return ExecutionCreate(
            campaign_id=self.campaign_id,
            request_id=self.request_id,
            audience_id=self.audience.id if self.audience else None,
            context=self.context or {},
            execute_at=self.schedule.execute_at if self.schedule else None,
        )


class AjoExecutionStatus(BaseModel):
    """executionStatusResponse."""

    execution_id: str = Field(serialization_alias="executionId")
    campaign_id: str = Field(serialization_alias="campaignId")
    audience_id: str | None = Field(serialization_alias="audienceId")
    status: Literal["Succeeded", "InProgress", "Failed"]
    targeted_profile_count: int = Field(serialization_alias="targetedProfileCount")
    created_at: datetime = Field(serialization_alias="createdAt")


class AjoScheduledExecution(BaseModel):
    """ScheduledExecutionResponse: the schedule id is the execution id."""

    schedule_id: str = Field(serialization_alias="scheduleId")
    audience: dict[str, str] | None
    campaign_id: str = Field(serialization_alias="campaignId")
    execute_at: datetime | None = Field(serialization_alias="executeAt")
    schedule_status: Literal["Scheduled", "Triggered"] = Field(serialization_alias="scheduleStatus")
    execution_details: AjoExecutionStatus | None = Field(
        default=None, serialization_alias="executionDetails"
    )


class AjoExecutionResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    execution_id: str = Field(serialization_alias="executionId")
    request_id: str | None = Field(serialization_alias="requestId")
    created_at: datetime = Field(serialization_alias="createdAt")
    created_by: str = Field(serialization_alias="createdBy")
    modified_at: datetime = Field(serialization_alias="modifiedAt")
    modified_by: str = Field(serialization_alias="modifiedBy")


class AjoErrorReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    additional_context: dict[str, str] = Field(serialization_alias="additionalContext")


class AjoError(BaseModel):
    """AJO's errorResponse: type, title, status and a report of strings."""

    type: str
    title: str
    status: int
    report: AjoErrorReport
