"""Readiness checks: can this process do its work right now?"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

import sqlalchemy as sa

from tidings.db import Database, migrate

CheckStatus = Literal["ok", "failing", "absent"]
# Migrations change only with a deploy: asking the database on every probe would be waste.
MIGRATION_CHECK_SECONDS = 10.0


@dataclass
class WorkerState:
    """The in-process worker as the app sees it: None when this process runs none."""

    task: asyncio.Task[None] | None = None


@dataclass
class Readiness:
    ready: bool
    checks: dict[str, CheckStatus] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class _MigrationCache:
    checked_at: float = float("-inf")
    current: bool = False


class ReadinessProbe:
    def __init__(self, db: Database, worker: WorkerState) -> None:
        self._db = db
        self._worker = worker
        self._migrations = _MigrationCache()

    def check(self) -> Readiness:
        """Blocking (database round trips): call it off the event loop."""
        result = Readiness(ready=True)
        try:
            with self._db.read() as conn:
                conn.execute(sa.text("SELECT 1"))
            result.checks["database"] = "ok"
        except Exception as exc:  # any failure to reach it is "not ready", with the reason
            result.checks["database"] = "failing"
            result.details["database"] = type(exc).__name__
        if result.checks["database"] == "ok":
            result.checks["migrations"] = "ok" if self._migrations_current() else "failing"
            if result.checks["migrations"] == "failing":
                result.details["migrations"] = "the schema is not at this version's head"
        else:
            result.checks["migrations"] = "failing"
        task = self._worker.task
        if task is None:
            # `tidings api`: the workers are other processes.
            result.checks["worker"] = "absent"
        elif task.done():
            result.checks["worker"] = "failing"
            result.details["worker"] = "the in-process worker has stopped"
        else:
            result.checks["worker"] = "ok"
        result.ready = all(status != "failing" for status in result.checks.values())
        return result

    def _migrations_current(self) -> bool:
        cache = self._migrations
        if time.monotonic() - cache.checked_at >= MIGRATION_CHECK_SECONDS or not cache.current:
            cache.current = migrate.is_current(self._db)
            cache.checked_at = time.monotonic()
        return cache.current
