"""Entry point of `python -m bench`: runs the named benchmarks (default: all), prints a table."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from bench import (
    api,
    audience,
    channels,
    console_search,
    delivery,
    rendering,
    reports,
    rules,
    scale_out,
    triggers,
)
from bench.harness import Plan, Result, table, write_results

BENCHMARKS: dict[str, Callable[[Plan], list[Result]]] = {
    rendering.NAME: rendering.run,
    api.NAME: api.run,
    triggers.NAME: triggers.run,
    delivery.NAME: delivery.run,
    rules.NAME: rules.run,
    audience.NAME: audience.run,
    channels.NAME: channels.run,
    reports.NAME: reports.run,
    scale_out.NAME: scale_out.run,
    console_search.NAME: console_search.run,
}


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Runs benchmarks; figures are medians over rounds, ratios are against a "
        "reference measured in the same process.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 short rounds instead of 7 long ones: a smoke test"
    )
    arguments = parser.parse_args(argv)
    unknown = [name for name in arguments.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    names = list(dict.fromkeys(arguments.names)) or list(BENCHMARKS)
    plan = Plan.for_run(arguments.quick)
    rows: list[tuple[str, Result]] = []
    for name in names:
        started = time.perf_counter()
        print(f"running {name} ({plan.rounds} rounds)...", file=sys.stderr, flush=True)
        results = BENCHMARKS[name](plan)
        path = write_results(name, results, quick=arguments.quick)
        elapsed = time.perf_counter() - started
        print(f"  done in {elapsed:.0f} s, results in {path}", file=sys.stderr, flush=True)
        rows.extend((name, item) for item in results)
    print(table(rows))
    notes = [f"- {item.name}: {item.note}" for _, item in rows if item.note]
    if notes:
        print("\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
