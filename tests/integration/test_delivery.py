"""The delivery engine over a real database: claim, render, send, retry, fail, recover."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Tenant
from tests.integration.test_executions import live_campaign, recipient
from tidings.channels.adapters import Accepted, OutboundMessage, SendFailed, SendOutcome
from tidings.db import Database
from tidings.delivery import queue, sqlite_queue
from tidings.delivery.deliverer import Deliverer
from tidings.delivery.worker import Worker
from tidings.executions.models import messages
from tidings.runtime import Runtime
from tidings.vocabulary import Channel

pytestmark = pytest.mark.integration


class RecordingAdapter:
    """A channel adapter double: records what it is given and answers as told per address."""

    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []
        self.failures: dict[str, list[SendFailed | None]] = {}
        self.lock = threading.Lock()

    def fail(self, address: str, *answers: SendFailed | None) -> None:
        self.failures[address] = list(answers)

    async def send(self, batch: Sequence[OutboundMessage]) -> list[SendOutcome]:
        outcomes: list[SendOutcome] = []
        for message in batch:
            planned = self.failures.get(message.to)
            answer = planned.pop(0) if planned else None
            if answer is not None:
                outcomes.append(
                    SendFailed(
                        message.message_id,
                        answer.reason,
                        answer.detail,
                        retryable=answer.retryable,
                        retry_after=answer.retry_after,
                    )
                )
                continue
            with self.lock:
                self.sent.append(message)
            outcomes.append(Accepted(message.message_id, f"p-{message.message_id}"))
        return outcomes

    async def close(self) -> None:
        pass


def transient(reason: str = "smtp_451") -> SendFailed:
    return SendFailed("", reason, "451 try later", retryable=True)


def permanent(reason: str = "smtp_550") -> SendFailed:
    return SendFailed("", reason, "550 no such user", retryable=False)


def deliverer_for(runtime: Runtime, adapter: RecordingAdapter, **settings: Any) -> Deliverer:
    tuned = Runtime(
        settings=runtime.settings.model_copy(
            update={"retry_base_seconds": 0.01, "retry_max_seconds": 0.05, **settings}
        ),
        db=runtime.db,
        templates=runtime.templates,
        authenticator=runtime.authenticator,
    )
    return Deliverer(tuned, {channel: adapter for channel in Channel})


def drain(deliverer: Deliverer, rounds: int = 50) -> None:
    """Runs delivery until nothing is due, waiting out short retry delays."""
    for _ in range(rounds):
        if asyncio.run(deliverer.run_once()) == 0:
            time.sleep(0.06)
            if asyncio.run(deliverer.run_once()) == 0:
                return


def states(tenant: Tenant, execution_id: str) -> dict[str, dict[str, Any]]:
    with tenant.runtime.db.read() as conn:
        rows = conn.execute(
            messages.select().where(messages.c.execution_id == execution_id)
        ).mappings()
        return {row["recipient_id"]: dict(row) for row in rows}


def trigger(tenant: Tenant, campaign: dict[str, Any], *recipients: dict[str, Any], **extra: Any):
    response = tenant.client.post(
        "/v1/executions",
        json={"campaign_id": campaign["id"], "recipients": list(recipients), **extra},
    )
    assert response.status_code == 202, response.text
    return response.json()["execution_id"]


def test_messages_are_rendered_per_recipient_and_sent(tenant: Tenant):
    adapter = RecordingAdapter()
    campaign = live_campaign(tenant)
    execution = trigger(
        tenant,
        campaign,
        recipient("ada@example.com", profile={"firstName": "<Ada>"}),
        recipient("bob@example.com", context={"order": {"id": "B-2"}}),
        context={"order": {"id": "A-1"}},
    )
    drain(deliverer_for(tenant.runtime, adapter))
    rows = states(tenant, execution)
    assert {row["state"] for row in rows.values()} == {"sent"}
    assert rows["ada@example.com"]["provider_message_id"] == f"p-{rows['ada@example.com']['id']}"
    by_address = {m.to: m for m in adapter.sent if m.message_id in {r["id"] for r in rows.values()}}
    assert by_address["ada@example.com"].content["subject"] == "Order A-1"
    assert "Hi &lt;Ada&gt;, order A-1" in by_address["ada@example.com"].content["html"]
    assert by_address["bob@example.com"].content["subject"] == "Order B-2"
    assert by_address["ada@example.com"].settings["from_address"] == "news@example.com"
    status = tenant.client.get(f"/v1/executions/{execution}").json()
    assert status == {**status, "status": "completed", "counts": {"sent": 2}}


def test_transient_failures_retry_and_permanent_ones_fail(tenant: Tenant):
    adapter = RecordingAdapter()
    adapter.fail("later@example.com", transient(), transient())
    adapter.fail("never@example.com", permanent())
    adapter.fail("flaky@example.com", *[transient()] * 10)
    campaign = live_campaign(tenant)
    execution = trigger(
        tenant,
        campaign,
        recipient("later@example.com"),
        recipient("never@example.com"),
        recipient("flaky@example.com"),
    )
    drain(deliverer_for(tenant.runtime, adapter, max_attempts=3))
    rows = states(tenant, execution)
    assert (rows["later@example.com"]["state"], rows["later@example.com"]["attempts"]) == (
        "sent",
        3,
    )
    assert rows["never@example.com"]["state"] == "failed"
    assert rows["never@example.com"]["reason"] == "smtp_550"
    assert "550 no such user" in rows["never@example.com"]["last_error"]
    assert rows["flaky@example.com"]["state"] == "failed"
    assert rows["flaky@example.com"]["last_error"].startswith("gave up after 3 attempts")


def test_rendering_errors_and_missing_addresses_are_recorded_as_data(tenant: Tenant):
    adapter = RecordingAdapter()
    campaign = live_campaign(
        tenant,
        content={"subject": "{{ context.total / context.count }}", "html": "<p>x</p>"},
        audience={"identity_namespace": "crmId", "create_new_profiles": True},
    )
    execution = trigger(
        tenant,
        campaign,
        {"identity": {"namespace": "crmId", "id": "no-address"}},
        {
            "identity": {"namespace": "crmId", "id": "divides-by-zero"},
            "channel_data": {"email": "zero@example.com"},
            "context": {"total": 1, "count": 0},
        },
    )
    drain(deliverer_for(tenant.runtime, adapter))
    rows = states(tenant, execution)
    assert (rows["no-address"]["state"], rows["no-address"]["reason"]) == ("excluded", "no_address")
    assert rows["divides-by-zero"]["state"] == "failed"
    assert rows["divides-by-zero"]["reason"] == "rendering_error"
    assert rows["divides-by-zero"]["last_error"].startswith("content.subject")


def test_an_expired_lease_is_recovered_and_sent(tenant: Tenant):
    adapter = RecordingAdapter()
    campaign = live_campaign(tenant)
    execution = trigger(tenant, campaign, recipient("crash@example.com"))
    db = tenant.runtime.db
    message_id = states(tenant, execution)["crash@example.com"]["id"]
    # A worker claims the message and dies before recording anything.
    claimed = queue.claim(db, datetime.now(UTC), 1000, timedelta(milliseconds=1))
    assert message_id in {message.id for message in claimed}
    assert states(tenant, execution)["crash@example.com"]["state"] == "sending"
    time.sleep(0.01)
    drain(deliverer_for(tenant.runtime, adapter))
    row = states(tenant, execution)["crash@example.com"]
    assert row["state"] == "sent"
    assert row["attempts"] == 2


def test_rate_per_second_spreads_the_sends(tenant: Tenant):
    adapter = RecordingAdapter()
    campaign = live_campaign(tenant, schedule={"rate_per_second": 2})
    execution = trigger(tenant, campaign, *[recipient(f"r{i}@example.com") for i in range(6)])
    deliverer = deliverer_for(tenant.runtime, adapter)
    asyncio.run(deliverer.run_once())
    first_round = Counter(row["state"] for row in states(tenant, execution).values())
    assert first_round == {"sent": 2, "queued": 4}
    queued = [row for row in states(tenant, execution).values() if row["state"] == "queued"]
    assert all(row["attempts"] == 0 for row in queued)
    assert all(row["due_at"] > datetime.now(UTC) for row in queued)


def test_concurrent_workers_send_each_message_once(tenant: Tenant):
    adapter = RecordingAdapter()
    campaign = live_campaign(tenant)
    executions = [
        trigger(tenant, campaign, *[recipient(f"w{batch}-{i}@example.com") for i in range(20)])
        for batch in range(5)
    ]
    workers = [deliverer_for(tenant.runtime, adapter, delivery_batch_size=7) for _ in range(4)]
    threads = [threading.Thread(target=drain, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ours = {row["id"] for execution in executions for row in states(tenant, execution).values()}
    sent_ids = Counter(m.message_id for m in adapter.sent if m.message_id in ours)
    assert len(sent_ids) == 100
    assert max(sent_ids.values()) == 1


def test_marketing_respects_an_opt_out_and_transactional_does_not(tenant: Tenant):
    adapter = RecordingAdapter()
    tenant.client.put("/v1/profiles/email/optout@example.com", json={"consent": {"email": "out"}})
    marketing = live_campaign(
        tenant,
        category="marketing",
        content={"subject": "Sale", "html": "<a href='{{ unsubscribe_url }}'>stop</a>"},
    )
    transactional = live_campaign(tenant)
    sent_marketing = trigger(tenant, marketing, recipient("optout@example.com"))
    sent_receipt = trigger(tenant, transactional, recipient("optout@example.com"))
    drain(deliverer_for(tenant.runtime, adapter))
    row = states(tenant, sent_marketing)["optout@example.com"]
    assert (row["state"], row["reason"]) == ("excluded", "no_consent")
    assert states(tenant, sent_receipt)["optout@example.com"]["state"] == "sent"


def test_the_worker_wakes_on_notice_and_keeps_its_in_flight_bound(tenant: Tenant):
    """A notice from the trigger path, not the poll interval, starts delivery; while it
    delivers, no more than a batch is claimed and unrecorded at any moment."""
    adapter = RecordingAdapter()
    campaign = live_campaign(tenant)
    runtime = deliverer_for(tenant.runtime, adapter, delivery_batch_size=10).runtime
    runtime.settings = runtime.settings.model_copy(update={"worker_poll_seconds": 30.0})
    worker = Worker(runtime, {channel: adapter for channel in Channel})
    held: list[int] = []
    claim = worker.deliverer.claim

    async def counting_claim(limit: int) -> list[queue.ClaimedMessage]:
        claimed = await claim(limit)
        with runtime.db.read() as conn:
            held.append(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        messages.c.state == "sending", messages.c.campaign_id == campaign["id"]
                    )
                ).scalar_one()
            )
        return claimed

    worker.deliverer.claim = counting_claim  # type: ignore[method-assign]

    def woken() -> list[str]:
        # The database may hold other tests' messages, which this worker delivers too.
        return [message.to for message in adapter.sent if message.to.startswith("wake")]

    async def scenario() -> float:
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(0.2)  # the first poll found nothing; the next is 30 s away
        for chunk in range(3):  # 20 recipients a call at most
            await asyncio.to_thread(
                trigger,
                tenant,
                campaign,
                *(recipient(f"wake{chunk}-{i}@example.com") for i in range(15)),
                context={"order": {"id": "W"}},
            )
        started = time.monotonic()
        runtime.work.notify()
        while len(woken()) < 45 and time.monotonic() - started < 10:
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        stop.set()
        await running
        return elapsed

    elapsed = asyncio.run(scenario())
    assert sorted(woken()) == sorted(
        f"wake{c}-{i}@example.com" for c in range(3) for i in range(15)
    )
    assert elapsed < 5
    assert held and max(held) <= 10


# --- the two implementations of the queue (queue.py, and sqlite_queue.py on SQLite) -------


def raw_rows(db: Database, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """The stored values exactly as the database holds them."""
    with db.read() as conn:
        marks = ", ".join("?" for _ in ids)
        result = conn.exec_driver_sql(f"SELECT * FROM messages WHERE id IN ({marks})", tuple(ids))
        return {row[0]: tuple(row) for row in result}


def put_back(db: Database, rows: dict[str, tuple[Any, ...]]) -> None:
    with db.write() as conn:
        columns = [column.name for column in messages.columns]
        sets = ", ".join(f"{name} = ?" for name in columns)
        for row in rows.values():
            conn.exec_driver_sql(f"UPDATE messages SET {sets} WHERE id = ?", (*row, row[0]))


def test_both_queues_claim_and_record_alike(tenant: Tenant):
    db = tenant.runtime.db
    if not db.is_sqlite:
        # The bare sqlite3 queue is SQLite's: PostgreSQL never gets a connection for it.
        with db.sqlite_write_at_once() as connection:
            assert connection is None
        return
    tenant.client.put(
        "/v1/profiles/email/stored@example.com",
        json={"attributes": {"tier": "gold", "big": 10**30}, "consent": {"email": "in"}},
    )
    campaign = live_campaign(
        tenant,
        category="marketing",
        content={"subject": "Sale", "html": "<a href='{{ unsubscribe_url }}'>stop</a>"},
    )
    # A cap high enough to pass: both claims count, and must count alike.
    rules = tenant.client.post(
        "/v1/rule-sets",
        json={"name": "Caps", "default": True, "frequency_caps": [{"limit": 99, "period": "day"}]},
    )
    assert rules.status_code == 201, rules.text
    execution = trigger(
        tenant,
        campaign,
        recipient("stored@example.com", profile={"firstName": "Ada", "tier": "silver"}),
        recipient("big@example.com", context={"n": 12345678901234567890123, "s": "9" * 25}),
        recipient("plain@example.com"),
        recipient("unicode@example.com", context={"name": "Zoë 🎉", "f": 0.1, "e": 1e300}),
        recipient("fifth@example.com", profile={"nested": {"list": [1, 2.5, None, True]}}),
        context={"order": {"id": "Q-1"}},
    )
    ids = sorted(row["id"] for row in states(tenant, execution).values())
    with db.write() as conn:
        # Due before anything else in the shared database, so a claim takes exactly these.
        conn.execute(
            messages.update()
            .where(messages.c.id.in_(ids))
            .values(due_at=datetime(2000, 1, 1, tzinfo=UTC))
        )
    queued = raw_rows(db, ids)
    now, lease = datetime.now(UTC), timedelta(seconds=60)

    by_sqlalchemy = queue.claim(db, now, len(ids), lease)
    claimed_rows = raw_rows(db, ids)
    put_back(db, queued)
    with db.sqlite_write_at_once() as connection:
        assert connection is not None, "the database should be free"
        bare = sqlite_queue.claim(connection, db.engine.dialect, now, len(ids), lease)
    assert [message.id for message in bare] == ids
    assert bare == by_sqlalchemy
    assert raw_rows(db, ids) == claimed_rows
    assert bare[0].profile == {"tier": "silver", "big": 10**30, "firstName": "Ada"}
    assert bare[0].consent == "in"
    big = next(message for message in bare if message.address == "big@example.com")
    assert big.context["n"] == 12345678901234567890123
    assert all(message.counted for message in bare if message.verdict is None)

    later = now + timedelta(seconds=30)
    outcomes = queue.Outcomes(
        sent=[(ids[0], "Q1")],
        held=[(ids[1], later)],
        retry=[(ids[2], later, "smtp_451", "451 later")],
        failed=[(ids[3], "smtp_550", "550 gone")],
        excluded=[],
        postponed=[(ids[4], later)],
        uncounted=list(bare[4].counted),
    )
    queue.record(db, outcomes, now)
    recorded = raw_rows(db, ids)
    put_back(db, claimed_rows)
    with db.sqlite_write_at_once() as connection:
        assert connection is not None
        sqlite_queue.record(connection, db.engine.dialect, outcomes, now)
    assert raw_rows(db, ids) == recorded
    put_back(db, claimed_rows)
    excluded = queue.Outcomes(
        excluded=[
            (i, "suppressed_domain" if n % 2 else "no_consent", "manual (api)" if n % 2 else None)
            for n, i in enumerate(ids)
        ]
    )
    queue.record(db, excluded, now)
    recorded = raw_rows(db, ids)
    put_back(db, claimed_rows)
    with db.sqlite_write_at_once() as connection:
        assert connection is not None
        sqlite_queue.record(connection, db.engine.dialect, excluded, now)
    assert raw_rows(db, ids) == recorded
    assert {row[messages.columns.keys().index("state")] for row in recorded.values()} == {
        "excluded"
    }


def test_the_deliverer_works_in_the_loop_on_free_sqlite_in_a_thread_on_postgresql(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
):
    db = tenant.runtime.db
    adapter = RecordingAdapter()
    campaign = live_campaign(tenant)
    execution = trigger(tenant, campaign, recipient("loop@example.com"))
    threaded: list[str] = []
    real_to_thread = asyncio.to_thread

    async def watched(function: Any, *args: Any) -> Any:
        threaded.append(function.__name__)
        if db.is_sqlite:
            raise AssertionError("not in a thread")
        return await real_to_thread(function, *args)

    monkeypatch.setattr(asyncio, "to_thread", watched)
    drain(deliverer_for(tenant.runtime, adapter))
    assert states(tenant, execution)["loop@example.com"]["state"] == "sent"
    if db.is_sqlite:
        assert threaded == []
    else:
        # PostgreSQL claims and records in a thread: a network round trip must not hold up
        # the loop.
        assert threaded


def test_the_deliverer_waits_in_a_thread_while_another_writes(tenant: Tenant):
    db = tenant.runtime.db
    adapter = RecordingAdapter()
    campaign = live_campaign(tenant)
    execution = trigger(tenant, campaign, recipient("busy@example.com"))
    holding, release = threading.Event(), threading.Event()

    def hold_the_database() -> None:
        with db.write():
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold_the_database)
    holder.start()
    holding.wait(5)
    threading.Timer(0.2, release.set).start()
    try:
        drain(deliverer_for(tenant.runtime, adapter))
    finally:
        release.set()
        holder.join()
    assert states(tenant, execution)["busy@example.com"]["state"] == "sent"
