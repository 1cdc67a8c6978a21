"""API shapes of feedback webhooks: endpoints, secrets and the delivery log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class WebhookEventType(StrEnum):
    """What an endpoint may subscribe to: a message moving into a state, or a recipient's act."""

    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    EXCLUDED = "excluded"
    FAILED = "failed"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    COMPLAINED = "complained"


class WebhookFormat(StrEnum):
    # {"type": "message.sent", "timestamp", "data"}: Standard Webhooks' recommended shape.
    STANDARD = "standard"
    # AJO's message.feedback / message.tracking experience events, for integrations built
    # for Adobe Journey Optimizer's feedback.
    AJO = "ajo"


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"


EventTypes = list[WebhookEventType]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, examples=["https://hooks.example.com/tidings"])
    description: str | None = Field(default=None, max_length=500)
    event_types: EventTypes = Field(min_length=1, max_length=len(WebhookEventType))
    format: WebhookFormat = WebhookFormat.STANDARD
    enabled: bool = True


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    description: str | None = Field(default=None, max_length=500)
    event_types: EventTypes | None = Field(default=None, min_length=1)
    format: WebhookFormat | None = None
    enabled: bool | None = None


class WebhookOut(BaseModel):
    id: str
    url: str
    description: str | None
    event_types: EventTypes
    format: WebhookFormat
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why Tidings disabled it (the receiver answered 410 Gone); "
        "enabling it again clears this"
    )
    previous_secret_expires_at: datetime | None = Field(
        description="While a rotation is under way: when the previous secret stops signing"
    )
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Shown once: the whsec_ secret the signatures use")


class SecretRotated(WebhookOut):
    secret: str = Field(description="Shown once: the new whsec_ secret")


class WebhookList(BaseModel):
    items: list[WebhookOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    attempted_at: datetime
    status_code: int | None
    error: str | None
    response: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: str
    event_id: str = Field(description="The webhook-id header: the same on retries and replays")
    event_type: WebhookEventType
    message_id: str | None
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None = Field(description="When pending: the next try")
    last_status: int | None
    last_error: str | None
    last_response: str | None = Field(description="The first bytes of the last response")
    replay_of: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]


class DeliveryDetail(DeliveryOut):
    attempt_log: list[AttemptOut]


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None
