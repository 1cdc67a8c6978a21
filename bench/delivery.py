"""End-to-end email throughput and latency of `tidings serve` into Postfix's smtp-sink."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench import live
from bench.harness import Plan, Result, result

NAME = "delivery"
ROUNDS = 3
MESSAGES = 5_000
QUICK_MESSAGES = 1_000
BATCH = 20
IN_FLIGHT = 16
# smtp-source: the same number of messages, 4 KB each, 8 persistent sessions.
SOURCE_SIZE = 4096
SOURCE_SESSIONS = 8
# Latency: triggers paced at (messages per second, recipients per call): the 500/s in
# 20-recipient calls, and a lighter load of single-recipient calls.
PACED = ((500, 20), (100, 1))
PACED_SECONDS = 6.0
QUICK_PACED_SECONDS = 2.0
DRAIN_TIMEOUT = 120.0
POLL_SECONDS = 0.02

CEILING = "smtp-source -> smtp-sink (ceiling)"
END_TO_END = f"trigger -> SMTP accepted, via {BATCH}-recipient calls"
ACCEPTED = f"acceptance of those {BATCH}-recipient calls ({IN_FLIGHT} in flight)"


@dataclass
class _Round:
    ceiling: float  # messages/s
    end_to_end: float  # messages/s, first trigger sent to last message sent
    acceptance: float  # recipients/s, first trigger sent to last 202
    drain: float  # seconds from the last 202 to the last message sent


async def _trigger_all(connections: list[live.Connection], bodies: live.Bodies, calls: int) -> None:
    """Sends `calls` calls of BATCH new recipients, one in flight per connection."""
    left = calls

    async def one_at_a_time(connection: live.Connection) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status, content = await connection.request(
                b"POST", b"/v1/executions", bodies.body(BATCH)[0]
            )
            if status != 202:
                raise AssertionError(f"POST /v1/executions: {status}: {content[:500]!r}")

    await asyncio.gather(*(one_at_a_time(connection) for connection in connections))


def _check_nothing_failed(server: live.Server) -> None:
    with contextlib.closing(server.database()) as database:
        failed = database.execute(
            "SELECT state, reason, last_error FROM messages "
            "WHERE state IN ('failed', 'excluded') LIMIT 1"
        ).fetchone()
    if failed is not None:
        raise AssertionError(f"a message was not sent: {failed}")


def check_all_sent(server: live.Server, prefix: str, expected: int | None = None) -> None:
    """Every message to the recipients whose address starts with `prefix` is `sent` (and there
    are `expected` of them, when given)."""
    with contextlib.closing(server.database()) as database:
        rows = database.execute(
            "SELECT state, count(*) FROM messages WHERE recipient_id LIKE ? GROUP BY state",
            (f"{prefix}%",),
        ).fetchall()
    counts = dict(rows)
    if set(counts) != {"sent"} or (expected is not None and counts["sent"] != expected):
        raise AssertionError(f"{prefix}: not all {expected or ''} sent: {rows}")


def _last_sent_at(server: live.Server) -> float:
    with contextlib.closing(server.database()) as database:
        (value,) = database.execute("SELECT max(sent_at) FROM messages").fetchone()
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC).timestamp()


def _wait_until_sent(server: live.Server, total: int) -> None:
    """Polls the server's database (read-only) until `total` messages are sent."""
    with contextlib.closing(server.database()) as database:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            states = live.count_states(database)
            if states.get("failed") or states.get("excluded"):
                _check_nothing_failed(server)
            if states.get("sent", 0) >= total:
                return
            time.sleep(POLL_SECONDS)
        raise AssertionError(f"not every message was sent within {DRAIN_TIMEOUT:.0f} s: {states}")


def _throughput_round(
    server: live.Server, sink_port: int, bodies: live.Bodies, messages: int, done: int
) -> _Round:
    ceiling = messages / live.smtp_source(sink_port, messages, SOURCE_SIZE, SOURCE_SESSIONS)
    end_to_end, acceptance, drain = end_to_end_round(server, bodies, messages, done)
    return _Round(ceiling=ceiling, end_to_end=end_to_end, acceptance=acceptance, drain=drain)


def end_to_end_round(
    server: live.Server, bodies: live.Bodies, messages: int, done: int
) -> tuple[float, float, float]:
    """Triggers `messages` new recipients while the worker delivers them: (messages/s from the
    first call to the last message's sent_at, recipients/s accepted, seconds of drain after the
    last 202). `done`: messages the server had sent before."""
    started, accepted = _trigger_and_close(server, bodies, messages)
    _wait_until_sent(server, done + messages)
    finished = _last_sent_at(server)
    return messages / (finished - started), messages / (accepted - started), finished - accepted


def _trigger_and_close(
    server: live.Server, bodies: live.Bodies, messages: int
) -> tuple[float, float]:
    """Triggers `messages` recipients in calls of BATCH, IN_FLIGHT at a time; returns the
    wall-clock times of the start (connections open) and of the last answer."""
    connections = server.connections(IN_FLIGHT)
    started = time.time()

    async def trigger() -> None:
        try:
            await _trigger_all(connections, bodies, messages // BATCH)
        finally:
            await asyncio.gather(*(connection.close() for connection in connections))

    with live.event_loop_runner() as runner:
        runner.run(trigger())
    return started, time.time()


def delivery_alone(
    server: live.Server,
    campaign_id: str,
    messages: int,
    acceptance: float,
    prefix: str = "alone",
) -> tuple[float, float]:
    """(messages/s, seconds of acceptance): `messages` accepted with an `execute_at` that falls
    after they are all in, so the worker then delivers a full queue with no HTTP load beside it.

    The rate runs from the first batch's sent_at to the last one's (each batch of
    TIDINGS_DELIVERY_BATCH_SIZE shares one), over the messages of every batch but the first.
    """
    margin = messages / acceptance * 1.5 + 2.0
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=margin)
    bodies = live.Bodies(campaign_id, prefix, due.isoformat())
    before = sent_count(server)
    started, accepted = _trigger_and_close(server, bodies, messages)
    if accepted >= due.timestamp():
        raise AssertionError("the messages were not all accepted before they fell due")
    _wait_until_sent(server, before + messages)
    with contextlib.closing(server.database()) as database:
        rows = database.execute(
            "SELECT sent_at, count(*) FROM messages WHERE recipient_id LIKE ? "
            "GROUP BY sent_at ORDER BY sent_at",
            (f"{prefix}%",),
        ).fetchall()
    stamps = [dt.datetime.fromisoformat(stamp).timestamp() for stamp, _ in rows]
    rate = (messages - rows[0][1]) / (stamps[-1] - stamps[0])
    return rate, accepted - started


def metrics_match_reports(server: live.Server, campaign_ids: list[str]) -> dict[str, int]:
    """Once the queue is empty: the totals of the server's /metrics equal the sum of the
    campaigns' reports (`GET /v1/campaigns/{id}/report`) and the messages table's counts, or
    AssertionError. Returns the totals."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        with contextlib.closing(server.database()) as database:
            states = live.count_states(database)
        if not any(states.get(state, 0) for state in ("queued", "sending", "deferred")):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"messages still pending: {states}")
        time.sleep(POLL_SECONDS)
    with server.client() as client:
        scraped = client.get("/metrics")
        reports = [client.get(f"/v1/campaigns/{campaign}/report") for campaign in campaign_ids]
    if scraped.status_code != 200 or any(report.status_code != 200 for report in reports):
        raise AssertionError("GET /metrics or a campaign report failed")
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(scraped.text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    bodies = [report.json() for report in reports]
    compared = {
        "accepted": (
            totals.get("tidings_messages_accepted_total", 0.0),
            sum(body["targeted"] for body in bodies),
            sum(states.values()),
        ),
        "sent": (
            totals.get("tidings_messages_sent_total", 0.0),
            sum(body["ever_sent"] for body in bodies),
            states.get("sent", 0) + states.get("delivered", 0) + states.get("bounced", 0),
        ),
        "failed": (
            totals.get("tidings_messages_failed_total", 0.0),
            sum(body["buckets"]["failed"] for body in bodies),
            states.get("failed", 0),
        ),
        "excluded": (
            totals.get("tidings_messages_excluded_total", 0.0),
            sum(body["buckets"]["excluded"] for body in bodies),
            states.get("excluded", 0),
        ),
    }
    for name, (metric, report, table) in compared.items():
        if not metric == report == table:
            raise AssertionError(
                f"{name}: /metrics says {metric:.0f}, the reports {report}, the table {table}"
            )
    return {name: int(metric) for name, (metric, _, _) in compared.items()}


def sent_count(server: live.Server) -> int:
    with contextlib.closing(server.database()) as database:
        return live.count_states(database).get("sent", 0)


@dataclass
class _Latency:
    p50: float  # seconds
    p99: float
    maximum: float
    paced_rate: float  # messages/s the triggers achieved
    mean_size: float  # bytes of a message as the sink stored it


def _latency(
    server: live.Server, dump_dir: Path, campaign_id: str, seconds: float, rate: int, batch: int
) -> _Latency:
    """Triggers paced at `rate` messages/s in calls of `batch` recipients; the latency of each
    message is from the moment its call was sent to the modification time of the file the sink
    wrote when it accepted it."""
    for path in dump_dir.iterdir():
        path.unlink()
    bodies = live.Bodies(campaign_id, f"latency{rate}x{batch}-")
    calls = round(seconds * rate / batch)
    interval = batch / rate
    sent_at: dict[str, float] = {}

    async def paced() -> float:
        idle: asyncio.Queue[live.Connection] = asyncio.Queue()
        connections = server.connections(64)
        for connection in connections:
            idle.put_nowait(connection)

        async def call(content: bytes, addresses: list[str]) -> None:
            connection = await idle.get()
            try:
                now = time.time()
                sent_at.update(dict.fromkeys(addresses, now))
                status, reply = await connection.request(b"POST", b"/v1/executions", content)
                if status != 202:
                    raise AssertionError(f"POST /v1/executions: {status}: {reply[:500]!r}")
            finally:
                idle.put_nowait(connection)

        start = time.perf_counter()
        tasks = []
        try:
            for index in range(calls):
                await asyncio.sleep(max(0.0, start + index * interval - time.perf_counter()))
                tasks.append(asyncio.create_task(call(*bodies.body(batch))))
            await asyncio.gather(*tasks)
        finally:
            await asyncio.gather(*(connection.close() for connection in connections))
        return calls * batch / (time.perf_counter() - start)

    with live.event_loop_runner() as runner:
        paced_rate = runner.run(paced())
    expected = calls * batch
    deadline = time.monotonic() + DRAIN_TIMEOUT
    files: list[Path] = []
    while time.monotonic() < deadline:
        files = list(dump_dir.iterdir())
        if len(files) >= expected:
            break
        _check_nothing_failed(server)
        time.sleep(0.1)
    if len(files) < expected:
        raise AssertionError(f"the sink received {len(files)} of {expected} messages")
    latencies: list[float] = []
    sizes: list[int] = []
    for path in files:
        data = path.read_bytes()
        sizes.append(len(data))
        rcpt = data.split(b"X-Rcpt-Args: <", 1)[1].split(b">", 1)[0].decode()
        latencies.append(path.stat().st_mtime - sent_at[rcpt])
    latencies.sort()
    return _Latency(
        p50=latencies[len(latencies) // 2],
        p99=latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        maximum=latencies[-1],
        paced_rate=paced_rate,
        mean_size=statistics.mean(sizes),
    )


def run(plan: Plan) -> list[Result]:
    quick = plan.round_seconds < 1.0
    rounds = 1 if quick else ROUNDS
    messages = QUICK_MESSAGES if quick else MESSAGES
    paced_seconds = QUICK_PACED_SECONDS if quick else PACED_SECONDS
    load_before = live.load_average()
    with tempfile.TemporaryDirectory(prefix="tidings-bench-delivery-") as directory:
        root = Path(directory)
        # smtp-sink writes its dump files as `nobody`, who must reach the dump folder.
        root.chmod(0o755)
        data_dir = root / "data"
        data_dir.mkdir()
        dump_dir = root / "dump"
        with live.postfix_sink() as sink_port, live.postfix_sink(dump_dir) as dump_port:
            server = live.Server.start(data_dir, f"smtp://{live.HOST}:{sink_port}")
            try:
                campaign = live.live_campaign(server)
                bodies = live.Bodies(campaign, "d")
                measured = [
                    _throughput_round(server, sink_port, bodies, messages, index * messages)
                    for index in range(rounds)
                ]
                alone, _ = delivery_alone(
                    server,
                    campaign,
                    messages,
                    statistics.median(item.acceptance for item in measured),
                )
                # Its own campaign, whose channel configuration names the dumping sink.
                dumped = live.live_campaign(server, f"smtp://{live.HOST}:{dump_port}")
                latencies = [
                    (rate, batch, _latency(server, dump_dir, dumped, paced_seconds, rate, batch))
                    for rate, batch in PACED
                ]
                totals = metrics_match_reports(server, [campaign, dumped])
            finally:
                server.stop()
    ceiling = result(
        CEILING,
        [item.ceiling for item in measured],
        "messages/s",
        messages,
        note=f"{SOURCE_SESSIONS} persistent sessions, {SOURCE_SIZE} B messages, same sink; "
        f"load average {load_before} before, {live.load_average()} after",
    )
    results = [
        ceiling,
        result(
            END_TO_END,
            [item.end_to_end for item in measured],
            "messages/s",
            messages,
            reference=ceiling,
            note="first call sent to the last message's sent_at; each recipient a new profile",
        ),
        result(ACCEPTED, [item.acceptance for item in measured], "recipients/s", messages),
        result("drain after the last 202", [item.drain for item in measured], "s", messages),
        result(
            "delivery alone: a full queue, no HTTP load",
            [alone],
            "messages/s",
            messages,
            reference=ceiling,
            note="accepted with a later execute_at, then claimed, rendered, sent and recorded",
        ),
    ]
    results.append(
        result(
            "/metrics totals = campaign reports = messages table: messages sent",
            [float(totals["sent"])],
            "messages",
            totals["accepted"],
            note=", ".join(f"{name} {count}" for name, count in totals.items()),
        )
    )
    for rate, batch, latency in latencies:
        paced = f"at {rate} messages/s ({batch}-recipient calls)"
        count = round(latency.paced_rate * paced_seconds)
        note = (
            f"{latency.paced_rate:.0f} messages/s achieved; mean message "
            f"{latency.mean_size / 1024:.1f} KB at the sink; max {latency.maximum * 1e3:.0f} ms"
        )
        results.append(
            result(
                f"trigger -> SMTP accepted {paced}: p50",
                [latency.p50 * 1e3],
                "ms",
                count,
                note=note,
            )
        )
        results.append(
            result(f"trigger -> SMTP accepted {paced}: p99", [latency.p99 * 1e3], "ms", count)
        )
    return results
