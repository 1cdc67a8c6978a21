"""Group commits: one writer thread turns many concurrent small writes into few transactions.

SQLite has one writer at a time, and a commit costs far more than the rows it carries, so
requests that each opened their own transaction spent their time queueing for the lock (in
SQLite's busy handler, which sleeps instead of waking on release). Here a request hands its work
to the writer and waits; the writer takes everything that arrived while it was committing the
previous batch and applies it in one transaction. Under load batches grow by themselves; alone,
a request pays one transaction as before.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, Protocol, TypeVar

import sqlalchemy as sa

from tidings.db.engine import Database

log = logging.getLogger("tidings.db")

Job = TypeVar("Job")
Result = TypeVar("Result")
Result_contra = TypeVar("Result_contra", contravariant=True)

# Applies a batch inside one transaction. Each job's outcome is its result or the exception
# meant for its caller alone (a validation error); raising fails the whole batch instead.
ApplyBatch = Callable[[sa.Connection, Sequence[Job]], list["Result | BaseException"]]
AfterCommit = Callable[[Sequence[Job], list["Result | BaseException"]], None]

_STOP = object()


class GroupCommitter(Generic[Job, Result]):
    def __init__(
        self,
        db: Database,
        apply: ApplyBatch[Job, Result],
        *,
        max_batch: int = 256,
        after_commit: AfterCommit[Job, Result] | None = None,
        name: str = "group-commit",
    ) -> None:
        self._db = db
        self._apply = apply
        self._after_commit = after_commit
        self._max_batch = max_batch
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Job, Future[Result]] | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, job: Job) -> Future[Result]:
        """Queues a job; the future resolves once its transaction committed (or failed)."""
        future: Future[Result] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put((job, future))
        return future

    def close(self) -> None:
        """Commits what was queued, then stops the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[tuple[Job, Future[Result]]] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)  # type: ignore[arg-type]
                if stopping or len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._commit(batch)
                except BaseException as exc:
                    log.exception("%s: a batch failed", self._name)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)

    def _commit(self, batch: list[tuple[Job, Future[Result]]]) -> None:
        jobs = [job for job, _ in batch]
        try:
            with self._db.write() as conn:
                outcomes = self._apply(conn, jobs)
        except Exception as exc:
            if len(batch) > 1:
                # One job's conflict (a row another process inserted meanwhile) must not
                # fail the others: each gets its own transaction.
                for single in batch:
                    self._commit([single])
                return
            outcomes = [exc]
        else:
            if self._after_commit is not None:
                try:
                    self._after_commit(jobs, outcomes)
                except Exception:
                    log.exception("%s: after-commit hook failed", self._name)
        settle([future for _, future in batch], outcomes)


class _Settable(Protocol[Result_contra]):
    def done(self) -> bool: ...
    def set_result(self, result: Result_contra, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


def settle(
    futures: Sequence[_Settable[Result]], outcomes: Sequence[Result | BaseException]
) -> None:
    """Hands each caller its outcome (threading's or asyncio's futures alike). A caller that
    stopped waiting (its request was cancelled) finds its job committed all the same; nobody
    is left to tell."""
    for future, outcome in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
