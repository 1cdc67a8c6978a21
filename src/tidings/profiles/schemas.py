"""API shapes of profiles: identities, attributes, per-channel consent, time zone, locale."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tidings.vocabulary import NAMESPACE_PATTERN, Channel

MAX_ATTRIBUTE_BYTES = 100_000
MAX_ATTRIBUTE_DEPTH = 10


class ConsentStatus(StrEnum):
    IN = "in"
    OUT = "out"
    UNSET = "unset"


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(pattern=NAMESPACE_PATTERN)
    id: str = Field(min_length=1, max_length=320)


class ProfileUpsert(BaseModel):
    """PUT body: attributes, time zone and locale are replaced; identities and consent merge."""

    model_config = ConfigDict(extra="forbid")

    identities: list[Identity] = Field(default_factory=list, max_length=20)
    attributes: dict[str, Any] = Field(default_factory=dict)
    consent: dict[Channel, ConsentStatus] = Field(default_factory=dict)
    timezone: str | None = Field(default=None, max_length=64, examples=["Europe/Paris"])
    locale: str | None = Field(
        default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", examples=["fr-FR"]
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
