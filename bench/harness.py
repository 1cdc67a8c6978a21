"""Measuring helpers: calibrated, interleaved rounds, medians, ratios and the JSON results."""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WARM_UP_OPERATIONS = 3

# A benchmark case runs its operation n times; setup stays outside the timed call.
Operation = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Plan:
    """How long to measure: rounds per case and the target duration of one round."""

    rounds: int
    round_seconds: float

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        return cls(rounds=3, round_seconds=0.15) if quick else cls(rounds=7, round_seconds=1.0)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    operation: Operation


@dataclass(slots=True)
class Result:
    """One figure: the median over rounds, its unit, and a ratio to a same-process reference."""

    name: str
    median: float
    unit: str
    rounds: int
    ratio: float | None = None
    reference: str | None = None
    operations_per_round: int = 0
    samples: list[float] = field(default_factory=list)
    note: str = ""


@dataclass(slots=True)
class Timings:
    """Seconds per operation of each case, one sample per round."""

    per_operation: dict[str, list[float]]
    operations_per_round: dict[str, int]

    def throughput(self, name: str) -> list[float]:
        return [1.0 / seconds for seconds in self.per_operation[name]]

    def microseconds(self, name: str) -> list[float]:
        return [seconds * 1e6 for seconds in self.per_operation[name]]


def _time(operation: Operation, count: int) -> float:
    gc.collect()
    start = time.perf_counter()
    operation(count)
    return time.perf_counter() - start


def calibrate(operation: Operation, round_seconds: float) -> int:
    """How many operations fill one round, estimated from a growing trial after a warm-up."""
    operation(WARM_UP_OPERATIONS)
    count = 1
    while True:
        elapsed = _time(operation, count)
        if elapsed >= min(0.05, round_seconds / 4) or count >= 1_000_000:
            break
        count *= 4
    return max(1, round(count * round_seconds / elapsed))


def measure(cases: Sequence[Case], plan: Plan) -> Timings:
    """Runs the cases round-robin, so that load changes on a shared machine hit them alike."""
    counts = {case.name: calibrate(case.operation, plan.round_seconds) for case in cases}
    samples: dict[str, list[float]] = {case.name: [] for case in cases}
    for _ in range(plan.rounds):
        for case in cases:
            count = counts[case.name]
            samples[case.name].append(_time(case.operation, count) / count)
    return Timings(per_operation=samples, operations_per_round=counts)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def result(
    name: str,
    samples: list[float],
    unit: str,
    count: int,
    *,
    reference: Result | None = None,
    note: str = "",
) -> Result:
    """A Result whose ratio is its median divided by the reference's median (same unit)."""
    value = median(samples)
    ratio = None
    if reference is not None:
        assert reference.unit == unit, "a ratio needs the same unit on both sides"
        ratio = value / reference.median
    return Result(
        name=name,
        median=value,
        unit=unit,
        rounds=len(samples),
        ratio=ratio,
        reference=reference.name if reference is not None else None,
        operations_per_round=count,
        samples=samples,
        note=note,
    )


def write_results(benchmark: str, results: Sequence[Result], *, quick: bool) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{benchmark}.json"
    document: dict[str, Any] = {
        "benchmark": benchmark,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "results": [asdict(item) for item in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def format_number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def table(rows: Sequence[tuple[str, Result]]) -> str:
    """A plain-text table of (benchmark, result) rows."""
    header = ("benchmark", "measurement", "median", "unit", "rounds", "ratio", "vs")
    lines = [
        (
            benchmark,
            item.name,
            format_number(item.median),
            item.unit,
            str(item.rounds),
            "" if item.ratio is None else f"{item.ratio:.2f}x",
            item.reference or "",
        )
        for benchmark, item in rows
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    right = {2, 4, 5}

    def render(line: Sequence[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(header), rule, *(render(line) for line in lines)])
