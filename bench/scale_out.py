"""Scale-out on PostgreSQL: delivery rate of 1, 2 and 4 `tidings worker` processes on one queue.

One `tidings api` accepts a queue of messages due an hour later; then K workers start, and once
every one says it is running the queue is made due at once (one UPDATE of due_at): the rate is
the messages over the time from that moment to the last `sent_at`, so process start-up is not in
it. The relay is Postfix's smtp-sink. Rounds go 1, 2, 4, 1, 2, 4, ... so a noisy neighbour hits
every count alike.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
from tests.support.postgres import PostgresCluster
from tests.support.soak import KEY, SECRET_KEY, Managed, free_port, live_campaign

from bench import live
from bench.harness import Plan, Result, result

NAME = "scale_out"
WORKER_COUNTS = (1, 2, 4)
MESSAGES = 10_000
QUICK_MESSAGES = 3_000
ROUNDS = 2
QUICK_ROUNDS = 1
PER_CALL = 20
BATCH_SIZE = 200
DRAIN_TIMEOUT = 600.0
WORKER_START_TIMEOUT = 120.0


def _plain_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _queue(base_url: str, campaign_id: str, prefix: str, messages: int) -> None:
    """Accepts `messages` messages due in an hour, in calls of PER_CALL recipients."""
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    ) as client:
        for start in range(0, messages, PER_CALL):
            response = client.post(
                "/v1/executions",
                json={
                    "campaign_id": campaign_id,
                    "execute_at": later,
                    "context": {"order": str(start)},
                    "recipients": [
                        {
                            "identity": {"namespace": "email", "id": f"{prefix}-{n}@example.com"},
                            "profile": {"name": "B"},
                        }
                        for n in range(start, min(start + PER_CALL, messages))
                    ],
                },
            )
            if response.status_code != 202:
                raise AssertionError(f"POST /v1/executions: {response.status_code} {response.text}")


def _wait_running(workers: list[Managed]) -> None:
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    while time.monotonic() < deadline:
        for worker in workers:
            assert worker.process is not None
            if worker.process.poll() is not None:
                raise RuntimeError(f"{worker.name} exited: {worker.log_path.read_text()[-2000:]}")
        if all("worker running" in w.log_path.read_text(errors="replace") for w in workers):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the workers did not start within {WORKER_START_TIMEOUT:.0f} s")


def _release_and_time(database_url: str, prefix: str, messages: int) -> float:
    """Makes the queue due now; messages/s from then to the last one sent."""
    pattern = f"{prefix}-%"
    with psycopg.connect(_plain_url(database_url), autocommit=True) as conn:
        released = conn.execute(
            "UPDATE messages SET due_at = now() WHERE recipient_id LIKE %s AND state = 'queued' "
            "RETURNING now()",
            (pattern,),
        ).fetchone()
        assert released is not None
        released_at: dt.datetime = released[0]
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'sent'), "
                "count(*) FILTER (WHERE state IN ('failed', 'excluded')), max(sent_at) "
                "FROM messages WHERE recipient_id LIKE %s",
                (pattern,),
            ).fetchone()
            assert row is not None
            sent, not_sent, last = row
            if not_sent:
                raise AssertionError(f"{not_sent} messages were not sent")
            if sent == messages:
                return messages / (last - released_at).total_seconds()
            time.sleep(0.1)
    raise AssertionError(f"not every message was sent within {DRAIN_TIMEOUT:.0f} s")


def run(plan: Plan) -> list[Result]:
    quick = plan.rounds <= 3
    messages = QUICK_MESSAGES if quick else MESSAGES
    rounds = QUICK_ROUNDS if quick else ROUNDS
    samples: dict[int, list[float]] = {count: [] for count in WORKER_COUNTS}
    cluster = PostgresCluster.start()
    try:
        database_url = cluster.create_database("scale_out")
        with live.postfix_sink() as sink_port, tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            env = {
                **os.environ,
                "TIDINGS_DATA_DIR": str(work),
                "TIDINGS_HOST": live.HOST,
                "TIDINGS_DATABASE_URL": database_url,
                "TIDINGS_BOOTSTRAP_API_KEY": KEY,
                "TIDINGS_SECRET_KEY": SECRET_KEY,
                "TIDINGS_SMTP_URL": f"smtp://{live.HOST}:{sink_port}",
                "TIDINGS_DELIVERY_BATCH_SIZE": str(BATCH_SIZE),
                "TIDINGS_WORKER_POLL_SECONDS": "0.2",
                "TIDINGS_LOG_LEVEL": "warning",
            }
            api = Managed("api", "api", env, work / "api.log", free_port())
            api.start()
            try:
                base_url = f"http://{live.HOST}:{api.port}"
                campaign_id = live_campaign(base_url)
                for round_index in range(rounds):
                    for count in WORKER_COUNTS:
                        prefix = f"scale-{round_index}-{count}"
                        _queue(base_url, campaign_id, prefix, messages)
                        workers = [
                            Managed(f"worker-{i}", "worker", env, work / f"{prefix}-w{i}.log", None)
                            for i in range(count)
                        ]
                        for worker in workers:
                            worker.start()
                        try:
                            _wait_running(workers)
                            time.sleep(1.0)  # their first polls done
                            rate = _release_and_time(database_url, prefix, messages)
                        finally:
                            for worker in workers:
                                worker.stop()
                        samples[count].append(rate)
                        print(
                            f"  {count} worker(s): {rate:,.0f} messages/s",
                            file=sys.stderr,
                            flush=True,
                        )
            finally:
                api.stop()
    finally:
        cluster.stop()
    cores = os.cpu_count() or 1
    note = (
        f"{cores} CPU cores shared by the workers, PostgreSQL and smtp-sink: past {cores} "
        f"workers there is no CPU left to scale into; load {live.load_average()}"
    )
    reference = result(f"1 worker process, {messages} messages", samples[1], "messages/s", messages)
    results = [reference]
    for count in WORKER_COUNTS[1:]:
        results.append(
            result(
                f"{count} worker processes, {messages} messages",
                samples[count],
                "messages/s",
                messages,
                reference=reference,
                note=note if count == WORKER_COUNTS[-1] else "",
            )
        )
    spread = {count: statistics.pstdev(values) for count, values in samples.items()}
    reference.note = f"spread (stdev) per count: {spread}"
    return results
