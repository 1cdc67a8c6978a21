"""Frequency counters behind one port: SQLAlchemy (both databases), bare sqlite3, and memory."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from tidings.db.types import bind_processor
from tidings.rules.models import frequency_counters


class CounterKey(NamedTuple):
    """One recipient's count of marketing messages for one cap key in one period. Ordered (a
    tuple: hashed and compared in C, thousands of times per claim), so that every worker takes
    counter locks in the same order and none waits on another in a cycle."""

    recipient: str
    cap_key: str
    period_start: datetime
    workspace_id: str
    period_end: datetime


class Counters(Protocol):
    """Counts marketing messages, inside the caller's transaction."""

    def prefetch(self, keys: Sequence[CounterKey]) -> None:
        """Says which counters `add` and `remove` are about to move (a batch's), so an
        implementation may read them at once; `flush` then writes what moved."""

    def flush(self) -> None:
        """Writes the counts moved since `prefetch`."""

    def add(self, key: CounterKey) -> int:
        """Counts one more message and returns the count; on PostgreSQL the counter's row
        stays locked until the transaction ends."""

    def remove(self, key: CounterKey) -> None:
        """Counts one message less (it was not sent after all)."""


class SqlCounters:
    """Counters on a SQLAlchemy connection (PostgreSQL), locked in one pass in key order.

    `prefetch` takes every counter of the batch, in CounterKey order, with an upsert that
    creates it at 0 or locks it and returns its count; `add` and `remove` then count in memory
    and `flush` writes the counts back. Taking all the locks in one global order is what keeps
    concurrent claims from deadlocking: counting message by message took them in message order,
    and a profile with caps on two channels could lock them in either order.
    """

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        dialect = conn.dialect.name
        self._insert: Any = (postgresql if dialect == "postgresql" else sqlite_dialect).insert
        self._counts: dict[CounterKey, int] = {}
        self._moved: set[CounterKey] = set()

    def prefetch(self, keys: Sequence[CounterKey]) -> None:
        table = frequency_counters
        for key in sorted(set(keys) - self._counts.keys()):
            statement = self._insert(table).values(
                workspace_id=key.workspace_id,
                recipient=key.recipient,
                cap_key=key.cap_key,
                period_start=key.period_start,
                period_end=key.period_end,
                sent=0,
            )
            statement = statement.on_conflict_do_update(
                index_elements=["workspace_id", "recipient", "cap_key", "period_start"],
                set_={"sent": table.c.sent},
            ).returning(table.c.sent)
            self._counts[key] = int(self.conn.execute(statement).scalar_one())

    def flush(self) -> None:
        if not self._moved:
            return
        table = frequency_counters
        param = sa.bindparam
        self.conn.execute(
            table.update()
            .where(
                table.c.workspace_id == param("w"),
                table.c.recipient == param("r"),
                table.c.cap_key == param("k"),
                table.c.period_start == param("p"),
            )
            .values(sent=param("n")),
            [
                {
                    "w": key.workspace_id,
                    "r": key.recipient,
                    "k": key.cap_key,
                    "p": key.period_start,
                    "n": self._counts[key],
                }
                for key in sorted(self._moved)
            ],
        )
        self._moved.clear()

    def add(self, key: CounterKey) -> int:
        if key not in self._counts:
            self.prefetch([key])
        self._counts[key] += 1
        self._moved.add(key)
        return self._counts[key]

    def remove(self, key: CounterKey) -> None:
        if key in self._counts:
            if self._counts[key] > 0:
                self._counts[key] -= 1
                self._moved.add(key)
            return
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


_CHUNK = 500
_READ = (
    "SELECT recipient, sent FROM frequency_counters WHERE workspace_id = ? AND cap_key = ? "
    "AND period_start = ? AND recipient IN "
)
_WRITE = (
    "INSERT INTO frequency_counters "
    "(workspace_id, recipient, cap_key, period_start, period_end, sent) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (workspace_id, recipient, cap_key, period_start) "
    "DO UPDATE SET sent = excluded.sent"
)


class SqliteCounters:
    """Counters on a bare sqlite3 connection (delivery's claim in the event loop); `time`
    converts a datetime as SQLAlchemy would bind it.

    The caller holds SQLite's write lock for the whole transaction, so no one else moves a
    counter between a read and a write: `prefetch` reads a batch's counters in a query per
    cap and period, `add` and `remove` count in memory, and `flush` writes them back in one
    statement. Per message and per counter, an upsert cost more than the rest of the rules.
    """

    def __init__(self, connection: sqlite3.Connection, time: Callable[[Any], Any]) -> None:
        self.connection = connection
        self.time = time
        self._counts: dict[CounterKey, int] = {}
        self._moved: set[CounterKey] = set()

    def prefetch(self, keys: Sequence[CounterKey]) -> None:
        groups: dict[tuple[str, str, datetime], set[str]] = {}
        for key in keys:
            if key not in self._counts:
                groups.setdefault((key.workspace_id, key.cap_key, key.period_start), set()).add(
                    key.recipient
                )
        ends = {(k.workspace_id, k.cap_key, k.period_start): k.period_end for k in keys}
        for (workspace_id, cap_key, period_start), recipients in groups.items():
            found: dict[str, int] = {}
            ordered = sorted(recipients)
            for offset in range(0, len(ordered), _CHUNK):
                chunk = ordered[offset : offset + _CHUNK]
                found.update(
                    self.connection.execute(
                        f"{_READ}({', '.join('?' * len(chunk))})",
                        (workspace_id, cap_key, self.time(period_start), *chunk),
                    ).fetchall()
                )
            end = ends[(workspace_id, cap_key, period_start)]
            for recipient in recipients:
                key = CounterKey(recipient, cap_key, period_start, workspace_id, end)
                self._counts[key] = found.get(recipient, 0)

    def flush(self) -> None:
        if self._moved:
            self.connection.executemany(
                _WRITE,
                [
                    (
                        key.workspace_id,
                        key.recipient,
                        key.cap_key,
                        self.time(key.period_start),
                        self.time(key.period_end),
                        self._counts[key],
                    )
                    for key in sorted(self._moved)
                ],
            )
            self._moved.clear()

    def add(self, key: CounterKey) -> int:
        if key in self._counts:
            self._counts[key] += 1
            self._moved.add(key)
            return self._counts[key]
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
        if key in self._counts:
            if self._counts[key] > 0:
                self._counts[key] -= 1
                self._moved.add(key)
            return
        self.connection.execute(
            _REMOVE,
            (key.workspace_id, key.recipient, key.cap_key, self.time(key.period_start)),
        )


class MemoryCounters:
    """The in-memory twin, for unit tests of the rules."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str, datetime], int] = {}

    def prefetch(self, keys: Sequence[CounterKey]) -> None:
        pass

    def flush(self) -> None:
        pass

    def add(self, key: CounterKey) -> int:
        slot = (key.workspace_id, key.recipient, key.cap_key, key.period_start)
        self.counts[slot] = self.counts.get(slot, 0) + 1
        return self.counts[slot]

    def remove(self, key: CounterKey) -> None:
        slot = (key.workspace_id, key.recipient, key.cap_key, key.period_start)
        if self.counts.get(slot, 0) > 0:
            self.counts[slot] -= 1


def counters_for(conn: sa.Connection) -> Counters:
    """The counters of a SQLAlchemy connection inside a write transaction. On SQLite the
    transaction holds the database's only write lock, so the batched SqliteCounters are exact
    there too, on the driver's own connection; per-message upserts through SQLAlchemy held the
    lock ten times longer, and every other writer fell back to its slower threaded path."""
    if conn.dialect.name == "sqlite":
        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        bind = bind_processor(frequency_counters.c.period_start.type, conn.dialect)
        return SqliteCounters(driver, bind if bind is not None else (lambda value: value))
    return SqlCounters(conn)


def forget_recipients(conn: sa.Connection, workspace_id: str, recipients: Sequence[str]) -> None:
    """Deletes the counters of recipients (profile ids, addresses): an erasure leaves no
    trace of whom Tidings wrote to."""
    table = frequency_counters
    for offset in range(0, len(recipients), _CHUNK):
        conn.execute(
            table.delete().where(
                table.c.workspace_id == workspace_id,
                table.c.recipient.in_(list(recipients[offset : offset + _CHUNK])),
            )
        )


def move_counts(conn: sa.Connection, workspace_id: str, from_id: str, into_id: str) -> None:
    """Adds a merged profile's counts to the profile it was merged into, so the person's caps
    go on counting what was already sent to either. The source's rows are deleted and read in
    one statement: a claim counting for the source meanwhile waits, then finds no row."""
    table = frequency_counters
    rows = conn.execute(
        table.delete()
        .where(table.c.workspace_id == workspace_id, table.c.recipient == from_id)
        .returning(*table.c)
    ).mappings()
    insert: Any = (postgresql if conn.dialect.name == "postgresql" else sqlite_dialect).insert
    for row in sorted(rows, key=lambda row: (row["cap_key"], row["period_start"])):
        statement = insert(table).values({**row, "recipient": into_id})
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=["workspace_id", "recipient", "cap_key", "period_start"],
                set_={"sent": table.c.sent + statement.excluded.sent},
            )
        )


def purge_ended(conn: sa.Connection, now: datetime) -> int:
    """Forgets the counters of periods that have ended: no cap reads them again."""
    result = conn.execute(frequency_counters.delete().where(frequency_counters.c.period_end <= now))
    return result.rowcount or 0
