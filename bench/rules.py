"""What the business rules cost: delivery of a marketing campaign with and without rule sets.

The issue's measure is end-to-end delivery throughput: triggers (20 new recipients a call, 16
in flight) while the worker delivers, first call to last message accepted by SMTP. Delivery
alone (a full queue, no HTTP load) is measured too, where the rules' share is largest. Both
sides run in one `tidings serve` process into one Postfix smtp-sink, in alternating rounds, so
a noisy machine shifts both alike. "With rules" is a default rule set whose caps
count every message (two counters each: email per day, all channels per week) without ever
binding, and whose quiet hours are checked for every message without ever holding one; consent
and the suppression list are read on both sides (the workspace has suppressions, none of the
recipients').
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import live
from bench.delivery import check_all_sent, delivery_alone, end_to_end_round, sent_count
from bench.harness import Plan, Result, result

NAME = "rules"
ROUNDS = 3
QUICK_ROUNDS = 1
MESSAGES = 5_000
QUICK_MESSAGES = 1_000
# A generous guess of the acceptance rate: execute_at must fall after the last 202.
ACCEPTANCE = 1_500.0

RULE_SET: dict[str, Any] = {
    "name": "bench",
    "default": True,
    "frequency_caps": [
        {"channels": ["email"], "limit": 1000, "period": "day"},
        {"limit": 5000, "period": "week"},
    ],
}


def _quiet_hours_elsewhere() -> dict[str, Any]:
    """Quiet hours every day, starting 6 hours from now for one hour: checked, never in force."""
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)
    return {
        "timezone": "UTC",
        "windows": [
            {
                "start": start.strftime("%H:%M"),
                "end": (start + dt.timedelta(hours=1)).strftime("%H:%M"),
            }
        ],
    }


def _suppress_others(server: live.Server) -> None:
    with server.client() as client:
        entries = [{"value": f"gone{n}@example.com", "type": "hard_bounce"} for n in range(500)]
        entries.append({"value": "blocked.example"})
        response = client.post("/v1/suppressions", json={"entries": entries})
        if response.status_code not in (200, 201):
            raise AssertionError(f"suppressions: {response.status_code} {response.text[:300]}")


def _set_rules(server: live.Server, on: bool) -> None:
    with server.client() as client:
        for rule_set in client.get("/v1/rule-sets").json()["items"]:
            client.delete(f"/v1/rule-sets/{rule_set['id']}")
        if on:
            body = {**RULE_SET, "quiet_hours": _quiet_hours_elsewhere()}
            response = client.post("/v1/rule-sets", json=body)
            if response.status_code != 201:
                raise AssertionError(f"rule set: {response.status_code} {response.text[:300]}")


def run(plan: Plan) -> list[Result]:
    quick = plan.round_seconds < 1.0
    rounds = QUICK_ROUNDS if quick else ROUNDS
    messages = QUICK_MESSAGES if quick else MESSAGES
    load_before = live.load_average()
    alone: dict[bool, list[float]] = {False: [], True: []}
    end_to_end: dict[bool, list[float]] = {False: [], True: []}
    # Server CPU (API and worker) per message over each end-to-end window, in µs: steadier than
    # wall-clock rates on a shared machine.
    cpu: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="tidings-bench-rules-") as directory:
        data_dir = Path(directory) / "data"
        data_dir.mkdir()
        with live.postfix_sink() as sink_port:
            server = live.Server.start(data_dir, f"smtp://{live.HOST}:{sink_port}")
            try:
                campaign = live.live_campaign(server, category="marketing")
                _suppress_others(server)
                # A warm-up round, not counted: first connections, caches, the page cache.
                delivery_alone(server, campaign, messages // 5, ACCEPTANCE, "warm-")
                for index in range(rounds):
                    # Off then on, then on then off: neither side always runs second.
                    order = (False, True) if index % 2 == 0 else (True, False)
                    for on in order:
                        _set_rules(server, on)
                        prefix = f"e{index}{'on' if on else 'off'}-"
                        bodies = live.Bodies(campaign, prefix)
                        before = server.cpu_seconds()
                        rate, _, _ = end_to_end_round(server, bodies, messages, sent_count(server))
                        cpu[on].append((server.cpu_seconds() - before) / messages * 1e6)
                        check_all_sent(server, prefix)
                        end_to_end[on].append(rate)
                        prefix = f"a{index}{'on' if on else 'off'}-"
                        rate, _ = delivery_alone(server, campaign, messages, ACCEPTANCE, prefix)
                        check_all_sent(server, prefix)
                        alone[on].append(rate)
            finally:
                server.stop()
    note = f"load average {load_before} before, {live.load_average()} after"
    results: list[Result] = []
    for label, samples in (
        ("end to end (trigger -> SMTP accepted)", end_to_end),
        ("delivery alone (a full queue)", alone),
    ):
        without = result(
            f"{label}, no rule sets (consent and suppressions only)",
            samples[False],
            "messages/s",
            messages,
            note=note,
        )
        cost = 1 - statistics.median(samples[True]) / without.median
        results += [
            without,
            result(
                f"{label}, a default rule set (2 caps counted, quiet hours checked)",
                samples[True],
                "messages/s",
                messages,
                reference=without,
                note=f"cost of the rules: {cost:.1%} of the throughput without them",
            ),
        ]
    plain_cpu = result(
        "server CPU per message end to end, no rule sets",
        cpu[False],
        "µs/message",
        messages,
    )
    extra = statistics.median(cpu[True]) - plain_cpu.median
    results += [
        plain_cpu,
        result(
            "server CPU per message end to end, with the rule set",
            cpu[True],
            "µs/message",
            messages,
            reference=plain_cpu,
            note=f"the rules: {extra:+.0f} µs a message, {extra / plain_cpu.median:+.1%} of the "
            "CPU without them",
        ),
    ]
    return results
