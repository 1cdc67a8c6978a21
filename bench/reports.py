"""Issue 6's reports at scale: a report stays as fast at 1,000,000 messages as at 1,000, and
counting costs the record path little.

In one process, on SQLite (a temporary data folder, migrated as `tidings serve` would):
1. Two campaigns get 1,000 and 1,000,000 messages' worth of events through the real ledger
   (reports.ledger.count_events), in batches of 1,000 messages, spread over the same hour: every
   message targeted; 95 % sent, 3 % excluded (three reasons), 2 % failed; of the sent, 90 %
   delivered and 2 % bounced (a tenth of those soft); 30 % opened (half of them twice), 10 %
   clicked one of five links. The load's time per message is the ledger's cost on that path.
2. The campaign report (reports.service.campaign_report, and GET /v1/campaigns/{id}/report over
   the ASGI app in process) is timed on both campaigns, alternating: median of the rounds.
3. The worker's record of a batch of 100 messages sent, each of another unitary execution (the
   worst case for counters: 100 executions, one campaign), is timed with the announcement and
   without it (as before reports: no events), alternating rounds, on SQLite's fast path
   (delivery.sqlite_queue.record) and on the SQLAlchemy one (delivery.queue.record).

Times are the CPU time of this process (time.process_time): SQLite runs in it, and on a shared
machine CPU time moves far less with the neighbours' load than the wall clock does.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

import tidings.events
from bench.harness import Plan, Result, result
from tidings.app import create_app
from tidings.bootstrap import prepare
from tidings.config import Settings
from tidings.delivery import queue, sqlite_queue
from tidings.events import EventKind, MessageEvent
from tidings.executions.models import executions, messages
from tidings.ids import new_id
from tidings.reports import ledger
from tidings.reports import service as reports
from tidings.reports.models import report_counters
from tidings.runtime import Runtime
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

NAME = "reports"
SMALL, LARGE = 1_000, 1_000_000
QUICK_LARGE = 20_000
LOAD_BATCH = 1_000
SPAN_MINUTES = 60
SEED = 6
REPORT_ROUNDS, QUICK_REPORT_ROUNDS = 21, 5
RECORD_BATCH = 100
RECORD_ROUNDS, QUICK_RECORD_ROUNDS = 40, 8
EXCLUSIONS = ("no_consent", "suppressed_address", "frequency_capped")


def _events(
    workspace: str, campaign: str, version: str, count: int, start: datetime, seed: int
) -> Iterator[list[MessageEvent]]:
    """The events of `count` messages (see the module's docstring), LOAD_BATCH messages a list."""
    rng = random.Random(seed)
    batch: list[MessageEvent] = []
    for number in range(count):
        at = start + timedelta(seconds=rng.randrange(SPAN_MINUTES * 60))

        def event(
            kind: EventKind, number: int = number, at: datetime = at, **extra: Any
        ) -> MessageEvent:
            return MessageEvent(
                kind=kind,
                message_id=f"m{number}",
                workspace_id=workspace,
                campaign_id=campaign,
                version_id=version,
                execution_id=f"e{number // 20}",
                channel="email",
                occurred_at=at,
                audience=False,
                **extra,
            )

        batch.append(event(EventKind.TARGETED))
        draw = rng.random()
        if draw < 0.03:
            batch.append(event(EventKind.EXCLUDED, reason=EXCLUSIONS[number % 3]))
        elif draw < 0.05:
            batch.append(event(EventKind.FAILED, reason="smtp_550"))
        else:
            batch.append(event(EventKind.SENT, previous_state="sending"))
            feedback = rng.random()
            if feedback < 0.9:
                batch.append(event(EventKind.DELIVERED, previous_state="sent"))
            elif feedback < 0.92:
                soft = rng.random() < 0.1
                batch.append(
                    event(
                        EventKind.BOUNCED, reason="soft" if soft else "hard", previous_state="sent"
                    )
                )
            if rng.random() < 0.3:
                batch.append(event(EventKind.OPENED, first=True))
                if rng.random() < 0.5:
                    batch.append(event(EventKind.OPENED))
            if rng.random() < 0.1:
                link = rng.randrange(5)
                batch.append(
                    event(
                        EventKind.CLICKED,
                        link_index=link,
                        url=f"https://shop.example/{link}",
                        first=True,
                        first_on_link=True,
                    )
                )
        if (number + 1) % LOAD_BATCH == 0:
            yield batch
            batch = []
    if batch:
        yield batch


def _load(runtime: Runtime, workspace: str, campaign: dict[str, Any], count: int) -> float:
    """Feeds `count` messages' events to the ledger; returns its seconds per message."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=SPAN_MINUTES)
    spent = 0.0
    for batch in _events(workspace, campaign["id"], campaign["version"]["id"], count, start, SEED):
        with runtime.db.write() as conn:
            began = time.process_time()
            ledger.count_events(conn, batch)
            spent += time.process_time() - began
    return spent / count


def _campaign(client: TestClient, name: str) -> dict[str, Any]:
    configuration = client.post(
        "/v1/channel-configurations",
        json={
            "name": f"bench-{name}",
            "channel": "email",
            "category": "transactional",
            "email": {"from_address": "news@example.com"},
        },
    ).json()
    created = client.post(
        "/v1/campaigns",
        json={
            "name": name,
            "category": "transactional",
            "channel": "email",
            "channel_configuration_id": configuration["id"],
            "content": {"subject": "Hi", "html": "<p>Hi</p>"},
            "audience": {"identity_namespace": "email", "create_new_profiles": True},
        },
    ).json()
    activated = client.post(f"/v1/campaigns/{created['id']}/activate")
    if activated.status_code != 200:
        raise AssertionError(f"activate: {activated.status_code} {activated.text[:300]}")
    campaign: dict[str, Any] = activated.json()
    return campaign


def _seconds(operation: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        began = time.process_time()
        operation()
        samples.append(time.process_time() - began)
    return samples


@contextmanager
def _announcing(on: bool) -> Iterator[None]:
    """Records with the reports' listener alone (on), or with no announcement at all, as
    before reports (off: the batch's refs are not even read)."""
    listeners, announced = tidings.events._listeners, queue.announced_ids
    if on:
        tidings.events._listeners = lambda: (ledger.count_events,)  # type: ignore[assignment]
    else:
        queue.announced_ids = lambda outcomes: []  # type: ignore[assignment]
        sqlite_queue.announced_ids = queue.announced_ids  # type: ignore[attr-defined]
    try:
        yield
    finally:
        tidings.events._listeners = listeners  # type: ignore[assignment]
        queue.announced_ids = announced  # type: ignore[assignment]
        sqlite_queue.announced_ids = announced  # type: ignore[attr-defined]


def _sending_batch(runtime: Runtime, workspace: str, campaign: dict[str, Any]) -> list[str]:
    """RECORD_BATCH messages in `sending`, each of a unitary execution of its own."""
    now = datetime.now(UTC)
    version = campaign["version"]["id"]
    execution_rows, message_rows = [], []
    for _ in range(RECORD_BATCH):
        execution_id, message_id = new_id(), new_id()
        execution_rows.append(
            {
                "id": execution_id,
                "workspace_id": workspace,
                "campaign_id": campaign["id"],
                "version_id": version,
                "kind": "unitary",
                "status": "accepted",
                "recipient_count": 1,
                "created_at": now,
            }
        )
        message_rows.append(
            {
                "id": message_id,
                "workspace_id": workspace,
                "execution_id": execution_id,
                "campaign_id": campaign["id"],
                "version_id": version,
                "channel": "email",
                "state": "sending",
                "recipient_namespace": "email",
                "recipient_id": f"{message_id}@example.com",
                "address": f"{message_id}@example.com",
                "context": {},
                "due_at": now,
                "attempts": 1,
                "lease_until": now + timedelta(minutes=5),
                "created_at": now,
                "updated_at": now,
            }
        )
    with runtime.db.write() as conn:
        conn.execute(executions.insert(), execution_rows)
        conn.execute(messages.insert(), message_rows)
    return [row["id"] for row in message_rows]


def _record_sqlite(runtime: Runtime, outcomes: queue.Outcomes) -> None:
    db = runtime.db
    with db.sqlite_write_at_once() as connection:
        if connection is None:
            raise AssertionError("the database was busy")
        sqlite_queue.record(connection, db.engine.dialect, outcomes, datetime.now(UTC))


def _record_sqlalchemy(runtime: Runtime, outcomes: queue.Outcomes) -> None:
    queue.record(runtime.db, outcomes, datetime.now(UTC))


def _time_records(
    runtime: Runtime,
    workspace: str,
    campaign: dict[str, Any],
    record: Callable[[Runtime, queue.Outcomes], None],
    rounds: int,
) -> dict[bool, list[float]]:
    samples: dict[bool, list[float]] = {True: [], False: []}
    for number in range(rounds * 2 + 2):
        on = number % 2 == 0
        ids = _sending_batch(runtime, workspace, campaign)
        outcomes = queue.Outcomes(sent=[(message_id, f"p-{message_id}") for message_id in ids])
        with _announcing(on):
            began = time.process_time()
            record(runtime, outcomes)
            elapsed = time.process_time() - began
        if number >= 2:  # the first of each is a warm-up
            samples[on].append(elapsed / RECORD_BATCH)
    return samples


def run(plan: Plan) -> list[Result]:
    quick = plan.round_seconds < 1.0
    large = QUICK_LARGE if quick else LARGE
    report_rounds = QUICK_REPORT_ROUNDS if quick else REPORT_ROUNDS
    record_rounds = QUICK_RECORD_ROUNDS if quick else RECORD_ROUNDS
    with tempfile.TemporaryDirectory(prefix="tidings-bench-reports-") as folder:
        settings = Settings(data_dir=Path(folder), public_url="https://tidings.test")
        runtime = Runtime.from_settings(settings)
        try:
            prepare(runtime, run_migrations=True)
            workspace = workspaces.create_workspace(runtime.db, f"bench-{uuid.uuid4().hex[:8]}")
            _, secret = workspaces.create_api_key(
                runtime.db, workspace["id"], "bench", [Scope.ADMIN]
            )
            return _measure(runtime, secret, workspace["id"], large, report_rounds, record_rounds)
        finally:
            runtime.close()


@contextmanager
def _client(runtime: Runtime, secret: str) -> Iterator[TestClient]:
    # Only while HTTP is measured: the app's background work would weigh on the rest.
    with TestClient(create_app(runtime)) as client:
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client


def _measure(
    runtime: Runtime,
    secret: str,
    workspace: str,
    large: int,
    report_rounds: int,
    record_rounds: int,
) -> list[Result]:
    sizes = (SMALL, large // 10, large)
    with _client(runtime, secret) as client:
        campaigns = [(_campaign(client, f"c{size}"), size) for size in sizes]
        record_campaign = _campaign(client, "record")
    load_seconds = 0.0
    for campaign, count in campaigns:
        load_seconds = _load(runtime, workspace, campaign, count)  # the last: the largest
    rows_read = {}
    for campaign, count in campaigns:
        report = reports.campaign_report(runtime.db, workspace, campaign["id"])
        if report.targeted != count or report.buckets.total != count:
            raise AssertionError(f"the report counts {report.targeted}, not {count}")
        with runtime.db.read() as conn:
            rows_read[count] = conn.execute(
                sa.select(sa.func.count()).where(
                    report_counters.c.campaign_id == campaign["id"],
                    report_counters.c.execution_id == "",
                )
            ).scalar_one()
    service_samples: dict[int, list[float]] = {size: [] for size in sizes}
    http_samples: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(report_rounds):
        for campaign, count in campaigns:
            service_samples[count] += _seconds(
                lambda c=campaign: reports.campaign_report(runtime.db, workspace, c["id"]), 1
            )
    with _client(runtime, secret) as client:
        for _ in range(report_rounds):
            for campaign, count in campaigns:
                url = f"/v1/campaigns/{campaign['id']}/report"
                http_samples[count] += _seconds(lambda u=url: client.get(u), 1)
    fast = _time_records(runtime, workspace, record_campaign, _record_sqlite, record_rounds)
    plain = _time_records(runtime, workspace, record_campaign, _record_sqlalchemy, record_rounds)

    def ms(samples: list[float]) -> list[float]:
        return [value * 1e3 for value in samples]

    def us(samples: list[float]) -> list[float]:
        return [value * 1e6 for value in samples]

    results = [
        result(
            f"ledger on load ({large:,} messages, {LOAD_BATCH:,} a batch)",
            [load_seconds * 1e6],
            "µs/message",
            large,
        )
    ]
    for kind, samples in (("service", service_samples), ("GET", http_samples)):
        smallest: Result | None = None
        for size in sizes:
            row = result(
                f"campaign report, {kind}, {size:,} messages",
                ms(samples[size]),
                "ms",
                1,
                reference=smallest,
                note=f"{rows_read[size]:,} counter rows" if kind == "service" else "",
            )
            smallest = smallest or row
            results.append(row)
    for label, samples in (("sqlite fast path", fast), ("sqlalchemy path", plain)):
        without = result(
            f"record 100 sent ({label}), no announcement", us(samples[False]), "µs/message", 1
        )
        results += [
            without,
            result(
                f"record 100 sent ({label}), with report counters",
                us(samples[True]),
                "µs/message",
                1,
                reference=without,
                note=f"+{statistics.median(us(samples[True])) - without.median:.1f} µs/message",
            ),
        ]
    return results
