"""Business rules without a database: calendar periods, quiet hours, and the claim's verdicts
with the in-memory counters."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tidings.delivery.queue import ClaimedMessage
from tidings.rules.counters import MemoryCounters
from tidings.rules.enforcement import Exclusion, Hold, enforce
from tidings.rules.policy import period_bounds, quiet_until, workspace_rules
from tidings.rules.schemas import Period, QuietHours, RuleSetCreate
from tidings.suppressions.service import SuppressionMatch
from tidings.vocabulary import Category, Channel

PARIS = ZoneInfo("Europe/Paris")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "every", "at", "start", "end"),
    [
        (Period.HOUR, 1, utc(2026, 3, 1, 10, 59, 59), utc(2026, 3, 1, 10), utc(2026, 3, 1, 11)),
        (Period.HOUR, 6, utc(2026, 3, 1, 13, 5), utc(2026, 3, 1, 12), utc(2026, 3, 1, 18)),
        (Period.DAY, 1, utc(2026, 3, 1, 23, 59), utc(2026, 3, 1), utc(2026, 3, 2)),
        (Period.DAY, 1, utc(2026, 3, 2), utc(2026, 3, 2), utc(2026, 3, 3)),
        # 2026-11-23 is a Monday.
        (Period.WEEK, 1, utc(2026, 11, 29, 23), utc(2026, 11, 23), utc(2026, 11, 30)),
        (Period.WEEK, 1, utc(2026, 11, 23), utc(2026, 11, 23), utc(2026, 11, 30)),
        (Period.MONTH, 1, utc(2026, 2, 28, 23), utc(2026, 2, 1), utc(2026, 3, 1)),
        (Period.MONTH, 1, utc(2026, 12, 31, 23), utc(2026, 12, 1), utc(2027, 1, 1)),
        (Period.MONTH, 3, utc(2026, 5, 5), utc(2026, 4, 1), utc(2026, 7, 1)),
        (Period.MONTH, 12, utc(2026, 5, 5), utc(2026, 1, 1), utc(2027, 1, 1)),
    ],
)
def test_calendar_periods(
    period: Period, every: int, at: datetime, start: datetime, end: datetime
) -> None:
    assert period_bounds(period, every, at) == (start, end)


@given(
    st.sampled_from(list(Period)),
    st.integers(min_value=1, max_value=30),
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
)
def test_a_period_holds_its_instant_and_the_next_one_starts_at_its_end(
    period: Period, every: int, at: datetime
) -> None:
    start, end = period_bounds(period, every, at)
    assert start <= at < end
    assert period_bounds(period, every, end)[0] == end
    assert period_bounds(period, every, end - timedelta(microseconds=1)) == (start, end)
    if period is Period.WEEK:
        assert start.weekday() == 0


NIGHTS = QuietHours.model_validate(
    {"windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "21:00", "end": "08:00"}]}
)


@pytest.mark.parametrize(
    ("local", "until"),
    [
        # Monday 2026-11-23, Paris is UTC+1 in November.
        ((2026, 11, 23, 20, 59), None),
        ((2026, 11, 23, 21, 0), (2026, 11, 24, 8, 0)),
        ((2026, 11, 24, 7, 59), (2026, 11, 24, 8, 0)),
        ((2026, 11, 24, 8, 0), None),
        # Friday night runs into Saturday morning; Saturday night is not quiet.
        ((2026, 11, 28, 7, 0), (2026, 11, 28, 8, 0)),
        ((2026, 11, 28, 22, 0), None),
        # Sunday night is not a window start, Monday morning is not quiet.
        ((2026, 11, 30, 6, 0), None),
    ],
)
def test_quiet_hours_in_a_zone(local: tuple[int, ...], until: tuple[int, ...] | None) -> None:
    now = datetime(*local, tzinfo=PARIS)
    expected = datetime(*until, tzinfo=PARIS) if until else None
    assert quiet_until(NIGHTS, PARIS, now) == expected


def test_back_to_back_quiet_periods_end_at_the_last_one() -> None:
    quiet = QuietHours.model_validate(
        {"windows": [{"start": "22:00", "end": "07:00"}], "dates": ["2026-12-25"]}
    )
    # Christmas Eve at 23:00: the night, then Christmas day, then Christmas night.
    until = quiet_until(quiet, PARIS, datetime(2026, 12, 24, 23, tzinfo=PARIS))
    assert until == datetime(2026, 12, 26, 7, tzinfo=PARIS)


def test_quiet_hours_in_the_hour_the_autumn_change_repeats() -> None:
    # Paris goes back from 03:00 CEST to 02:00 CET on 2026-10-25: 02:15 happens twice. A window
    # to 02:30 ends at the second 02:30, never before the instant it holds.
    quiet = QuietHours.model_validate({"windows": [{"start": "00:00", "end": "02:30"}]})
    second_pass = utc(2026, 10, 25, 1, 15)  # 02:15 CET
    until = quiet_until(quiet, PARIS, second_pass)
    assert until == utc(2026, 10, 25, 1, 30)
    first_pass = utc(2026, 10, 25, 0, 15)  # 02:15 CEST
    assert quiet_until(quiet, PARIS, first_pass) == utc(2026, 10, 25, 1, 30)
    assert quiet_until(quiet, PARIS, utc(2026, 10, 25, 1, 30)) is None


@given(
    st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from(["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "UTC"]),
    st.times(),
    st.times(),
)
def test_quiet_hours_always_end_after_now(now: datetime, zone: str, start: Any, end: Any) -> None:
    quiet = QuietHours.model_validate({"windows": [{"start": start, "end": end}]})
    until = quiet_until(quiet, ZoneInfo(zone), now)
    assert until is None or until > now


def test_quiet_hours_across_a_daylight_saving_change() -> None:
    # Paris moves to summer time on 2026-03-29 at 02:00: the night is an hour shorter.
    quiet = QuietHours.model_validate({"windows": [{"start": "22:00", "end": "06:00"}]})
    until = quiet_until(quiet, PARIS, datetime(2026, 3, 28, 23, tzinfo=PARIS))
    assert until == datetime(2026, 3, 29, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "frequency_caps": [{"limit": 0, "period": "day"}]},
        {"name": "x", "frequency_caps": [{"limit": 1, "period": "fortnight"}]},
        {"name": "x", "frequency_caps": [{"limit": 1, "period": "day", "channels": []}]},
        {
            "name": "x",
            "frequency_caps": [{"limit": 1, "period": "day", "channels": ["sms", "sms"]}],
        },
        {"name": "x", "quiet_hours": {"timezone": "Mars/Olympus", "dates": ["2026-12-25"]}},
        {"name": "x", "quiet_hours": {"windows": []}},
        {"name": "x", "quiet_hours": {"windows": [{"start": "25:00", "end": "07:00"}]}},
        {"name": "x", "quiet_hours": {"dates": ["2026-12-25"], "action": "drop"}},
    ],
)
def test_invalid_rule_sets_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RuleSetCreate.model_validate(body)


# ---------------------------------------------------------------- verdicts at the claim

NOW = utc(2026, 11, 23, 12)  # a Monday, 13:00 in Paris


def message(number: int, **changes: Any) -> ClaimedMessage:
    base = ClaimedMessage(
        id=f"m{number:03}",
        workspace_id="w",
        campaign_id="c",
        campaign_name="Sale",
        version_id="v",
        channel=Channel.EMAIL,
        content=None,
        category=Category.MARKETING,
        consent="in",
        rate_per_second=None,
        settings={},
        address="ada@example.com",
        context={},
        profile={},
        attempts=1,
        profile_id="p1",
    )
    return replace(base, **changes)


def rules_of(*rule_sets: dict[str, Any], timezone: str | None = None) -> dict[str, Any]:
    rows = [
        {
            "id": f"r{index}",
            "workspace_id": "w",
            "is_default": body.get("default", True),
            "frequency_caps": body.get("frequency_caps", []),
            "quiet_hours": body.get("quiet_hours"),
        }
        for index, body in enumerate(rule_sets)
    ]
    return {"w": workspace_rules(timezone, rows)}


def verdicts(messages: list[ClaimedMessage], rules: dict[str, Any], **kw: Any) -> list[Any]:
    counters = kw.pop("counters", MemoryCounters())
    decided = enforce(messages, rules, counters, kw.pop("now", NOW), kw.pop("unset", "allow"))
    return [m.verdict for m in decided]


def cap(limit: int, period: str = "day", **more: Any) -> dict[str, Any]:
    return {"limit": limit, "period": period, **more}


def test_the_lowest_applicable_cap_wins_and_caps_count_across_campaigns() -> None:
    rules = rules_of(
        {"frequency_caps": [cap(3, channels=["email"])]},
        {"frequency_caps": [cap(2, channels=["email"])], "default": False},
        {"frequency_caps": [cap(5, "week")]},
    )
    counters = MemoryCounters()
    # A campaign naming the stricter set gets 2 a day; one without it gets the default 3,
    # counting the 2 already sent.
    strict = [message(n, rule_set_ids=["r1"]) for n in range(3)]
    assert [v is None for v in verdicts(strict, rules, counters=counters)] == [True, True, False]
    plain = [message(n + 10, campaign_id="c2") for n in range(2)]
    assert [v is None for v in verdicts(plain, rules, counters=counters)] == [True, False]
    capped = verdicts(plain, rules, counters=counters)[1]
    assert capped == Exclusion("frequency_capped", "at most 3 per email/1day")


def test_the_weekly_cap_over_all_channels_counts_sms_too() -> None:
    rules = rules_of({"frequency_caps": [cap(2, "week")]})
    counters = MemoryCounters()
    batch = [
        message(1, channel=Channel.SMS, address="+33612345678"),
        message(2),
        message(3, channel=Channel.PUSH, address="token"),
    ]
    assert [v is None for v in verdicts(batch, rules, counters=counters)] == [True, True, False]


def test_a_cap_counts_per_period_and_per_recipient() -> None:
    rules = rules_of({"frequency_caps": [cap(1)]})
    counters = MemoryCounters()
    assert verdicts([message(1)], rules, counters=counters) == [None]
    assert verdicts([message(2)], rules, counters=counters)[0] is not None
    assert verdicts([message(3, profile_id="p2")], rules, counters=counters) == [None]
    tomorrow = NOW + timedelta(days=1)
    assert verdicts([message(4)], rules, counters=counters, now=tomorrow) == [None]


def test_transactional_messages_are_neither_capped_nor_counted() -> None:
    rules = rules_of({"frequency_caps": [cap(1)]})
    counters = MemoryCounters()
    batch = [message(n, category=Category.TRANSACTIONAL) for n in range(3)]
    assert verdicts(batch, rules, counters=counters) == [None, None, None]
    assert counters.counts == {}
    assert verdicts([message(9)], rules, counters=counters) == [None]


def test_an_earlier_rule_spends_no_cap() -> None:
    rules = rules_of({"frequency_caps": [cap(1)]})
    counters = MemoryCounters()
    refused = verdicts([message(1, consent="out")], rules, counters=counters)
    assert refused == [Exclusion("no_consent")]
    assert verdicts([message(2)], rules, counters=counters) == [None]


QUIET = {"windows": [{"start": "12:00", "end": "14:00"}], "timezone": "recipient"}


def test_quiet_hours_hold_until_their_end_in_the_recipients_zone() -> None:
    rules = rules_of({"quiet_hours": QUIET})
    held, free, fallback = verdicts(
        [
            message(1, timezone="Europe/Paris"),  # 13:00 there
            message(2, timezone="America/New_York"),  # 07:00 there
            message(3, timezone=None),  # the workspace has no zone: UTC, 12:00
        ],
        rules,
    )
    assert held == Hold(datetime(2026, 11, 23, 14, tzinfo=PARIS))
    assert free is None
    assert fallback == Hold(utc(2026, 11, 23, 14))


def test_a_profile_without_a_zone_uses_the_workspaces() -> None:
    rules = rules_of({"quiet_hours": QUIET}, timezone="America/New_York")
    assert verdicts([message(1, timezone=None)], rules) == [None]
    rules = rules_of({"quiet_hours": QUIET}, timezone="Europe/Paris")
    assert verdicts([message(1, timezone="Not/AZone")], rules) == [
        Hold(datetime(2026, 11, 23, 14, tzinfo=PARIS))
    ]


def test_quiet_hours_discard_and_give_up_after_seven_days() -> None:
    discard = rules_of({"quiet_hours": {**QUIET, "timezone": "UTC", "action": "discard"}})
    assert verdicts([message(1)], discard) == [Exclusion("quiet_hours_discard")]
    queue = rules_of({"quiet_hours": {**QUIET, "timezone": "UTC"}})
    # A fortnight of holidays: eight days would still be held from now, past the give-up.
    fortnight = [(NOW + timedelta(days=n)).date().isoformat() for n in range(14)]
    holidays = rules_of({"quiet_hours": {"timezone": "UTC", "dates": fortnight}})
    (verdict,) = verdicts([message(2)], holidays)
    assert isinstance(verdict, Exclusion)
    assert verdict.reason == "quiet_hours_expired"
    # Six days from the end: held, however long ago it was accepted.
    (verdict,) = verdicts([message(2)], holidays, now=NOW + timedelta(days=8))
    assert verdict == Hold(utc(2026, 12, 7))
    assert verdicts([message(3, category=Category.TRANSACTIONAL)], queue) == [None]
    assert verdicts(
        [message(4, channel=Channel.SMS, address="+33612345678")],
        rules_of({"quiet_hours": {**QUIET, "timezone": "UTC", "channels": ["email"]}}),
    ) == [None]


def test_a_held_message_spends_no_cap() -> None:
    rules = rules_of({"quiet_hours": {**QUIET, "timezone": "UTC"}, "frequency_caps": [cap(1)]})
    counters = MemoryCounters()
    assert isinstance(verdicts([message(1)], rules, counters=counters)[0], Hold)
    assert counters.counts == {}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"address": None}, "no_address"),
        ({"address": "not-an-address"}, "malformed_address"),
        ({"channel": Channel.SMS, "address": "0612345678"}, "malformed_address"),
        ({"consent": "out"}, "no_consent"),
        ({"consent": "unset", "unset_consent": "deny"}, "no_consent"),
        (
            {
                "suppression": SuppressionMatch(
                    "s", "email", "domain", "example.com", "manual", "api"
                )
            },
            "suppressed_domain",
        ),
        (
            {"suppression": SuppressionMatch("s", "email", "address", "a", "hard_bounce", "dsn")},
            "suppressed_address",
        ),
    ],
)
def test_exclusion_reasons(changes: dict[str, Any], reason: str) -> None:
    (verdict,) = verdicts([message(1, **changes)], {})
    assert isinstance(verdict, Exclusion)
    assert verdict.reason == reason


def test_the_rules_matrix_for_transactional_messages() -> None:
    complaint = SuppressionMatch("s", "email", "address", "a", "spam_complaint", "fbl")
    bounce = SuppressionMatch("s", "email", "address", "a", "hard_bounce", "dsn")
    opted_in = {"allow_complaint_suppressed": True}
    transactional = {"category": Category.TRANSACTIONAL}
    batch = [
        message(1, consent="out", **transactional),
        message(2, suppression=complaint, settings=opted_in, **transactional),
        message(3, suppression=bounce, settings=opted_in, **transactional),
        message(4, suppression=complaint, **transactional),
    ]
    decided = verdicts(batch, rules_of({"quiet_hours": {**QUIET, "timezone": "UTC"}}))
    assert [v.reason if isinstance(v, Exclusion) else v for v in decided] == [
        None,
        None,
        "suppressed_address",
        "suppressed_address",
    ]
