"""Profile imports as jobs: their state and progress in the database, readable from any process.

A job is `queued` (the console copied the file, no thread has started it yet), `running`,
then `succeeded` or `failed`. Progress (bytes read, lines, rows created, updated, unchanged,
rejected, and the first rejected rows) is written in the transaction of each batch the import
service commits, so the counts are exactly what is committed. A process that dies mid-import
writes nothing more: a job whose `updated_at` is older than the stale threshold is turned
`interrupted` when it is read. The rows it committed stay; importing the file again is
harmless (rows upsert by identity). A long import that a slow upload keeps between batches
writes a heartbeat (bytes read) every HEARTBEAT_SECONDS, and a progress write of a job
wrongly thought interrupted (a pause longer than the threshold) sets it `running` again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from tidings.clock import utcnow
from tidings.db import Database
from tidings.errors import FieldError, NotFound
from tidings.ids import new_id
from tidings.pagination import keyset_page
from tidings.profiles.imports import Chunk, ImportReport
from tidings.profiles.models import import_jobs
from tidings.profiles.schemas import ImportFormat

# Rejected rows kept with the job; the full count is rows_rejected.
SAMPLED = 100
LISTED = 20
MAX_ERROR_CHARS = 2000
MAX_ERROR_DETAILS = 50
# Between batch commits, how often reading the file records its bytes (a heartbeat).
HEARTBEAT_SECONDS = 10.0
DEFAULT_STALE_AFTER = timedelta(minutes=5)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)
# A job read as interrupted while its process was only slow comes back to life when it writes.
_ALIVE = (JobState.RUNNING.value, JobState.INTERRUPTED.value)
_REVIVED: dict[str, Any] = {"state": JobState.RUNNING.value, "error": None, "finished_at": None}


def create(
    db: Database,
    workspace_id: str,
    *,
    source: str,
    fmt: ImportFormat,
    created_by: str | None = None,
    file_name: str | None = None,
    bytes_total: int | None = None,
    state: JobState = JobState.QUEUED,
) -> str:
    """A new job, queued (or running at once, for an import that starts in this request)."""
    now = utcnow()
    job_id = new_id()
    with db.write() as conn:
        conn.execute(
            import_jobs.insert().values(
                id=job_id,
                workspace_id=workspace_id,
                created_by=created_by,
                source=source,
                file_name=file_name[:200] if file_name else None,
                format=fmt.value,
                state=state.value,
                bytes_total=bytes_total,
                bytes_read=0,
                lines=0,
                rows_created=0,
                rows_updated=0,
                rows_unchanged=0,
                rows_rejected=0,
                rejected_sample=[],
                created_at=now,
                started_at=now if state is JobState.RUNNING else None,
                updated_at=now,
            )
        )
    return job_id


def start(db: Database, job_id: str) -> None:
    now = utcnow()
    with db.write() as conn:
        conn.execute(
            import_jobs.update()
            .where(import_jobs.c.id == job_id)
            .values(started_at=now, updated_at=now, **_REVIVED)
        )


def _report_values(report: ImportReport) -> dict[str, Any]:
    return {
        "lines": report.lines,
        "rows_created": report.created,
        "rows_updated": report.updated,
        "rows_unchanged": report.unchanged,
        "rows_rejected": report.rejected_total,
        "rejected_sample": sorted(report.rejected, key=lambda row: int(row["line"]))[:SAMPLED],
    }


def record_progress(
    conn: sa.Connection, job_id: str, report: ImportReport, bytes_read: int
) -> None:
    """Inside the transaction of the batch the report counts: the job's counts are what is
    committed, neither before nor after it."""
    conn.execute(
        import_jobs.update()
        .where(import_jobs.c.id == job_id, import_jobs.c.state.in_(_ALIVE))
        .values(
            bytes_read=bytes_read,
            updated_at=utcnow(),
            **_REVIVED,
            **_report_values(report),
        )
    )


def heartbeat(db: Database, job_id: str, bytes_read: int) -> None:
    with db.write() as conn:
        conn.execute(
            import_jobs.update()
            .where(import_jobs.c.id == job_id, import_jobs.c.state.in_(_ALIVE))
            .values(bytes_read=bytes_read, updated_at=utcnow(), **_REVIVED)
        )


def succeed(db: Database, job_id: str, report: ImportReport, bytes_read: int) -> None:
    now = utcnow()
    with db.write() as conn:
        conn.execute(
            import_jobs.update()
            .where(import_jobs.c.id == job_id)
            .values(
                state=JobState.SUCCEEDED.value,
                # A reader may have taken the job for interrupted during a long pause.
                error=None,
                bytes_read=bytes_read,
                finished_at=now,
                updated_at=now,
                **_report_values(report),
            )
        )


def fail(
    db: Database,
    job_id: str,
    error: str,
    errors: Sequence[FieldError] = (),
    bytes_read: int | None = None,
) -> None:
    """The import stopped: what it committed stays, and so do the counts written with it."""
    now = utcnow()
    values: dict[str, Any] = {
        "state": JobState.FAILED.value,
        "error": error[:MAX_ERROR_CHARS],
        "error_details": [e.as_dict() for e in errors[:MAX_ERROR_DETAILS]] or None,
        "finished_at": now,
        "updated_at": now,
    }
    if bytes_read is not None:
        values["bytes_read"] = bytes_read
    with db.write() as conn:
        conn.execute(import_jobs.update().where(import_jobs.c.id == job_id).values(**values))


class Tracker:
    """The progress of one running job: counts the bytes of the chunks it passes on (with a
    heartbeat between batches) and writes the report in each batch's transaction."""

    def __init__(self, db: Database, job_id: str, heartbeat_seconds: float = HEARTBEAT_SECONDS):
        self.db = db
        self.job_id = job_id
        self.bytes_read = 0
        self.heartbeat_seconds = heartbeat_seconds
        self._last_write = utcnow()

    def chunks(self, source: Iterable[Chunk]) -> Iterator[Chunk]:
        for chunk in source:
            self.bytes_read += len(chunk)
            now = utcnow()
            if (now - self._last_write).total_seconds() >= self.heartbeat_seconds:
                self._last_write = now
                heartbeat(self.db, self.job_id, self.bytes_read)
            yield chunk

    def on_commit(self, conn: sa.Connection, report: ImportReport) -> None:
        self._last_write = utcnow()
        record_progress(conn, self.job_id, report, self.bytes_read)


def purge_finished(conn: sa.Connection, cutoff: datetime, limit: int) -> int:
    """Deletes up to `limit` jobs that ended before `cutoff`: their samples of rejected rows
    quote the file's cells (addresses, names), so retention takes them with the rest. An
    unfinished job nothing has written since the cutoff died with its process, whether or not
    a reader has marked it interrupted."""
    ended = (
        sa.select(import_jobs.c.id)
        .where(
            sa.or_(
                sa.and_(import_jobs.c.state.not_in(UNFINISHED), import_jobs.c.finished_at < cutoff),
                sa.and_(import_jobs.c.state.in_(UNFINISHED), import_jobs.c.updated_at < cutoff),
            )
        )
        .limit(limit)
    )
    result = conn.execute(import_jobs.delete().where(import_jobs.c.id.in_(ended)))
    return result.rowcount or 0


# ---------------------------------------------------------------- reading


def interrupt_stale(
    conn: sa.Connection, workspace_id: str, stale_after: timedelta, now: datetime
) -> int:
    """Unfinished jobs of the workspace that nothing has written for `stale_after`: their
    process died (a restart, a crash). They become `interrupted`; their rows stay."""
    result = conn.execute(
        import_jobs.update()
        .where(
            import_jobs.c.workspace_id == workspace_id,
            import_jobs.c.state.in_(UNFINISHED),
            import_jobs.c.updated_at < now - stale_after,
        )
        .values(
            state=JobState.INTERRUPTED.value,
            error="the import stopped: its process ended or stopped writing progress",
            finished_at=now,
        )
    )
    return result.rowcount or 0


def _is_stale(row: dict[str, Any], stale_after: timedelta, now: datetime) -> bool:
    return row["state"] in UNFINISHED and row["updated_at"] < now - stale_after


def _page(
    conn: sa.Connection, workspace_id: str, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    query = sa.select(import_jobs).where(import_jobs.c.workspace_id == workspace_id)
    rows, next_cursor = keyset_page(conn, query, import_jobs.c.id, cursor, limit, newest_first=True)
    return [dict(row) for row in rows], next_cursor


def page(
    db: Database,
    workspace_id: str,
    cursor: str | None = None,
    limit: int = LISTED,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
) -> tuple[list[dict[str, Any]], str | None]:
    """The workspace's jobs, newest first, and the cursor of the next page. A stale job
    among them is turned interrupted first (rare: then the page is read in a write)."""
    now = utcnow()
    with db.read() as conn:
        rows, next_cursor = _page(conn, workspace_id, cursor, limit)
    if not any(_is_stale(row, stale_after, now) for row in rows):
        return rows, next_cursor
    with db.write() as conn:
        interrupt_stale(conn, workspace_id, stale_after, now)
        return _page(conn, workspace_id, cursor, limit)


def recent(
    db: Database,
    workspace_id: str,
    limit: int = LISTED,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
) -> list[dict[str, Any]]:
    """The workspace's newest jobs first."""
    return page(db, workspace_id, None, limit, stale_after)[0]


def get(
    db: Database, workspace_id: str, job_id: str, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> dict[str, Any]:
    statement = sa.select(import_jobs).where(
        import_jobs.c.workspace_id == workspace_id, import_jobs.c.id == job_id
    )
    now = utcnow()
    with db.read() as conn:
        rows = [dict(row) for row in conn.execute(statement).mappings()]
    if rows and _is_stale(rows[0], stale_after, now):
        with db.write() as conn:
            interrupt_stale(conn, workspace_id, stale_after, now)
            rows = [dict(row) for row in conn.execute(statement).mappings()]
    if not rows:
        raise NotFound(f"no import '{job_id}' in this workspace")
    return rows[0]


def percent(job: dict[str, Any]) -> int:
    """How much of its file the job has read, 0 to 100 (100 only once it succeeded)."""
    if job["state"] == JobState.SUCCEEDED:
        return 100
    total = job["bytes_total"]
    if not total:
        return 0
    return int(min(99, job["bytes_read"] * 100 // total))
