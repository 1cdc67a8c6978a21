"""Frequency counters behind one port: SQLAlchemy (both databases), bare sqlite3, and memory."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from tidings.rules.models import frequency_counters


@dataclass(frozen=True, slots=True, order=True)
class CounterKey:
    """One recipient's count of marketing messages for one cap key in one period. Ordered, so
    that every worker takes counter locks in the same order and none waits on another in a
    cycle."""

    recipient: str
    cap_key: str
    period_start: datetime
    workspace_id: str
    period_end: datetime


class Counters(Protocol):
    """Counts marketing messages, inside the caller's transaction."""

    def add(self, key: CounterKey) -> int:
        """Counts one more message and returns the count; on PostgreSQL the counter's row
        stays locked until the transaction ends."""

    def remove(self, key: CounterKey) -> None:
        """Counts one message less (it was not sent after all)."""


class SqlCounters:
    """Counters on a SQLAlchemy connection: an upsert that returns the new count."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        dialect = conn.dialect.name
        self._insert: Any = (postgresql if dialect == "postgresql" else sqlite_dialect).insert

    def add(self, key: CounterKey) -> int:
        table = frequency_counters
        statement = self._insert(table).values(
            workspace_id=key.workspace_id,
            recipient=key.recipient,
            cap_key=key.cap_key,
            period_start=key.period_start,
            period_end=key.period_end,
            sent=1,
        )
        statement = statement.on_conflict_do_update(
            index_elements=["workspace_id", "recipient", "cap_key", "period_start"],
            set_={"sent": table.c.sent + 1},
        ).returning(table.c.sent)
        return int(self.conn.execute(statement).scalar_one())

    def remove(self, key: CounterKey) -> None:
        table = frequency_counters
        self.conn.execute(
            table.update()
            .where(
                table.c.workspace_id == key.workspace_id,
                table.c.recipient == key.recipient,
                table.c.cap_key == key.cap_key,
                table.c.period_start == key.period_start,
                table.c.sent > 0,
            )
            .values(sent=table.c.sent - 1)
        )


_ADD = (
    "INSERT INTO frequency_counters "
    "(workspace_id, recipient, cap_key, period_start, period_end, sent) "
    "VALUES (?, ?, ?, ?, ?, 1) "
    "ON CONFLICT (workspace_id, recipient, cap_key, period_start) "
    "DO UPDATE SET sent = sent + 1 RETURNING sent"
)
_REMOVE = (
    "UPDATE frequency_counters SET sent = sent - 1 WHERE workspace_id = ? AND recipient = ? "
    "AND cap_key = ? AND period_start = ? AND sent > 0"
)


class SqliteCounters:
    """Counters on a bare sqlite3 connection (delivery's claim in the event loop); `time`
    converts a datetime as SQLAlchemy would bind it."""

    def __init__(self, connection: sqlite3.Connection, time: Callable[[Any], Any]) -> None:
        self.connection = connection
        self.time = time

    def add(self, key: CounterKey) -> int:
        row = self.connection.execute(
            _ADD,
            (
                key.workspace_id,
                key.recipient,
                key.cap_key,
                self.time(key.period_start),
                self.time(key.period_end),
            ),
        ).fetchone()
        assert row is not None  # RETURNING of an upsert always gives the row
        return int(row[0])

    def remove(self, key: CounterKey) -> None:
        self.connection.execute(
            _REMOVE,
            (key.workspace_id, key.recipient, key.cap_key, self.time(key.period_start)),
        )


class MemoryCounters:
    """The in-memory twin, for unit tests of the rules."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str, datetime], int] = {}

    def add(self, key: CounterKey) -> int:
        slot = (key.workspace_id, key.recipient, key.cap_key, key.period_start)
        self.counts[slot] = self.counts.get(slot, 0) + 1
        return self.counts[slot]

    def remove(self, key: CounterKey) -> None:
        slot = (key.workspace_id, key.recipient, key.cap_key, key.period_start)
        if self.counts.get(slot, 0) > 0:
            self.counts[slot] -= 1


def purge_ended(conn: sa.Connection, now: datetime) -> int:
    """Forgets the counters of periods that have ended: no cap reads them again."""
    result = conn.execute(frequency_counters.delete().where(frequency_counters.c.period_end <= now))
    return result.rowcount or 0
