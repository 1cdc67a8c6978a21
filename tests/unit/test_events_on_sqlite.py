"""Events announced on a bare sqlite3 connection leave its transaction to the caller."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from tidings import events
from tidings.events import EventKind, MessageEvent

EVENT = MessageEvent(
    kind=EventKind.SENT,
    message_id="m",
    workspace_id="w",
    campaign_id="c",
    version_id="v",
    execution_id="x",
    channel="email",
    occurred_at=datetime(2026, 11, 23, tzinfo=UTC),
)


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> Iterator[sqlite3.Connection]:
    def insert_twice(conn: sa.Connection, batch: Sequence[MessageEvent]) -> None:
        conn.execute(sa.text("INSERT INTO seen VALUES (:id)"), {"id": batch[0].message_id})

    monkeypatch.setattr(events, "_listeners", lambda: (insert_twice,))
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute("CREATE TABLE seen (id TEXT PRIMARY KEY)")
    connection.execute("BEGIN")
    yield connection
    connection.close()


def test_a_listener_writes_in_the_callers_transaction(connection: sqlite3.Connection):
    events.announce_on_sqlite(connection, [EVENT])
    assert connection.in_transaction
    connection.execute("ROLLBACK")
    assert connection.execute("SELECT count(*) FROM seen").fetchone() == (0,)


def test_a_listeners_database_error_reaches_the_caller_as_such(connection: sqlite3.Connection):
    events.announce_on_sqlite(connection, [EVENT])
    with pytest.raises(sa.exc.IntegrityError) as raised:
        events.announce_on_sqlite(connection, [EVENT])
    # sqlite3's own error, and the caller's transaction still open for it to roll back.
    assert isinstance(raised.value.orig, sqlite3.IntegrityError)
    assert connection.in_transaction
    assert connection.execute("SELECT count(*) FROM seen").fetchone() == (1,)
