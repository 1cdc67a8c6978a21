"""Metrics without a database: event tallies, provider outcomes, ids as creation times."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from tidings.channels.adapters import THROTTLED, Accepted, SendFailed
from tidings.ids import new_id
from tidings.operations.metrics import Metrics, created_at


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
    }


def test_a_uuid7_id_says_when_it_was_minted():
    before = time.time()
    minted = created_at(new_id())
    assert before - 0.002 <= minted <= time.time() + 0.002


def test_a_tally_moves_the_counter_of_each_kind():
    metrics = Metrics()
    metrics.apply(
        {
            ("targeted", "email", None): 5,
            ("sent", "email", None): 3,
            ("failed", "email", "smtp_550"): 1,
            ("excluded", "sms", "no_consent"): 2,
            ("bounced", "email", "hard"): 1,
            ("cancelled", "push", None): 4,
            ("opened", "email", None): 9,
        }
    )
    found = samples(metrics)
    assert found[("tidings_messages_accepted_total", frozenset({("channel", "email")}))] == 5
    assert found[("tidings_messages_sent_total", frozenset({("channel", "email")}))] == 3
    failed = frozenset({("channel", "email"), ("reason", "smtp_550")})
    assert found[("tidings_messages_failed_total", failed)] == 1
    excluded = frozenset({("channel", "sms"), ("reason", "no_consent")})
    assert found[("tidings_messages_excluded_total", excluded)] == 2
    bounced = frozenset({("channel", "email"), ("kind", "hard")})
    assert found[("tidings_messages_bounced_total", bounced)] == 1
    cancelled = frozenset({("channel", "push"), ("reason", "unknown")})
    assert found[("tidings_messages_cancelled_total", cancelled)] == 4
    assert not any("opened" in name for name, _ in found)


def test_send_outcomes_give_latencies_and_provider_errors():
    metrics = Metrics()
    fresh, old = new_id(), new_id()
    minted = created_at(old)
    results = [
        Accepted(fresh),
        Accepted(old),
        SendFailed("a", "smtp_451", "later", retryable=True),
        SendFailed("b", "smtp_550", "never", retryable=False),
        SendFailed("c", "smtp_551", "never", retryable=False),
        SendFailed("d", THROTTLED, "rate", retryable=True, retry_after=1),
    ]
    metrics.observe_sends("email", results, minted + 30)
    found = samples(metrics)
    email = frozenset({("channel", "email")})
    assert found[("tidings_delivery_latency_seconds_count", email)] == 2
    assert 59 < found[("tidings_delivery_latency_seconds_sum", email)] < 61
    at_ten = frozenset({("channel", "email"), ("le", "10.0")})
    assert found[("tidings_delivery_latency_seconds_bucket", at_ten)] == 0
    for kind, count in (("transient", 1), ("permanent", 2), ("throttled", 1)):
        labels = frozenset({("channel", "email"), ("kind", kind)})
        assert found[("tidings_provider_errors_total", labels)] == count


def test_two_applications_keep_their_own_counters():
    first, second = Metrics(), Metrics()
    first.apply({("sent", "email", None): 2})
    assert ("tidings_messages_sent_total", frozenset({("channel", "email")})) in samples(first)
    assert ("tidings_messages_sent_total", frozenset({("channel", "email")})) not in samples(second)
