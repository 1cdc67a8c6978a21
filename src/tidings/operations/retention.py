"""Data retention: personal data of finished messages is cleared after TIDINGS_RETENTION_DAYS.

A message that reached a final state (sent, delivered, bounced, excluded, failed, cancelled)
more than N days ago loses its address, recipient, context, profile data and error text; it
keeps its ids, channel, campaign, execution, state, reason, attempts and times, so counts and
reports stay right (as after an erasure, which uses the placeholder "erased" where retention
writes "expired"). Audience executions finished N days ago lose their context, and finished
feedback webhook deliveries older than that (their payloads name the recipient) are deleted,
and so are profile import jobs that ended before then (their rejected rows quote the file).
Idempotency keys are deleted once expired (24 hours), whatever N is: they are of no use after.
The consent history (consent_events) is left alone whatever its age: it is the proof of consent
operators must keep while the profile exists; an erasure deletes it with the person.

The worker runs `Retention.run` every RETENTION_SECONDS, in transactions of RETENTION_BATCH
rows, for at most RETENTION_BUDGET_SECONDS a run, so it never holds a write lock for long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tidings.clock import utcnow
from tidings.db import Database
from tidings.delivery.state import TERMINAL
from tidings.errors import Unavailable
from tidings.executions.models import executions, idempotency_keys, messages
from tidings.executions.state import ExecutionKind
from tidings.profiles import import_jobs
from tidings.webhooks import service as webhooks

RETENTION_SECONDS = 600.0
RETENTION_BATCH = 1000
RETENTION_BUDGET_SECONDS = 30.0
# After a run that ran out of time (retention switched on over a large history), the next
# one starts this much later instead of RETENTION_SECONDS.
RETENTION_CATCH_UP_SECONDS = 30.0
EXPIRED_RECIPIENT = "expired"
# Finding where cleared messages end after a start: rows read per probe, and how close.
PROBE_ROWS = 20
PROBE_RESOLUTION = timedelta(seconds=1)
log = logging.getLogger("tidings.retention")
# Recipients of messages already stripped of personal data (by retention or by an erasure).
_STRIPPED = (EXPIRED_RECIPIENT, "erased")
_EXPIRED_MESSAGE: dict[str, Any] = {
    "recipient_id": EXPIRED_RECIPIENT,
    "address": None,
    "context": {},
    "profile_data": None,
    "last_error": None,
}


@dataclass
class RetentionReport:
    messages: int = 0
    executions: int = 0
    idempotency_keys: int = 0
    webhook_deliveries: int = 0
    import_jobs: int = 0
    # False when the run stopped on its time budget with work left.
    complete: bool = True

    def __bool__(self) -> bool:
        return bool(
            self.messages
            or self.executions
            or self.idempotency_keys
            or self.webhook_deliveries
            or self.import_jobs
        )


@dataclass
class Retention:
    """One per worker. Remembers, per state, the due time up to which it has cleared
    messages, so a run does not walk again the rows earlier runs cleared.

    A message moving into a final state more than N days after its last try (a bounce that
    late) lies below what was cleared and is left as it is; so are the rare messages that an
    erasure cleared among ones not yet cleared, which the bisection may take for the end."""

    db: Database
    days: int
    batch: int = RETENTION_BATCH
    budget_seconds: float = RETENTION_BUDGET_SECONDS
    # Set when the worker stops: the run ends after the batch in hand.
    stopping: bool = False
    _cleared_up_to: dict[str, datetime] = field(default_factory=dict)

    def _go_on(self, deadline: float) -> bool:
        return not self.stopping and time.monotonic() < deadline

    def run(self, now: datetime) -> RetentionReport:
        report = RetentionReport()
        deadline = time.monotonic() + self.budget_seconds
        report.idempotency_keys = self._forget_expired_keys(now, deadline)
        if self.days > 0:
            cutoff = now - timedelta(days=self.days)
            for state in sorted(TERMINAL):
                report.messages += self._clear_messages(state.value, cutoff, deadline)
            report.executions = self._clear_executions(cutoff, deadline)
            report.webhook_deliveries = self._purge_webhook_deliveries(cutoff, deadline)
            report.import_jobs = self._purge_import_jobs(cutoff, deadline)
        report.complete = self._go_on(deadline)
        return report

    def _clear_messages(self, state: str, cutoff: datetime, deadline: float) -> int:
        """Walks the (state, due_at) index upwards, from where the last batch ended (after a
        start: from where cleared messages end, found by bisection), to the cutoff. A final
        message's due time is when it was last tried: N days after that, its data goes."""
        cleared = 0
        while self._go_on(deadline):
            with self.db.write() as conn:
                if state not in self._cleared_up_to:
                    start = self._first_uncleared(conn, state, cutoff)
                    if start is None:
                        return cleared
                    self._cleared_up_to[state] = start
                query = (
                    sa.select(messages.c.id, messages.c.due_at)
                    .where(
                        messages.c.state == state,
                        messages.c.due_at >= self._cleared_up_to[state],
                        messages.c.due_at < cutoff,
                        messages.c.recipient_id.not_in(_STRIPPED),
                    )
                    .order_by(messages.c.due_at)
                    .limit(self.batch)
                )
                rows = conn.execute(query).all()
                if rows:
                    conn.execute(
                        messages.update()
                        .where(messages.c.id.in_([row.id for row in rows]))
                        .values(**_EXPIRED_MESSAGE)
                    )
            if rows:
                self._cleared_up_to[state] = rows[-1].due_at
                cleared += len(rows)
            if len(rows) < self.batch:
                break
        return cleared

    def _first_uncleared(
        self, conn: sa.Connection, state: str, cutoff: datetime
    ) -> datetime | None:
        """About where the messages earlier runs cleared end: runs clear upwards, so below
        that point all are cleared. Found with ~30 probes of PROBE_ROWS index entries instead
        of a walk over millions of cleared rows; None when nothing is old enough."""
        low: datetime | None = conn.execute(
            sa.select(sa.func.min(messages.c.due_at)).where(messages.c.state == state)
        ).scalar_one()
        if low is None or low >= cutoff:
            return None

        def all_cleared_from(moment: datetime) -> bool:
            recipients = conn.execute(
                sa.select(messages.c.recipient_id)
                .where(
                    messages.c.state == state,
                    messages.c.due_at >= moment,
                    messages.c.due_at < cutoff,
                )
                .order_by(messages.c.due_at)
                .limit(PROBE_ROWS)
            ).scalars()
            seen = list(recipients)
            return bool(seen) and all(recipient in _STRIPPED for recipient in seen)

        high = cutoff
        if not all_cleared_from(low):
            return low
        while high - low > PROBE_RESOLUTION:
            middle = low + (high - low) / 2
            if all_cleared_from(middle):
                low = middle
            else:
                high = middle
        return low

    def _clear_executions(self, cutoff: datetime, deadline: float) -> int:
        """The context of audience executions that finished before `cutoff` (the others keep
        none: each message has its own). Cleared means SQL NULL; the others hold JSON null."""
        cleared = 0
        while self._go_on(deadline):
            with self.db.write() as conn:
                ids = (
                    conn.execute(
                        sa.select(executions.c.id)
                        .where(
                            executions.c.kind == ExecutionKind.AUDIENCE.value,
                            executions.c.finished_at < cutoff,
                            executions.c.context.is_not(None),
                        )
                        .limit(self.batch)
                    )
                    .scalars()
                    .all()
                )
                if ids:
                    conn.execute(
                        executions.update()
                        .where(executions.c.id.in_(ids))
                        .values(context=sa.null())
                    )
            cleared += len(ids)
            if len(ids) < self.batch:
                break
        return cleared

    def _purge_webhook_deliveries(self, cutoff: datetime, deadline: float) -> int:
        """Finished feedback webhook deliveries (their payloads name the recipient)."""
        purged = 0
        while self._go_on(deadline):
            with self.db.write() as conn:
                count = webhooks.purge_finished(conn, cutoff, self.batch)
            purged += count
            if count < self.batch:
                break
        return purged

    def _purge_import_jobs(self, cutoff: datetime, deadline: float) -> int:
        purged = 0
        while self._go_on(deadline):
            with self.db.write() as conn:
                count = import_jobs.purge_finished(conn, cutoff, self.batch)
            purged += count
            if count < self.batch:
                break
        return purged

    def _forget_expired_keys(self, now: datetime, deadline: float) -> int:
        forgotten = 0
        key = sa.tuple_(idempotency_keys.c.workspace_id, idempotency_keys.c.key)
        while self._go_on(deadline):
            with self.db.write() as conn:
                expired = (
                    sa.select(idempotency_keys.c.workspace_id, idempotency_keys.c.key)
                    .where(idempotency_keys.c.expires_at <= now)
                    .limit(self.batch)
                )
                count = conn.execute(idempotency_keys.delete().where(key.in_(expired))).rowcount
            forgotten += count or 0
            if (count or 0) < self.batch:
                break
        return forgotten


class RetentionJob:
    """Runs `Retention` beside a worker's loop, in a thread, every RETENTION_SECONDS: its
    batches take turns with the claims instead of holding the loop up."""

    def __init__(self, db: Database, days: int, interval: float = RETENTION_SECONDS) -> None:
        self.retention = Retention(db, days)
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._started = float("-inf")
        self._wait = interval

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def maybe_start(self) -> None:
        """Starts a run when the last one ended and the interval has passed (first: now)."""
        if self.running:
            return
        if time.monotonic() - self._started < self._wait:
            return
        self._started = time.monotonic()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            report = await asyncio.to_thread(self.retention.run, utcnow())
            self._wait = self.interval if report.complete else RETENTION_CATCH_UP_SECONDS
        except Unavailable:
            log.warning("retention not applied: database unavailable")
            return
        except Exception:
            log.exception("applying data retention failed")
            return
        if report:
            log.info(
                "retention applied",
                extra={
                    "messages_cleared": report.messages,
                    "executions_cleared": report.executions,
                    "idempotency_keys_deleted": report.idempotency_keys,
                    "webhook_deliveries_deleted": report.webhook_deliveries,
                    "import_jobs_deleted": report.import_jobs,
                },
            )

    async def finish(self) -> None:
        """Stops after the batch in hand (for the worker's shutdown)."""
        self.retention.stopping = True
        if self._task is not None:
            await self._task
