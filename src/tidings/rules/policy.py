"""Business rules without I/O: calendar periods, quiet hours, and the rules a workspace holds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tidings.rules.schemas import (
    RECIPIENT_ZONE,
    FrequencyCap,
    Period,
    QuietAction,
    QuietHours,
    Weekday,
)
from tidings.vocabulary import Channel

_EPOCH_DAY = date(1970, 1, 1)
_EPOCH_MONDAY = date(1970, 1, 5)
_WEEKDAYS = list(Weekday)
# A message that quiet hours would hold longer than this, from when it falls due inside them
# (back-to-back quiet periods count as one), is given up.
QUIET_HOURS_GIVE_UP = timedelta(days=7)
# Back-to-back quiet periods (a holiday, then the night) are followed this many times at most.
_MAX_CHAINED_PERIODS = 32


def period_bounds(period: Period, every: int, at: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar period of `every` `period`s holding `at`: [start, end).

    Periods of several units are counted from fixed origins (1970-01-01, the Monday
    1970-01-05, January of year 0), so that everyone's fortnight starts on the same Monday.
    """
    at = at.astimezone(UTC)
    if period is Period.HOUR:
        hours = int(at.timestamp()) // 3600 // every * every
        start = datetime.fromtimestamp(hours * 3600, UTC)
        return start, start + timedelta(hours=every)
    if period is Period.DAY:
        days = (at.date() - _EPOCH_DAY).days // every * every
        first = _EPOCH_DAY + timedelta(days=days)
        return _midnight(first), _midnight(first + timedelta(days=every))
    if period is Period.WEEK:
        weeks = (at.date() - _EPOCH_MONDAY).days // 7 // every * every
        first = _EPOCH_MONDAY + timedelta(weeks=weeks)
        return _midnight(first), _midnight(first + timedelta(weeks=every))
    months = (at.year * 12 + at.month - 1) // every * every
    return _month_start(months), _month_start(months + every)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _month_start(months: int) -> datetime:
    return datetime(months // 12, months % 12 + 1, 1, tzinfo=UTC)


def cap_key(cap: FrequencyCap) -> str:
    """What a cap counts, without its limit: caps that count the same thing share a counter,
    so the lowest of their limits wins."""
    return f"{'+'.join(cap.channels)}/{cap.every}{cap.period.value}"


@lru_cache(maxsize=512)
def zone_named(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _instant(day: date, clock: Any, zone: ZoneInfo, latest: bool) -> datetime:
    """The UTC instant of a wall-clock time in a zone. A time the autumn change repeats has
    two instants: a quiet period starts at the earliest and ends at the latest, so it never
    ends before it holds. A time the spring change skips is read with the offset before it."""
    return datetime.combine(day, clock, tzinfo=zone).replace(fold=int(latest)).astimezone(UTC)


def _quiet_end(quiet: QuietHours, zone: ZoneInfo, now: datetime) -> datetime | None:
    """The latest end (UTC) among the quiet periods holding the UTC instant `now`, or None.

    Edges are compared as UTC instants: comparing wall-clock times ignores which pass of a
    repeated hour `now` is in.
    """
    ends: list[datetime] = []
    today = now.astimezone(zone).date()
    if today in quiet.dates:
        ends.append(_instant(today + timedelta(days=1), datetime.min.time(), zone, False))
    for window in quiet.windows:
        # A window starts on one of its days and may run past midnight: today's and
        # yesterday's starts can both hold `now`.
        for offset in (0, -1):
            day = today + timedelta(days=offset)
            if _WEEKDAYS[day.weekday()] not in window.days:
                continue
            start = _instant(day, window.start, zone, latest=False)
            end_day = day if window.end > window.start else day + timedelta(days=1)
            end = _instant(end_day, window.end, zone, latest=True)
            if start <= now < end:
                ends.append(end)
    return max(ends) if ends else None


def quiet_until(quiet: QuietHours, zone: ZoneInfo, now: datetime) -> datetime | None:
    """When the quiet hours holding `now` end (UTC, always after `now`), or None when `now`
    is not quiet."""
    now = now.astimezone(UTC)
    end = _quiet_end(quiet, zone, now)
    if end is None or end <= now:
        return None
    for _ in range(_MAX_CHAINED_PERIODS):
        later = _quiet_end(quiet, zone, end)
        if later is None or later <= end:
            break
        end = later
    return end


@dataclass(frozen=True, slots=True)
class CapCounter:
    """A counter every marketing message on one of `channels` moves, whichever campaign."""

    key: str
    channels: frozenset[str]
    period: Period
    every: int


@dataclass(frozen=True, slots=True)
class RuleSetRules:
    id: str
    is_default: bool
    caps: tuple[FrequencyCap, ...]
    quiet_hours: QuietHours | None


@dataclass(frozen=True, slots=True)
class CampaignRules:
    """The rules a marketing campaign's messages meet: its rule sets and the defaults."""

    # The lowest limit per counter key among the applicable caps.
    limits: Mapping[str, int]
    quiet_hours: tuple[QuietHours, ...]


_NO_RULES = CampaignRules({}, ())


@dataclass(slots=True)
class WorkspaceRules:
    """A workspace's rule sets as read at a claim, and what follows from them."""

    timezone: ZoneInfo | None
    rule_sets: Mapping[str, RuleSetRules]
    counters: dict[str, tuple[CapCounter, ...]] = field(default_factory=dict)
    _campaigns: dict[tuple[str, ...], CampaignRules] = field(default_factory=dict)

    def __post_init__(self) -> None:
        every_counter: dict[str, CapCounter] = {}
        for rule_set in self.rule_sets.values():
            for cap in rule_set.caps:
                key = cap_key(cap)
                every_counter[key] = CapCounter(key, frozenset(cap.channels), cap.period, cap.every)
        for channel in Channel:
            self.counters[channel.value] = tuple(
                counter
                for key, counter in sorted(every_counter.items())
                if channel.value in counter.channels
            )

    def for_campaign(self, rule_set_ids: Sequence[str] | None) -> CampaignRules:
        ids = tuple(rule_set_ids or ())
        rules = self._campaigns.get(ids)
        if rules is None:
            chosen = [
                rule_set
                for rule_set_id, rule_set in self.rule_sets.items()
                if rule_set.is_default or rule_set_id in ids
            ]
            if not chosen:
                rules = _NO_RULES
            else:
                limits: dict[str, int] = {}
                for rule_set in chosen:
                    for cap in rule_set.caps:
                        key = cap_key(cap)
                        limits[key] = min(cap.limit, limits.get(key, cap.limit))
                rules = CampaignRules(
                    limits,
                    tuple(r.quiet_hours for r in chosen if r.quiet_hours is not None),
                )
            self._campaigns[ids] = rules
        return rules


def workspace_rules(timezone: str | None, rows: Iterable[Mapping[Any, Any]]) -> WorkspaceRules:
    """WorkspaceRules from the workspace's zone and its rule_sets rows (JSON decoded)."""
    return WorkspaceRules(
        zone_named(timezone),
        {
            row["id"]: RuleSetRules(
                row["id"],
                bool(row["is_default"]),
                tuple(FrequencyCap.model_validate(cap) for cap in row["frequency_caps"] or ()),
                QuietHours.model_validate(row["quiet_hours"]) if row["quiet_hours"] else None,
            )
            for row in rows
        },
    )


@dataclass(frozen=True, slots=True)
class QuietVerdict:
    """Quiet hours hold a message: until `until` (queue), or for good (discard, or held past
    the give-up time)."""

    until: datetime
    discard: bool
    expired: bool


class Moment:
    """One claim's `now`, with what follows from it for everyone: the calendar periods, and
    when each quiet period in force in a zone ends. A batch's messages share them, so each is
    worked out once per claim, not once per message."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._bounds: dict[tuple[Period, int], tuple[datetime, datetime]] = {}
        self._quiet: dict[tuple[int, str], datetime | None] = {}

    def period(self, period: Period, every: int) -> tuple[datetime, datetime]:
        bounds = self._bounds.get((period, every))
        if bounds is None:
            bounds = self._bounds[(period, every)] = period_bounds(period, every, self.now)
        return bounds

    def quiet_until(self, quiet: QuietHours, zone: ZoneInfo) -> datetime | None:
        slot = (id(quiet), zone.key)
        if slot not in self._quiet:
            self._quiet[slot] = quiet_until(quiet, zone, self.now)
        return self._quiet[slot]


def quiet_verdict(
    quiet_hours: Sequence[QuietHours],
    channel: str,
    recipient_zone: str | None,
    workspace_zone: ZoneInfo | None,
    moment: Moment,
) -> QuietVerdict | None:
    """Whether the quiet hours of any applicable rule set hold a message at `moment`.

    `recipient` quiet hours use the profile's zone, else the workspace's, else UTC: a profile
    without a zone is never let through unchecked.
    """
    verdict: QuietVerdict | None = None
    for quiet in quiet_hours:
        if channel not in quiet.channels:
            continue
        if quiet.timezone == RECIPIENT_ZONE:
            zone = zone_named(recipient_zone) or workspace_zone or _UTC_ZONE
        else:
            zone = zone_named(quiet.timezone) or _UTC_ZONE
        until = moment.quiet_until(quiet, zone)
        if until is None:
            continue
        discard = quiet.action is QuietAction.DISCARD
        if discard:
            return QuietVerdict(until, True, False)
        if verdict is None or until > verdict.until:
            verdict = QuietVerdict(until, False, until - moment.now > QUIET_HOURS_GIVE_UP)
    return verdict


_UTC_ZONE = ZoneInfo("UTC")
