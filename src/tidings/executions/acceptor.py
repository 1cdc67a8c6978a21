"""The API's way in: trigger requests committed together by one writer (group commits)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from tidings.db import Database
from tidings.db.group_commit import GroupCommitter
from tidings.executions import service
from tidings.executions.schemas import ExecutionCreate
from tidings.executions.service import Outcome, Triggered, TriggerJob
from tidings.signals import WorkSignal

MAX_BATCH = 256


class TriggerAcceptor:
    """Checks a request, hands it to the writer and waits for its commit: the 202 goes out
    only once the execution and its messages are in the database."""

    def __init__(self, db: Database, work: WorkSignal) -> None:
        self._work = work
        self._committer: GroupCommitter[TriggerJob, Outcome] = GroupCommitter(
            db,
            self._apply,
            max_batch=MAX_BATCH,
            after_commit=self._after_commit,
            name="trigger-writer",
        )

    async def trigger(
        self,
        workspace_id: str,
        body: ExecutionCreate,
        now: datetime,
        idempotency_key: str | None = None,
        json_text: bytes | None = None,
        high_throughput: bool = False,
    ) -> Triggered:
        job = service.prepare(
            workspace_id, body, now, idempotency_key, json_text, high_throughput=high_throughput
        )
        with service.IN_FLIGHT.hold(job):
            outcome = await asyncio.wrap_future(self._committer.submit(job))
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def close(self) -> None:
        self._committer.close()

    @staticmethod
    def _apply(conn: sa.Connection, jobs: Sequence[TriggerJob]) -> list[Outcome | BaseException]:
        return list(service.accept_batch(conn, jobs))

    def _after_commit(
        self, jobs: Sequence[TriggerJob], outcomes: list[Outcome | BaseException]
    ) -> None:
        if any(isinstance(o, Triggered) and o.due_now and not o.replayed for o in outcomes):
            self._work.notify()
