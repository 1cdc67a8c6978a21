"""/metrics against the database: counters equal what the messages table holds, gauges its queue."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Tenant
from tests.integration.test_delivery import (
    RecordingAdapter,
    deliverer_for,
    drain,
    permanent,
    trigger,
)
from tests.integration.test_executions import live_campaign, recipient
from tidings.app import create_app
from tidings.db import Database, migrate
from tidings.events import EventKind, MessageEvent, announce, announce_on_sqlite
from tidings.executions.models import messages
from tidings.operations.metrics import Metrics, bind
from tidings.runtime import Runtime

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def table_counts(tenant: Tenant) -> dict[tuple[str, str | None], int]:
    """Messages of the whole database by (state, reason): the deliverer sends any workspace's
    due messages, and the counters are the process's."""
    with tenant.runtime.db.read() as conn:
        rows = conn.execute(
            sa.select(messages.c.state, messages.c.reason, sa.func.count()).group_by(
                messages.c.state, messages.c.reason
            )
        ).all()
    return {(state, reason): count for state, reason, count in rows}


def moved(before: dict[tuple[str, str | None], int], after: dict[tuple[str, str | None], int]):
    return {key: after.get(key, 0) - before.get(key, 0) for key in {*before, *after}}


def test_counters_equal_the_messages_table(tenant: Tenant):
    # Nothing left due by earlier tests: the table's changes are this test's.
    drain(deliverer_for(tenant.runtime, RecordingAdapter()))
    before, counted_before = scrape(tenant.client), table_counts(tenant)
    adapter = RecordingAdapter()
    adapter.fail("never@example.com", permanent())
    campaign = live_campaign(tenant)
    trigger(
        tenant,
        campaign,
        recipient("ada@example.com"),
        recipient("bob@example.com"),
        recipient("never@example.com"),
    )
    no_address = live_campaign(
        tenant, audience={"identity_namespace": "crmId", "create_new_profiles": True}
    )
    trigger(tenant, no_address, {"identity": {"namespace": "crmId", "id": "c-1"}})
    drain(deliverer_for(tenant.runtime, adapter))
    after = scrape(tenant.client)

    counts = moved(counted_before, table_counts(tenant))
    sent = sum(count for (state, _), count in counts.items() if state == "sent")
    assert sent == 2
    assert delta(before, after, "tidings_messages_accepted_total", channel="email") == sum(
        counts.values()
    )
    assert delta(before, after, "tidings_messages_sent_total", channel="email") == sent
    assert (
        delta(before, after, "tidings_messages_failed_total", channel="email", reason="smtp_550")
        == counts[("failed", "smtp_550")]
        == 1
    )
    assert (
        delta(
            before, after, "tidings_messages_excluded_total", channel="email", reason="no_address"
        )
        == counts[("excluded", "no_address")]
        == 1
    )
    assert (
        delta(before, after, "tidings_provider_errors_total", channel="email", kind="permanent")
        == 1
    )
    assert delta(before, after, "tidings_delivery_latency_seconds_count", channel="email") == sent
    # Two trigger calls, each observed once.
    assert delta(before, after, "tidings_trigger_latency_seconds_count") == 2


def _event(kind: EventKind, **extra: Any) -> MessageEvent:
    return MessageEvent(
        kind=kind,
        message_id="m",
        workspace_id="w",
        campaign_id="c",
        version_id="v",
        execution_id="e",
        channel="sms",
        occurred_at=datetime.now(UTC),
        **extra,
    )


def test_only_committed_events_count_and_proofs_never(runtime: Runtime):
    metrics = Metrics()
    bind(runtime.db, metrics)
    failed = _event(EventKind.FAILED, reason="twilio_21211")
    with pytest.raises(RuntimeError), runtime.db.write() as conn:
        announce(conn, [failed, failed])
        raise RuntimeError("rolled back")
    with runtime.db.write() as conn:
        announce(conn, [failed, _event(EventKind.SENT), _event(EventKind.SENT, is_proof=True)])
    samples = parse(metrics.exposition().decode())
    assert (
        value(samples, "tidings_messages_failed_total", channel="sms", reason="twilio_21211") == 1
    )
    assert value(samples, "tidings_messages_sent_total", channel="sms") == 1


def test_a_connection_lost_mid_transaction_keeps_its_own_error(runtime: Runtime):
    # The database restarting under a transaction invalidates its connection; the metrics'
    # rollback hook must not replace that error (a 503) with its own (a 500).
    bind(runtime.db, Metrics())
    with pytest.raises(RuntimeError, match="connection lost"), runtime.db.write() as conn:
        announce(conn, [_event(EventKind.SENT)])
        conn.invalidate()
        raise RuntimeError("connection lost")
    with runtime.db.write() as conn:  # the pool gives a working connection again
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


def test_events_on_the_sqlite_fast_path_count_after_their_commit(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path}/fast.db")
    migrate.upgrade(db)
    metrics = Metrics()
    bind(db, metrics)

    def sent() -> float:
        return value(
            parse(metrics.exposition().decode()), "tidings_messages_sent_total", channel="sms"
        )

    seen = []
    with db.sqlite_write_at_once() as connection:
        assert connection is not None
        announce_on_sqlite(connection, [_event(EventKind.SENT)] * 3)
        seen.append(sent())  # not yet: the transaction is open
    seen.append(sent())  # committed
    with pytest.raises(sqlite3.OperationalError), db.sqlite_write_at_once() as connection:
        assert connection is not None
        announce_on_sqlite(connection, [_event(EventKind.SENT)] * 5)
        raise sqlite3.OperationalError("rolled back")
    seen.append(sent())  # the rolled-back five never count, then or later
    with db.sqlite_write_at_once() as connection:
        assert connection is not None
        announce_on_sqlite(connection, [_event(EventKind.SENT)])
    seen.append(sent())

    assert seen == [0, 3, 3, 4]
    db.dispose()


def test_queue_gauges_read_the_queue(tenant: Tenant):
    campaign = live_campaign(tenant)
    execution = trigger(tenant, campaign, recipient("a@example.com"), recipient("b@example.com"))
    late = datetime.now(UTC) - timedelta(minutes=10)
    with tenant.runtime.db.write() as conn:
        first = conn.execute(
            sa.select(messages.c.id).where(messages.c.execution_id == execution).limit(1)
        ).scalar_one()
        conn.execute(messages.update().where(messages.c.id == first).values(due_at=late))
    with tenant.runtime.db.read() as conn:
        queued = conn.execute(
            sa.select(sa.func.count()).where(messages.c.state == "queued")
        ).scalar_one()
        oldest = conn.execute(
            sa.select(sa.func.min(messages.c.due_at)).where(
                messages.c.state.in_(["queued", "deferred"]),
                messages.c.due_at <= datetime.now(UTC),
            )
        ).scalar_one()
    # A fresh application: the tenant's may hold a sample from an earlier scrape.
    with TestClient(create_app(tenant.runtime)) as client:
        samples = scrape(client)
    assert value(samples, "tidings_queue_depth", state="queued") == queued >= 2
    age = value(samples, "tidings_queue_oldest_due_age_seconds")
    expected = (datetime.now(UTC) - oldest).total_seconds()
    assert 600 <= age <= expected + 1
    assert expected - age < 30
    assert ("tidings_webhook_backlog", frozenset()) in samples


def test_a_metrics_token_guards_the_route(runtime: Runtime):
    guarded = Runtime(
        settings=runtime.settings.model_copy(update={"metrics_token": "scrape-me-0123456789"}),
        db=runtime.db,
        templates=runtime.templates,
        authenticator=runtime.authenticator,
    )
    with TestClient(create_app(guarded)) as client:
        refused = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        allowed = client.get("/metrics", headers={"Authorization": "Bearer scrape-me-0123456789"})
    assert (refused.status_code, wrong.status_code) == (401, 401)
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert allowed.status_code == 200
    assert 'tidings_build_info{version="' in allowed.text
