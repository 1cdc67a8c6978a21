"""The API's way in: trigger requests committed together by one writer (group commits)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future

import sqlalchemy as sa

from tidings.db import Database
from tidings.db.group_commit import GroupCommitter, settle
from tidings.executions import service
from tidings.executions.service import Outcome, Triggered, TriggerJob
from tidings.executions.store import SqlAlchemyStore, SqliteStore
from tidings.signals import WorkSignal

MAX_BATCH = 256


class TriggerAcceptor:
    """Checks a request, hands it to a batch and waits for its commit: the 202 goes out only
    once the execution and its messages are in the database.

    Requests that arrive in the same turn of the event loop form a batch. On SQLite the batch
    is committed right there, in the loop's thread, when the database is free: handing it to
    a writer thread cost more (two threads taking turns at the GIL) than the commit itself,
    about a quarter of the CPU of a call. When the database is busy (another thread or process
    is writing), or on PostgreSQL (a network round trip must not hold up the loop), the batch
    goes to the writer thread, which commits whatever has gathered meanwhile together.
    """

    def __init__(self, db: Database, work: WorkSignal) -> None:
        self._db = db
        self._work = work
        self._pending: list[tuple[TriggerJob, asyncio.Future[Outcome]]] = []
        self._committer: GroupCommitter[TriggerJob, Outcome] = GroupCommitter(
            db,
            self._apply,
            max_batch=MAX_BATCH,
            after_commit=self._after_commit,
            name="trigger-writer",
        )

    async def accept(self, job: TriggerJob) -> Triggered:
        """Commits a request `service.prepare` checked; raises what the batch found wrong."""
        with service.IN_FLIGHT.hold(job):
            if self._db.is_sqlite:
                outcome = await self._in_this_turn(job)
            else:
                outcome = await self._by_the_writer(job)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _by_the_writer(self, job: TriggerJob) -> asyncio.Future[Outcome]:
        # Not asyncio.wrap_future: a cancelled request must not cancel the writer's future
        # (the job is committed anyway, and the writer resolves every future of its batch).
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        _chain(self._committer.submit(job), future)
        return future

    def _in_this_turn(self, job: TriggerJob) -> asyncio.Future[Outcome]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((job, future))
        if len(self._pending) == 1:
            loop.call_soon(self._commit_turn)
        return future

    def _commit_turn(self) -> None:
        batch, self._pending = self._pending, []
        jobs = [job for job, _ in batch]
        outcomes: list[Outcome | BaseException] | None = None
        try:
            with self._db.sqlite_write_at_once() as connection:
                if connection is not None:
                    store = SqliteStore(connection, self._db.engine.dialect)
                    outcomes = list(service.accept_batch(store, jobs))
        except Exception:
            # The batch's transaction failed as a whole (e.g. a row inserted meanwhile by
            # another process): the writer thread retries each request on its own.
            outcomes = None
        if outcomes is None:
            for job, future in batch:
                try:
                    _chain(self._committer.submit(job), future)
                except RuntimeError as exc:  # the writer is closed: the process is stopping
                    if not future.done():
                        future.set_exception(exc)
            return
        self._after_commit(jobs, outcomes)
        settle([future for _, future in batch], outcomes)

    def close(self) -> None:
        self._committer.close()

    @staticmethod
    def _apply(conn: sa.Connection, jobs: Sequence[TriggerJob]) -> list[Outcome | BaseException]:
        return list(service.accept_batch(SqlAlchemyStore(conn), jobs))

    def _after_commit(
        self, jobs: Sequence[TriggerJob], outcomes: list[Outcome | BaseException]
    ) -> None:
        if any(isinstance(o, Triggered) and o.due_now and not o.replayed for o in outcomes):
            self._work.notify()


def _chain(source: Future[Outcome], target: asyncio.Future[Outcome]) -> None:
    """Completes the loop's future with the writer thread's answer."""
    loop = target.get_loop()

    def copy(done: Future[Outcome]) -> None:
        if target.cancelled():
            return
        error = done.exception()
        if error is not None:
            target.set_exception(error)
        else:
            target.set_result(done.result())

    source.add_done_callback(lambda done: loop.call_soon_threadsafe(copy, done))
