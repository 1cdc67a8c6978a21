"""Data retention: personal data of old finished messages goes, their counts stay."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Tenant
from tests.integration.test_delivery import RecordingAdapter, deliverer_for, drain, permanent
from tests.integration.test_delivery import trigger as trigger_execution
from tests.integration.test_executions import live_campaign, recipient
from tidings.executions.models import executions, idempotency_keys, messages
from tidings.ids import new_id
from tidings.operations.retention import EXPIRED_RECIPIENT, Retention, RetentionJob
from tidings.profiles import import_jobs
from tidings.profiles.models import import_jobs as import_jobs_table
from tidings.profiles.schemas import ImportFormat
from tidings.webhooks.models import webhook_deliveries, webhook_endpoints

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)


def rows_of(tenant: Tenant, execution_id: str) -> dict[str, dict[str, Any]]:
    with tenant.runtime.db.read() as conn:
        found = conn.execute(
            messages.select().where(messages.c.execution_id == execution_id)
        ).mappings()
        return {row["id"]: dict(row) for row in found}


def age(tenant: Tenant, message_ids: list[str], when: datetime = OLD) -> None:
    with tenant.runtime.db.write() as conn:
        conn.execute(
            messages.update()
            .where(messages.c.id.in_(message_ids))
            .values(due_at=when, updated_at=when, created_at=when)
        )


def by_recipient(rows: dict[str, dict[str, Any]], address: str) -> dict[str, Any]:
    return next(row for row in rows.values() if row["recipient_id"] == address)


def test_old_finished_messages_lose_their_personal_data_and_keep_their_counts(tenant: Tenant):
    adapter = RecordingAdapter()
    adapter.fail("never@example.com", permanent())
    campaign = live_campaign(tenant)
    sent = trigger_execution(
        tenant,
        campaign,
        recipient("ada@example.com", profile={"firstName": "Ada"}),
        recipient("never@example.com"),
        recipient("recent@example.com"),
        context={"order": {"id": "A-1"}},
    )
    drain(deliverer_for(tenant.runtime, adapter))
    waiting = trigger_execution(
        tenant,
        campaign,
        recipient("queued@example.com"),
        execute_at=(NOW + timedelta(days=1)).isoformat(),
    )
    rows = rows_of(tenant, sent)
    recent = by_recipient(rows, "recent@example.com")
    old_ids = [row["id"] for row in rows.values() if row["id"] != recent["id"]]
    queued_id = next(iter(rows_of(tenant, waiting)))
    age(tenant, [*old_ids, queued_id])
    counts_before = tenant.client.get(f"/v1/executions/{sent}").json()["counts"]

    retention = Retention(tenant.runtime.db, days=30, batch=1)
    report = retention.run(NOW)

    assert report.messages >= 2
    after = rows_of(tenant, sent)
    for message_id in old_ids:
        row, before = after[message_id], rows[message_id]
        assert (row["recipient_id"], row["address"], row["context"]) == (
            EXPIRED_RECIPIENT,
            None,
            {},
        )
        assert (row["profile_data"], row["last_error"]) == (None, None)
        for kept in ("state", "reason", "channel", "campaign_id", "execution_id", "sent_at"):
            assert row[kept] == before[kept]
        assert row["attempts"] == before["attempts"]
    assert rows[old_ids[0]]["address"] is not None
    assert by_recipient(after, "recent@example.com") == recent
    assert by_recipient(rows_of(tenant, waiting), "queued@example.com")["address"] == (
        "queued@example.com"
    )
    assert tenant.client.get(f"/v1/executions/{sent}").json()["counts"] == counts_before
    # A second run has nothing left to clear among these.
    assert retention.run(NOW).messages == 0
    assert rows_of(tenant, sent) == after


def test_without_a_retention_period_nothing_is_cleared(tenant: Tenant):
    campaign = live_campaign(tenant)
    execution = trigger_execution(tenant, campaign, recipient("kept@example.com"))
    drain(deliverer_for(tenant.runtime, RecordingAdapter()))
    ids = list(rows_of(tenant, execution))
    age(tenant, ids, NOW - timedelta(days=4000))
    assert Retention(tenant.runtime.db, days=0).run(NOW).messages == 0
    assert by_recipient(rows_of(tenant, execution), "kept@example.com")["address"] == (
        "kept@example.com"
    )


def test_expired_idempotency_keys_go_and_live_ones_stay(tenant: Tenant):
    campaign = live_campaign(tenant)
    keys = [f"order-{uuid.uuid4().hex}" for _ in range(3)]
    for key in keys:
        trigger_execution(tenant, campaign, recipient("k@example.com"), request_id=key)
    with tenant.runtime.db.write() as conn:
        conn.execute(
            idempotency_keys.update()
            .where(
                idempotency_keys.c.workspace_id == tenant.workspace_id,
                idempotency_keys.c.key.in_(keys[:2]),
            )
            .values(expires_at=NOW - timedelta(minutes=1))
        )
    report = Retention(tenant.runtime.db, days=0, batch=1).run(NOW)
    assert report.idempotency_keys >= 2
    with tenant.runtime.db.read() as conn:
        left = conn.execute(
            sa.select(idempotency_keys.c.key).where(
                idempotency_keys.c.workspace_id == tenant.workspace_id
            )
        ).scalars()
        assert set(left) == {keys[2]}


def test_finished_audience_executions_lose_their_context(tenant: Tenant):
    campaign = live_campaign(tenant)
    old, recent = (
        trigger_execution(tenant, campaign, recipient("x@example.com")) for _ in range(2)
    )
    with tenant.runtime.db.write() as conn:
        for execution_id, finished in ((old, OLD), (recent, NOW)):
            conn.execute(
                executions.update()
                .where(executions.c.id == execution_id)
                .values(kind="audience", context={"coupon": "SECRET"}, finished_at=finished)
            )
    report = Retention(tenant.runtime.db, days=30).run(NOW)
    assert report.executions >= 1
    with tenant.runtime.db.read() as conn:
        contexts = dict(
            conn.execute(
                sa.select(executions.c.id, executions.c.context).where(
                    executions.c.id.in_([old, recent])
                )
            ).all()
        )
    assert contexts == {old: None, recent: {"coupon": "SECRET"}}


def test_the_job_runs_beside_the_loop_and_stops_with_it(tenant: Tenant):
    campaign = live_campaign(tenant)
    execution = trigger_execution(tenant, campaign, recipient("job@example.com"))
    drain(deliverer_for(tenant.runtime, RecordingAdapter()))
    age(tenant, list(rows_of(tenant, execution)))

    async def main() -> None:
        job = RetentionJob(tenant.runtime.db, days=30, interval=3600)
        job.maybe_start()
        first = job._task
        job.maybe_start()  # the first run is under way: no second one
        assert job._task is first and job.running
        while job.running:
            await asyncio.sleep(0.01)
        job.maybe_start()  # the interval has not passed
        assert not job.running
        await job.finish()

    asyncio.run(main())
    row = next(iter(rows_of(tenant, execution).values()))
    assert (row["recipient_id"], row["address"]) == (EXPIRED_RECIPIENT, None)


def test_a_new_worker_finds_where_clearing_stopped_without_walking_the_cleared(tenant: Tenant):
    campaign = live_campaign(tenant)
    first = trigger_execution(
        tenant, campaign, *(recipient(f"first-{n}@example.com") for n in range(3))
    )
    drain(deliverer_for(tenant.runtime, RecordingAdapter()))
    age(tenant, list(rows_of(tenant, first)))
    Retention(tenant.runtime.db, days=30).run(NOW)
    later = trigger_execution(
        tenant, campaign, *(recipient(f"later-{n}@example.com") for n in range(2))
    )
    drain(deliverer_for(tenant.runtime, RecordingAdapter()))
    age(tenant, list(rows_of(tenant, later)), NOW - timedelta(days=35))

    restarted = Retention(tenant.runtime.db, days=30)
    assert restarted.run(NOW).messages == 2
    assert {row["recipient_id"] for row in rows_of(tenant, later).values()} == {EXPIRED_RECIPIENT}
    # It starts right below what it cleared, not at the bottom of the index.
    start = restarted._cleared_up_to["sent"]
    assert NOW - timedelta(days=35, seconds=2) <= start <= NOW - timedelta(days=35)


def test_old_finished_webhook_deliveries_go(tenant: Tenant):
    endpoint = new_id()
    ids = {name: new_id() for name in ("old_delivered", "old_pending", "recent_delivered")}
    with tenant.runtime.db.write() as conn:
        conn.execute(
            webhook_endpoints.insert().values(
                id=endpoint,
                workspace_id=tenant.workspace_id,
                url="https://hooks.example.net/t",
                event_types=["message.sent"],
                format="standard",
                enabled=True,
                secret="s" * 32,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        for name, delivery_id in ids.items():
            when = NOW if name.startswith("recent") else OLD
            conn.execute(
                webhook_deliveries.insert().values(
                    id=delivery_id,
                    workspace_id=tenant.workspace_id,
                    endpoint_id=endpoint,
                    event_id=new_id(),
                    event_type="message.sent",
                    payload='{"recipient": {"id": "ada@example.com"}}',
                    state="pending" if name.endswith("pending") else "delivered",
                    attempts=1,
                    next_attempt_at=when,
                    created_at=when,
                    updated_at=when,
                )
            )
    report = Retention(tenant.runtime.db, days=30).run(NOW)
    assert report.webhook_deliveries >= 1
    with tenant.runtime.db.read() as conn:
        left = set(
            conn.execute(
                sa.select(webhook_deliveries.c.id).where(
                    webhook_deliveries.c.endpoint_id == endpoint
                )
            ).scalars()
        )
    assert left == {ids["old_pending"], ids["recent_delivered"]}


def test_import_jobs_that_ended_before_the_period_go(tenant: Tenant):
    db = tenant.runtime.db
    jobs = {
        name: import_jobs.create(db, tenant.workspace_id, source="api", fmt=ImportFormat.CSV)
        for name in ("old finished", "recent finished", "old running", "running")
    }
    with db.write() as conn:
        for name, ended in (("old finished", OLD), ("recent finished", NOW)):
            conn.execute(
                import_jobs_table.update()
                .where(import_jobs_table.c.id == jobs[name])
                .values(state="succeeded", finished_at=ended)
            )
        conn.execute(
            import_jobs_table.update()
            .where(import_jobs_table.c.id == jobs["old running"])
            .values(state="running", created_at=OLD, updated_at=OLD)
        )

    report = Retention(db, days=30, batch=1).run(NOW)

    with db.read() as conn:
        left = set(conn.execute(sa.select(import_jobs_table.c.id)).scalars())
    # A job unfinished and silent since the cutoff died with its process: it goes too.
    assert report.import_jobs == 2
    assert left & set(jobs.values()) == {jobs["recent finished"], jobs["running"]}
