"""Trigger acceptance of a real `tidings serve` over HTTP under concurrent load, vs GET /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import live
from bench.harness import Plan, Result, result

NAME = "triggers"
CONCURRENCY = (1, 16, 32, 64)
ROUNDS = 3
ROUND_SECONDS = 3.0
QUICK_ROUND_SECONDS = 1.5
WARM_UP_SECONDS = 0.5
BATCH = 20
# Every call asks for delivery an hour later: what is measured is acceptance alone, each case
# unaffected by the delivery of the messages the previous cases accepted (bench/delivery.py
# measures the two together).
DEFER = dt.timedelta(hours=1)

HEALTHZ = "GET /healthz"
UNITARY = "POST /v1/executions, 1 recipient"
KNOWN = "POST /v1/executions, 1 known recipient"
# Known recipients cycle through this many profiles, all created before the rounds.
KNOWN_POOL = 2000
BATCHED = f"POST /v1/executions, {BATCH} recipients"


@dataclass(frozen=True, slots=True)
class _Case:
    name: str
    concurrency: int
    recipients: int  # per call; 0 for /healthz


def _request(case: _Case, bodies: dict[str, live.Bodies]) -> tuple[live.Request, int]:
    """The request of a case and the status that counts as success."""
    if case.recipients == 0:
        return (lambda: (b"GET", b"/healthz", b"")), 200
    source = bodies[KNOWN if case.name == KNOWN else UNITARY]

    def trigger() -> tuple[bytes, bytes, bytes]:
        return b"POST", b"/v1/executions", source.body(case.recipients)[0]

    return trigger, 202


def _measure(
    server: live.Server,
    cases: list[_Case],
    rounds: int,
    seconds: float,
    bodies: dict[str, live.Bodies],
    already_queued: int = 0,
) -> dict[_Case, list[live.Load]]:
    """Round-robin over the cases, each with its own persistent connections; then checks that
    the database holds one queued message per recipient a 202 accepted."""
    loads: dict[_Case, list[live.Load]] = {case: [] for case in cases}
    accepted = already_queued

    async def window(case: _Case, connections: list[live.Connection], length: float) -> live.Load:
        nonlocal accepted
        request, expected = _request(case, bodies)
        load = await live.closed_loop(connections, request, expected, length, server)
        accepted += load.ok * case.recipients
        if load.failures:
            raise AssertionError(
                f"{case.name}, {case.concurrency} in flight: unexpected statuses "
                f"{load.failures}: {load.failure_sample!r}"
            )
        return load

    async def main() -> None:
        pools = {case: server.connections(case.concurrency) for case in cases}
        try:
            for case in cases:
                await window(case, pools[case], WARM_UP_SECONDS)
            for _ in range(rounds):
                for case in cases:
                    loads[case].append(await window(case, pools[case], seconds))
        finally:
            for pool in pools.values():
                await asyncio.gather(*(connection.close() for connection in pool))

    with live.event_loop_runner() as runner:
        runner.run(main())
    with contextlib.closing(server.database()) as database:
        stored = live.count_states(database)
    if stored != {"queued": accepted}:
        raise AssertionError(f"{accepted} recipients accepted, but the messages are {stored}")
    return loads


def _results(loads: dict[_Case, list[live.Load]], context: str) -> list[Result]:
    results: list[Result] = []

    def add(
        case: _Case,
        label: str,
        unit: str,
        value: Callable[[live.Load], float],
        reference: Result | None = None,
        note: str = "",
    ) -> Result:
        samples = [value(load) for load in loads[case]]
        count = round(sum(load.ok for load in loads[case]) / len(loads[case]))
        item = result(label, samples, unit, count, reference=reference, note=note)
        results.append(item)
        return item

    for level in CONCURRENCY:
        by_name = {case.name: case for case in loads if case.concurrency == level}
        health, unitary, batched = by_name[HEALTHZ], by_name[UNITARY], by_name[BATCHED]
        known = by_name[KNOWN]
        reference = add(
            health,
            f"{HEALTHZ}, {level} in flight",
            "req/s",
            lambda load: load.rate,
            note=f"reference: no auth, no database; {context}",
        )
        add(
            unitary,
            f"{UNITARY}, {level} in flight",
            "req/s",
            lambda load: load.rate,
            reference,
            note="202s per second; each call a new address (a new profile), delivery in an hour",
        )
        add(
            unitary,
            f"{UNITARY}, {level} in flight: p50",
            "ms",
            lambda load: load.percentile(0.5) * 1e3,
        )
        add(
            unitary,
            f"{UNITARY}, {level} in flight: p99",
            "ms",
            lambda load: load.percentile(0.99) * 1e3,
        )
        add(
            unitary,
            f"{UNITARY}, {level} in flight: server CPU per call",
            "ms",
            lambda load: load.server_cpu / load.ok * 1e3,
        )
        add(
            known,
            f"{KNOWN}, {level} in flight",
            "req/s",
            lambda load: load.rate,
            reference,
            note=f"202s per second; recipients cycle through {KNOWN_POOL} existing profiles",
        )
        add(
            known,
            f"{KNOWN}, {level} in flight: p99",
            "ms",
            lambda load: load.percentile(0.99) * 1e3,
        )
        add(
            batched,
            f"{BATCHED}, {level} in flight",
            "recipients/s",
            lambda load: load.rate * BATCH,
        )
        add(
            batched,
            f"{BATCHED}, {level} in flight: p50",
            "ms",
            lambda load: load.percentile(0.5) * 1e3,
        )
        add(
            batched,
            f"{BATCHED}, {level} in flight: p99",
            "ms",
            lambda load: load.percentile(0.99) * 1e3,
        )
        add(
            batched,
            f"{BATCHED}, {level} in flight: server CPU per recipient",
            "ms",
            lambda load: load.server_cpu / (load.ok * BATCH) * 1e3,
        )
    return results


def _create_known_profiles(server: live.Server, bodies: live.Bodies) -> int:
    """One trigger per address of the pool, so the known-recipient case finds them all;
    returns how many messages that queued."""
    assert bodies.pool is not None
    with server.client() as client:
        for _ in range(bodies.pool // BATCH):
            response = client.post(
                "/v1/executions",
                content=bodies.body(BATCH)[0],
                headers={"Content-Type": "application/json"},
            )
            if response.status_code != 202:
                raise AssertionError(f"priming the known profiles: {response.text}")
    return bodies.pool // BATCH * BATCH


def run(plan: Plan) -> list[Result]:
    quick = plan.round_seconds < 1.0
    rounds = min(plan.rounds, ROUNDS)
    seconds = QUICK_ROUND_SECONDS if quick else ROUND_SECONDS
    cases = [
        _Case(name, level, recipients)
        for level in CONCURRENCY
        for name, recipients in ((HEALTHZ, 0), (UNITARY, 1), (KNOWN, 1), (BATCHED, BATCH))
    ]
    load_before = live.load_average()
    with tempfile.TemporaryDirectory(prefix="tidings-bench-triggers-") as directory:
        postfix = live.smtp_sink_available()
        sink = "Postfix smtp-sink" if postfix else "aiosmtpd in the benchmark process"
        with live.postfix_sink() if postfix else live.aiosmtpd_sink() as port:
            server = live.Server.start(Path(directory), f"smtp://{live.HOST}:{port}")
            try:
                later = (dt.datetime.now(dt.UTC) + DEFER).isoformat()
                campaign_id = live.live_campaign(server)
                bodies = {
                    UNITARY: live.Bodies(campaign_id, "t", later),
                    KNOWN: live.Bodies(campaign_id, "k", later, pool=KNOWN_POOL),
                }
                primed = _create_known_profiles(server, bodies[KNOWN])
                loads = _measure(server, cases, rounds, seconds, bodies, primed)
            finally:
                server.stop()
    context = f"SMTP sink: {sink}; load average {load_before} before, {live.load_average()} after"
    return _results(loads, context)
