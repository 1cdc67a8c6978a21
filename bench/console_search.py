"""The console's profile search and the preview picker's suggestions in a workspace of 300,000
profiles: a search by the start of an identity reads the identity index, and a first letter
typed in the picker stops at its twenty suggestions.

In one process, on SQLite (a temporary data folder, migrated as `tidings serve` would): the
profiles and their email identities are written straight into the tables (the import path is
bench/audience.py's business), `user0000000@example.com` on. Each query runs in rounds,
interleaved; the reference is a search for a text no identity starts with, the cheapest
answer the index can give.
"""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from pathlib import Path

from bench.harness import Case, Plan, Result, measure, result
from tidings.bootstrap import prepare
from tidings.config import Settings
from tidings.console.profiles import search, suggestions
from tidings.runtime import Runtime
from tidings.workspaces import service as workspaces

NAME = "console_search"
PROFILES, QUICK_PROFILES = 300_000, 20_000
STAMP = "2026-01-01 00:00:00.000000"

# (label, query): selective, one profile, and a first letter every identity has; NOTHING, a
# query no identity starts with, is each round's reference.
QUERIES = (
    ("a search 100 identities start with", "user00012"),
    ("an address typed in capitals, one match", "USER0001234@"),
    ("a first letter, every identity matches", "u"),
)
NOTHING = ("nothing starts with it (reference)", "nobody")


def _populate(path: Path, workspace_id: str, count: int) -> None:
    with sqlite3.connect(path) as connection:
        profiles = [(str(uuid.uuid4()), workspace_id) for _ in range(count)]
        connection.executemany(
            "INSERT INTO profiles (id, workspace_id, attributes, consent, created_at, updated_at) "
            f"VALUES (?, ?, '{{}}', '{{}}', '{STAMP}', '{STAMP}')",
            profiles,
        )
        connection.executemany(
            "INSERT INTO profile_identities (workspace_id, namespace, value, profile_id) "
            "VALUES (?, 'email', ?, ?)",
            [
                (workspace_id, f"user{index:07d}@example.com", profile_id)
                for index, (profile_id, _) in enumerate(profiles)
            ],
        )


def run(plan: Plan) -> list[Result]:
    count = QUICK_PROFILES if plan.rounds < 7 else PROFILES
    with tempfile.TemporaryDirectory(prefix="tidings-bench-search-") as folder:
        runtime = Runtime.from_settings(Settings(data_dir=Path(folder)))
        try:
            prepare(runtime, run_migrations=True)
            workspace = workspaces.find_workspace(runtime.db, workspaces.DEFAULT_WORKSPACE)
            assert workspace is not None
            workspace_id: str = workspace["id"]
            _populate(Path(folder) / "tidings.db", workspace_id, count)
            db = runtime.db

            def searching(query: str) -> Case:
                def operation(n: int) -> None:
                    for _ in range(n):
                        search(db, workspace_id, query)

                return Case(f"search: {query}", operation)

            def suggesting(query: str) -> Case:
                def operation(n: int) -> None:
                    for _ in range(n):
                        suggestions(db, workspace_id, query)

                return Case(f"suggest: {query}", operation)

            everything = (NOTHING, *QUERIES)
            cases = [searching(q) for _, q in everything] + [suggesting(q) for _, q in QUERIES]
            timings = measure(cases, plan)
            # The answers themselves, so a fast wrong one cannot pass for a fast right one.
            assert search(db, workspace_id, NOTHING[1]) == []
            assert len(search(db, workspace_id, "user00012")) == 50  # a page; 100 match
            assert len(suggestions(db, workspace_id, "u")) == 20
        finally:
            runtime.close()

    note = f"{count:,} profiles, SQLite, in process"
    results: list[Result] = []
    reference = result(
        f"search, {NOTHING[0]}",
        [s * 1e3 for s in timings.per_operation[cases[0].name]],
        "ms",
        timings.operations_per_round[cases[0].name],
        note=note,
    )
    results.append(reference)
    for label, query in QUERIES:
        for kind in ("search", "suggest"):
            name = f"{kind}: {query}"
            results.append(
                result(
                    f"{'search' if kind == 'search' else 'picker suggestions'}, {label}",
                    [s * 1e3 for s in timings.per_operation[name]],
                    "ms",
                    timings.operations_per_round[name],
                    reference=reference,
                )
            )
    return results
