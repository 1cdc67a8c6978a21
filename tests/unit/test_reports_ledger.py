"""The ledger's arithmetic without a database: what an event counts, how a batch adds up,
and how counters become buckets that add up to what was targeted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tidings.events import EventKind, MessageEvent
from tidings.reports.ledger import MINUTE, metrics_of, tally
from tidings.reports.service import counts_of, series_of

AT = datetime(2026, 11, 23, 17, 42, 31, tzinfo=UTC)


def event(kind: EventKind, execution: str = "x1", **extra: Any) -> MessageEvent:
    return MessageEvent(
        kind=kind,
        message_id="m1",
        workspace_id="w",
        campaign_id="c",
        version_id="v",
        execution_id=execution,
        channel="email",
        occurred_at=extra.pop("at", AT),
        **extra,
    )


def test_what_each_event_counts():
    assert metrics_of(event(EventKind.SENT)) == (("sent", ""),)
    assert metrics_of(event(EventKind.EXCLUDED, reason="no_consent")) == (
        ("excluded", "no_consent"),
    )
    assert metrics_of(event(EventKind.BOUNCED, reason="soft")) == (("soft_bounced", ""),)
    late = event(EventKind.BOUNCED, reason="hard", previous_state="delivered")
    assert metrics_of(late) == (("bounced", "hard"), ("late_bounced", ""))
    first_click = event(EventKind.CLICKED, link_index=2, first=True, first_on_link=True)
    assert metrics_of(first_click) == (
        ("clicked", "2"),
        ("clicked_unique", "2"),
        ("clickers", ""),
    )
    assert metrics_of(event(EventKind.OPENED)) == (("opened", ""),)


def test_a_batch_of_many_executions_moves_one_counter_per_metric():
    events = [event(EventKind.SENT, execution=f"x{n}") for n in range(100)]
    deltas = tally(events, audience=set())
    minute = AT.replace(second=0)
    assert deltas == {("w", "c", "", "v", MINUTE, minute, "sent", ""): 100}


def test_audience_executions_and_rare_metrics_get_counters_of_their_own():
    deltas = tally(
        [
            event(EventKind.SENT, execution="aud"),
            event(EventKind.RETRIED, execution="uni", reason="smtp_451"),
            event(EventKind.SENT, execution="uni", is_proof=False),
            event(EventKind.SENT, execution="proof", is_proof=True),
        ],
        audience={"aud"},
    )
    own = {(key[2], key[6], count) for key, count in deltas.items() if key[2]}
    assert own == {("aud", "sent", 1), ("uni", "retried", 1)}
    campaign = {key[6]: count for key, count in deltas.items() if not key[2]}
    assert campaign == {"sent": 2, "retried": 1}


def test_buckets_add_up_to_what_was_targeted():
    tally_ = {
        ("targeted", ""): 10,
        ("excluded", "no_consent"): 2,
        ("failed", "smtp_550"): 1,
        ("cancelled", "execution_cancelled"): 1,
        ("sent", ""): 5,
        ("delivered", ""): 3,
        ("bounced", "hard"): 2,
        ("late_bounced", ""): 1,
        ("soft_bounced", ""): 4,
        ("clicked", "0"): 3,
        ("clicked_unique", "0"): 2,
        ("clickers", ""): 2,
    }
    counts = counts_of(tally_, {0: "https://shop.example/"})
    buckets = counts.buckets
    assert (buckets.sent, buckets.delivered, buckets.bounced) == (1, 2, 2)
    assert buckets.pending == 10 - 2 - 1 - 1 - 5
    assert buckets.total == 10
    assert counts.bounced.model_dump() == {"hard": 2, "soft": 4, "late": 1}
    assert counts.clicked.links[0].model_dump() == {
        "index": 0,
        "url": "https://shop.example/",
        "unique": 2,
        "total": 3,
    }


def test_the_series_is_per_minute_for_a_day_then_per_day():
    now = AT
    points = [
        (MINUTE, now.replace(second=0), "sent", 2),
        (MINUTE, now.replace(second=0) - timedelta(hours=30), "sent", 3),
        ("d", (now - timedelta(days=5)).replace(hour=0, minute=0, second=0), "sent", 7),
    ]
    series = series_of(points, now, None, None)
    assert [(p.period, p.counts["sent"]) for p in series] == [("day", 7), ("day", 3), ("minute", 2)]
    bounded = series_of(points, now, now - timedelta(days=2), None)
    assert [p.counts["sent"] for p in bounded] == [3, 2]
