"""Listeners' own sqlite3 paths (events.announce_on_sqlite) write what their SQLAlchemy paths do."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tidings.db import Database, migrate
from tidings.events import EventKind, MessageEvent, announce, announce_on_sqlite
from tidings.reports import ledger
from tidings.webhooks.models import webhook_deliveries, webhook_endpoints
from tidings.webhooks.outbox import SUBSCRIPTIONS
from tidings.workspaces import service as workspaces

AT = datetime(2026, 11, 23, 20, 1, 42, 123456, tzinfo=UTC)


def _event(kind: EventKind, execution_id: str, at: datetime = AT, **extra: Any) -> MessageEvent:
    return MessageEvent(
        kind=kind,
        message_id=f"m-{kind.value}-{execution_id}",
        workspace_id="w",
        campaign_id="c",
        version_id="v",
        execution_id=execution_id,
        channel="email",
        occurred_at=at,
        **extra,
    )


# Every kind of counter: plain, with reasons (one longer than a detail keeps), bounces after
# delivered, unique opens and clicks with their links, per-execution ones, an audience
# execution's, one whose kind is looked up (no such execution: not an audience), and a proof.
EVENTS = [
    _event(EventKind.TARGETED, "x1", audience=False),
    _event(EventKind.TARGETED, "x2", audience=True),
    _event(EventKind.SENT, "x2", audience=True),
    _event(EventKind.SENT, "x3"),
    _event(EventKind.EXCLUDED, "x1", reason="no_consent", audience=False),
    _event(EventKind.FAILED, "x1", reason="smtp_550 " + "x" * 100, audience=False),
    _event(EventKind.RETRIED, "x1", reason="connection_error", audience=False),
    _event(EventKind.BOUNCED, "x1", reason="hard", previous_state="delivered", audience=False),
    _event(EventKind.BOUNCED, "x2", reason="soft", audience=True),
    _event(EventKind.OPENED, "x1", first=True, audience=False),
    _event(EventKind.OPENED, "x1", audience=False),
    _event(
        EventKind.CLICKED,
        "x2",
        link_index=3,
        url="https://example.com/a",
        first=True,
        first_on_link=True,
        audience=True,
    ),
    _event(EventKind.CLICKED, "x2", link_index=3, url="https://example.com/a", audience=True),
    _event(EventKind.UNSUBSCRIBED, "x1", audience=False),
    _event(EventKind.SENT, "x1", audience=False, is_proof=True),
    _event(EventKind.SENT, "x1", audience=False, at=AT + timedelta(minutes=1)),
]


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    pair = []
    for name in ("through-sqlalchemy", "through-sqlite3"):
        db = Database(f"sqlite:///{tmp_path}/{name}.db")
        migrate.upgrade(db)
        pair.append(db)
    yield pair[0], pair[1]
    for db in pair:
        db.dispose()


def _rows(db: Database, table: str) -> list[tuple[Any, ...]]:
    # The stored text itself, as sqlite3 reads it back: the same bytes, not just equal values.
    path = db.engine.url.database
    assert path is not None
    with closing(sqlite3.connect(path)) as connection:
        return sorted(connection.execute(f"SELECT * FROM {table}").fetchall())


def test_report_counters_and_links_are_the_same_rows_on_both_paths(
    databases: tuple[Database, Database],
):
    through_sqlalchemy, through_sqlite3 = databases
    for _ in range(2):  # the second time, every counter is there to be added to
        ledger._audience_cache.clear()
        with through_sqlalchemy.write() as conn:
            announce(conn, EVENTS)
        ledger._audience_cache.clear()
        with through_sqlite3.sqlite_write_at_once() as connection:
            assert connection is not None
            announce_on_sqlite(connection, EVENTS)

    counters = _rows(through_sqlite3, "report_counters")
    assert counters == _rows(through_sqlalchemy, "report_counters")
    assert ("w", "c", "v", "x2", "m", "2026-11-23 20:01:00.000000", "clicked", "3", 4) in {
        row[:9] for row in counters
    }
    assert _rows(through_sqlite3, "report_links") == _rows(through_sqlalchemy, "report_links")
    assert len(_rows(through_sqlite3, "report_links")) == 1


def test_a_rolled_back_fast_path_counts_nothing(databases: tuple[Database, Database]):
    _, db = databases
    with pytest.raises(sqlite3.OperationalError), db.sqlite_write_at_once() as connection:
        assert connection is not None
        announce_on_sqlite(connection, EVENTS)
        raise sqlite3.OperationalError("rolled back")
    assert _rows(db, "report_counters") == []


def test_the_outbox_writes_on_the_fast_path_only_what_endpoints_subscribe_to(
    databases: tuple[Database, Database],
):
    _, db = databases
    workspace = workspaces.create_workspace(db, "hooks")
    other = workspaces.create_workspace(db, "quiet")
    now = datetime.now(UTC)
    with db.write() as conn:
        conn.execute(
            webhook_endpoints.insert().values(
                id="endpoint",
                workspace_id=workspace["id"],
                url="https://hooks.example.com/tidings",
                event_types=["sent"],
                format="standard",
                enabled=True,
                secret="s" * 32,
                created_at=now,
                updated_at=now,
            )
        )
    SUBSCRIPTIONS.invalidate()

    def announced(*events: MessageEvent) -> int:
        with db.sqlite_write_at_once() as connection:
            assert connection is not None
            announce_on_sqlite(connection, events)
        with db.read() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(webhook_deliveries)
                ).scalar_one()
            )

    def sent(workspace_id: str, kind: EventKind = EventKind.SENT) -> MessageEvent:
        return MessageEvent(
            kind=kind,
            message_id=f"m-{workspace_id}-{kind.value}",
            workspace_id=workspace_id,
            campaign_id="c",
            version_id="v",
            execution_id="x",
            channel="email",
            occurred_at=now,
            audience=False,
        )

    # The first loads the subscriptions, the others find them in the cache.
    seen = [
        announced(sent(workspace["id"])),
        announced(sent(workspace["id"])),
        announced(sent(workspace["id"], EventKind.DELIVERED)),
        announced(sent(other["id"])),
        announced(sent(other["id"]), sent(workspace["id"])),
    ]
    assert seen == [1, 2, 2, 2, 3]
