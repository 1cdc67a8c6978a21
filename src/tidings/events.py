"""What happened to messages, announced inside the transaction that made it happen.

Every place that creates a message or moves it to another state (the trigger acceptor, the
fan-out, a worker's record of a batch, provider feedback, tracking, unsubscribes, cancels and
erasures) builds `MessageEvent`s and calls `announce(conn, events)` on the connection of its
own write. The listeners (reports' counters, the feedback webhooks' outbox, metrics) write in
that same transaction, so a report never counts what was rolled back and a webhook never
reports what did not happen. Listeners are listed here, explicitly, in the order they run.

An event is announced only for a change that was applied: a record that touched no row (the
message's lease had expired and another worker owns it) announces nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa


class EventKind(StrEnum):
    """The kinds of events. `targeted` is a message created; `sent` .. `cancelled` are moves
    into a state; `retried` a transient failure queued again; the rest are recipients' acts."""

    TARGETED = "targeted"
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    EXCLUDED = "excluded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRIED = "retried"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    COMPLAINED = "complained"


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, five
# times the cost, and a worker builds one per message it records. Listeners must not change one.
@dataclass(slots=True)
class MessageEvent:
    kind: EventKind
    message_id: str
    workspace_id: str
    campaign_id: str
    version_id: str
    execution_id: str
    channel: str
    occurred_at: datetime
    # Excluded, failed, cancelled, retried: the reason code; bounced: "hard" or "soft".
    reason: str | None = None
    # The state the message left (a bounce after `delivered` moves it out of delivered).
    previous_state: str | None = None
    # Clicks: the tracked link's index and where it led.
    link_index: int | None = None
    url: str | None = None
    # Opens and clicks: the first of its kind for this message (unique counts).
    first: bool = False
    # Clicks: the first click of this message on this link (unique counts per link).
    first_on_link: bool = False
    # The message belongs to an audience execution (reports keep counters per such
    # execution); None: the announcer does not know, and a listener that cares looks it up.
    audience: bool | None = None
    # Proofs are announced too; listeners that count leave them out.
    is_proof: bool = False


Listener = Callable[[sa.Connection, Sequence[MessageEvent]], None]
# A listener's own way with a bare sqlite3 connection inside the caller's transaction (the fast
# paths): answers whether it did the work; if not, the listener itself runs on an SQLAlchemy
# view of that connection. Through SQLAlchemy a listener's one statement cost ~20 µs more.
SqliteListener = Callable[[sqlite3.Connection, Sequence[MessageEvent]], bool]


_LISTENERS: tuple[Listener, ...] = ()
_ON_SQLITE: dict[Listener, SqliteListener] = {}


def _listeners() -> tuple[Listener, ...]:
    global _LISTENERS
    if not _LISTENERS:
        # Imported here, once: the listeners' packages import the tables of the packages that
        # announce.
        from tidings.operations.metrics import count_events as count_metrics
        from tidings.reports.ledger import count_events
        from tidings.webhooks.outbox import enqueue_events

        _LISTENERS = (count_events, enqueue_events, count_metrics)
    return _LISTENERS


def _sqlite_variants() -> dict[Listener, SqliteListener]:
    if not _ON_SQLITE:
        from tidings.operations.metrics import count_events as count_metrics
        from tidings.operations.metrics import count_events_on_sqlite as count_metrics_on_sqlite
        from tidings.reports.ledger import count_events, count_events_on_sqlite
        from tidings.webhooks.outbox import enqueue_events, enqueue_events_on_sqlite

        _ON_SQLITE.update(
            {
                count_events: count_events_on_sqlite,
                enqueue_events: enqueue_events_on_sqlite,
                count_metrics: count_metrics_on_sqlite,
            }
        )
    return _ON_SQLITE


def announce(conn: sa.Connection, events: Sequence[MessageEvent]) -> None:
    """Hands `events` to every listener, on `conn`, inside the caller's transaction."""
    if not events:
        return
    for listener in _listeners():
        listener(conn, events)


_sqlite_engine: sa.Engine | None = None


def announce_on_sqlite(connection: sqlite3.Connection, events: Sequence[MessageEvent]) -> None:
    """`announce` inside a transaction opened on a bare sqlite3 connection (the worker's and
    the acceptor's fast paths, `Database.sqlite_write_at_once`).

    A listener with a variant for sqlite3 (`_sqlite_variants`) writes through the driver; the
    others get an SQLAlchemy Connection over that same sqlite3 connection which never begins,
    commits or rolls back: the caller's transaction stays the caller's. It is not closed
    (closing would hand the sqlite3 connection to a pool it does not belong to). A variant's
    database error reaches the caller as sqlite3's own, a view's as SQLAlchemy's wrapping it.
    """
    if not events:
        return
    variants = _sqlite_variants()
    view: sa.Connection | None = None
    for listener in _listeners():
        variant = variants.get(listener)
        if variant is not None and variant(connection, events):
            continue
        if view is None:
            view = _view(connection)
        listener(view, events)


def _view(connection: sqlite3.Connection) -> sa.Connection:
    global _sqlite_engine
    if _sqlite_engine is None:
        # Compiles and runs statements only: it never opens a connection of its own.
        _sqlite_engine = sa.create_engine("sqlite://")
    return sa.Connection(
        _sqlite_engine,
        connection=_Borrowed(connection),  # type: ignore[arg-type]
        _allow_autobegin=False,
    )


class _Borrowed:
    """A bare sqlite3 connection as SQLAlchemy's pool hands one out, for a Connection that
    must leave its transaction alone: on a statement's error SQLAlchemy asks whether the
    connection is valid and rolls it back, which here is the caller's to do (the error
    reaches it as an `sqlalchemy.exc.DBAPIError` whose `orig` is sqlite3's)."""

    is_valid = True

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.dbapi_connection = self.driver_connection = connection
        self.info: dict[str, object] = {}
        self.record_info: dict[str, object] = {}

    def cursor(self, *args: object, **kwargs: object) -> sqlite3.Cursor:
        return self.dbapi_connection.cursor()

    def rollback(self) -> None:
        """The caller's transaction: the caller rolls it back."""

    def commit(self) -> None:
        """The caller's transaction: the caller commits it."""

    def invalidate(self, e: BaseException | None = None, soft: bool = False) -> None:
        """Not this view's connection to throw away."""

    def close(self) -> None:
        """Not this view's connection to close."""
