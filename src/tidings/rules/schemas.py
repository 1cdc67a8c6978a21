"""API shapes of business rule sets: frequency caps and quiet hours."""

from __future__ import annotations

from datetime import date, datetime, time
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tidings.vocabulary import Channel

MAX_CAPS_PER_SET = 20
MAX_WINDOWS = 28
MAX_DATES = 366
ALL_CHANNELS = [Channel.EMAIL, Channel.SMS, Channel.PUSH]
RECIPIENT_ZONE = "recipient"


class Period(StrEnum):
    """UTC calendar periods: an hour starts on the hour, a day at midnight UTC, a week on
    Monday, a month on its first day."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


class QuietAction(StrEnum):
    """What happens to a marketing message due inside quiet hours."""

    QUEUE = "queue"  # sent when the quiet hours end, given up after 7 days
    DISCARD = "discard"  # excluded with reason quiet_hours_discard


def check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"'{value}' is not an IANA time zone such as Europe/Paris") from None
    return value


def _unique(values: list[Channel]) -> list[Channel]:
    if len(set(values)) != len(values):
        raise ValueError("lists a channel twice")
    return sorted(values, key=ALL_CHANNELS.index)


Channels = Annotated[list[Channel], Field(min_length=1, max_length=3), AfterValidator(_unique)]
Zone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(check_zone)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FrequencyCap(_Strict):
    """At most `limit` marketing messages to one recipient on `channels` (together: a channel
    group) per `every` `period`s."""

    channels: Channels = Field(default_factory=lambda: list(ALL_CHANNELS))
    limit: int = Field(ge=1, le=100_000)
    period: Period
    every: int = Field(default=1, ge=1, le=366, description="e.g. 2 with period week: a fortnight")


class QuietWindow(_Strict):
    """A weekly window: from `start` on each of `days` to `end` (the next day when `end` is
    not after `start`)."""

    days: list[Weekday] = Field(default_factory=lambda: list(Weekday), min_length=1, max_length=7)
    start: time
    end: time

    @model_validator(mode="after")
    def _not_empty(self) -> QuietWindow:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("start and end are local times, without a zone")
        if len(set(self.days)) != len(self.days):
            raise ValueError("days lists a day twice")
        return self


class QuietHours(_Strict):
    timezone: str = Field(
        default=RECIPIENT_ZONE,
        max_length=64,
        description="`recipient`: each profile's time zone (the workspace's when it has none); "
        "or a fixed IANA zone",
    )
    windows: list[QuietWindow] = Field(default_factory=list, max_length=MAX_WINDOWS)
    dates: list[date] = Field(default_factory=list, max_length=MAX_DATES)
    action: QuietAction = QuietAction.QUEUE
    channels: Channels = Field(default_factory=lambda: list(ALL_CHANNELS))

    @model_validator(mode="after")
    def _checked(self) -> QuietHours:
        if self.timezone != RECIPIENT_ZONE:
            check_zone(self.timezone)
        if not self.windows and not self.dates:
            raise ValueError("quiet hours need at least one window or date")
        return self


class RuleSetCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    default: bool = Field(
        default=False, description="Applies to every marketing campaign of the workspace"
    )
    frequency_caps: list[FrequencyCap] = Field(default_factory=list, max_length=MAX_CAPS_PER_SET)
    quiet_hours: QuietHours | None = None


class RuleSetPatch(_Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    default: bool | None = None
    frequency_caps: list[FrequencyCap] | None = Field(default=None, max_length=MAX_CAPS_PER_SET)
    quiet_hours: QuietHours | None = None


class RuleSetOut(BaseModel):
    id: str
    name: str
    description: str
    default: bool
    frequency_caps: list[FrequencyCap]
    quiet_hours: QuietHours | None
    created_at: datetime
    updated_at: datetime


class RuleSetList(BaseModel):
    items: list[RuleSetOut]


class CampaignRuleSets(_Strict):
    rule_set_ids: list[str] = Field(max_length=10)


class CampaignRuleSetsOut(BaseModel):
    campaign_id: str
    rule_set_ids: list[str]
