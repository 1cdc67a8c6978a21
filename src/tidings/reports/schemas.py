"""Reports as the API shows them: where every targeted message is, what recipients did."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from tidings.executions.schemas import MessageOut


class Buckets(BaseModel):
    """Where the targeted messages are now: each in exactly one bucket, so they add up."""

    pending: int = Field(description="Queued, being sent, or held (quiet hours, rate limits)")
    excluded: int = Field(description="Not sent: a rule or missing data said no")
    failed: int = Field(description="Not sent: the provider refused, or retries ran out")
    cancelled: int = Field(description="Cancelled before being sent (execution or erasure)")
    sent: int = Field(description="Sent, no delivery report yet")
    delivered: int = Field(description="Delivered and not bounced since")
    bounced: int = Field(description="Hard bounced (after being sent or delivered)")
    total: int = Field(description="The sum of the buckets: always equal to `targeted`")


class Bounces(BaseModel):
    hard: int = Field(description="Messages bounced for good (the `bounced` bucket)")
    soft: int = Field(description="Soft bounces reported: the message stays sent")
    late: int = Field(description="Hard bounces of messages reported delivered before")


class UniqueAndTotal(BaseModel):
    unique: int = Field(description="Messages that did it at least once")
    total: int = Field(description="Every time it happened")


class LinkClicks(BaseModel):
    index: int = Field(description="The link's position among the message's tracked links")
    url: str | None
    unique: int
    total: int


class Clicks(UniqueAndTotal):
    links: list[LinkClicks] = Field(default_factory=list)


class Counts(BaseModel):
    targeted: int = Field(description="Messages created (proofs left out)")
    buckets: Buckets
    excluded_by_reason: dict[str, int]
    failed_by_reason: dict[str, int]
    cancelled_by_reason: dict[str, int]
    ever_sent: int = Field(description="Messages handed to a provider, whatever came after")
    bounced: Bounces
    opened: UniqueAndTotal
    clicked: Clicks
    unsubscribed: int
    complained: int
    retried: int = Field(description="Transient failures queued again")


class SeriesPoint(BaseModel):
    start: datetime
    period: str = Field(description="minute (the last 24 hours) or day (before)")
    counts: dict[str, int] = Field(description="Events in this period, by metric")


class VersionReport(Counts):
    version_id: str


class CampaignReport(Counts):
    campaign_id: str
    versions: list[VersionReport]
    series: list[SeriesPoint]


class ExecutionReport(Counts):
    execution_id: str
    campaign_id: str
    version_id: str
    kind: str
    series: list[SeriesPoint]


class FoundMessage(MessageOut):
    execution_id: str
    campaign_id: str
    version_id: str


class FoundMessages(BaseModel):
    items: list[FoundMessage]
    next_cursor: str | None
