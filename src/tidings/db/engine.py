"""The database port: connections for reading and transactions for writing."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from tidings.errors import FieldError, InvalidInput, StorageFull, Unavailable

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
STARTUP_LOCK = 0x7469_6469  # "tidi": any constant shared by every Tidings process
SQLITE_FULL = 13
POSTGRES_DISK_FULL = "53100"


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # Integers beyond 64 bits (which orjson refuses and json keeps exact); reading stays
        # with json.loads for the same reason (orjson would turn them into floats).
        return json.dumps(value)


@contextmanager
def _translated_errors() -> Iterator[None]:
    try:
        yield
    except sa.exc.OperationalError as exc:
        if is_disk_full(exc.orig):
            raise StorageFull(
                "the database's disk is full: nothing of this request was stored"
            ) from exc
        raise Unavailable("the database is unavailable; retry later") from exc
    except sa.exc.DataError as exc:
        # PostgreSQL refuses what SQLite stores: NUL characters, numbers out of range.
        raise InvalidInput(
            "the request holds a value the database cannot store",
            errors=[
                FieldError(
                    "body",
                    "contains a value the database cannot store "
                    "(a NUL character, or a number out of range)",
                )
            ],
        ) from exc


def is_disk_full(error: BaseException | None) -> bool:
    """SQLite's SQLITE_FULL (disk full, or max_page_count reached), PostgreSQL's disk_full."""
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", None) == SQLITE_FULL
    return getattr(error, "sqlstate", None) == POSTGRES_DISK_FULL


# Told, with the bare sqlite3 connection, when a `sqlite_write_at_once` transaction ends and
# whether it committed: what a listener kept for that transaction (the metrics' tally of its
# events) is applied or dropped then. SQLAlchemy's commit events never see these transactions.
FAST_PATH_ENDS: list[Callable[[sqlite3.Connection, bool], None]] = []


def _fast_path_ended(connection: sqlite3.Connection, committed: bool) -> None:
    for listener in FAST_PATH_ENDS:
        try:
            listener(connection, committed)
        except Exception:
            # After a COMMIT nothing may raise (the caller would write the batch again).
            logger.exception("a listener of a SQLite transaction's end failed")


class Database:
    """Wraps one SQLAlchemy engine; services receive this, never a global.

    On SQLite every write transaction starts with BEGIN IMMEDIATE: a deferred transaction
    that later wants to write can fail with "database is locked" instead of waiting, while an
    immediate one queues behind the writer for up to the busy timeout. Writers of one process
    also queue on a lock of their own first: SQLite's busy handler sleeps (1, 2, 5 ... 100 ms)
    rather than waking when the lock frees, which left unlucky requests waiting for seconds.
    """

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            self._prepare_sqlite_path()
            engine_kwargs.setdefault("connect_args", {"check_same_thread": False})
        else:
            engine_kwargs.setdefault("pool_pre_ping", True)
            engine_kwargs.setdefault("pool_size", 10)
            engine_kwargs.setdefault("max_overflow", 10)
            engine_kwargs.setdefault("pool_timeout", 10)
        # Bound parameters never reach error messages or logs: they carry provider secrets.
        engine_kwargs.setdefault("hide_parameters", True)
        # JSON columns (contexts, profiles) are written per message on the hot path.
        engine_kwargs.setdefault("json_serializer", _json_text)
        self.engine = sa.create_engine(self.url, **engine_kwargs)
        self._sqlite_writer = threading.RLock()
        if self.is_sqlite:
            self._configure_sqlite(self.engine)

    def _prepare_sqlite_path(self) -> None:
        database = self.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _configure_sqlite(engine: sa.Engine) -> None:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below issue BEGIN itself.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: sa.Connection) -> None:
            immediate = connection.get_execution_options().get("tidings_write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A transaction that commits on success and rolls back on any exception."""
        if self.is_sqlite:
            with self._sqlite_writer, self._transaction() as connection:
                yield connection
        else:
            with self._transaction() as connection:
                yield connection

    @contextmanager
    def sqlite_write_at_once(self) -> Iterator[sqlite3.Connection | None]:
        """A write transaction on the bare sqlite3 connection, if one can begin without
        waiting; else None, and nothing done. Commits when the block ends, rolls back if it
        raises (sqlite3's own exceptions: the caller falls back to `write()`).

        For a caller on an event loop: it writes in the loop's thread when the database is
        free instead of handing the work to another thread, and never blocks the loop on a
        lock another thread or process holds. SQLite only; elsewhere always None.
        """
        if not self.is_sqlite or not self._sqlite_writer.acquire(blocking=False):
            yield None
            return
        try:
            pooled = self.engine.raw_connection()
            try:
                connection = pooled.driver_connection
                assert isinstance(connection, sqlite3.Connection)
                connection.execute("PRAGMA busy_timeout=0")
                try:
                    try:
                        connection.execute("BEGIN IMMEDIATE")
                    except sqlite3.OperationalError:
                        # Another process is writing.
                        yield None
                        return
                    try:
                        yield connection
                    except BaseException:
                        try:
                            connection.execute("ROLLBACK")
                        finally:
                            _fast_path_ended(connection, committed=False)
                        raise
                    try:
                        connection.execute("COMMIT")
                    except BaseException:
                        _fast_path_ended(connection, committed=False)
                        raise
                    _fast_path_ended(connection, committed=True)
                finally:
                    # After a COMMIT nothing may raise: the caller would take the batch for
                    # not written and write it again. A connection whose timeout could not be
                    # restored is dropped from the pool instead.
                    try:
                        connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                    except sqlite3.Error:
                        pooled.invalidate()
            finally:
                with contextlib.suppress(Exception):
                    pooled.close()
        finally:
            self._sqlite_writer.release()

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        with _translated_errors(), self.engine.connect() as connection:
            connection = connection.execution_options(tidings_write=True)
            with connection.begin():
                yield connection

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read-only unit of work that sees one consistent snapshot on both backends.

        PostgreSQL's default (READ COMMITTED) gives each statement a fresh snapshot, so a view
        assembled from several queries could see a row and miss what it points to.
        """
        with _translated_errors(), self.engine.connect() as connection:
            if not self.is_sqlite:
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                yield connection

    @contextmanager
    def startup_lock(self) -> Iterator[None]:
        """Serializes start-up work (migrations, bootstrap) of processes sharing a database."""
        if self.is_sqlite:
            with self._sqlite_file_lock():
                yield
            return
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK})
            try:
                yield
            finally:
                connection.execute(
                    sa.text("SELECT pg_advisory_unlock(:key)"), {"key": STARTUP_LOCK}
                )
                connection.commit()

    @contextmanager
    def _sqlite_file_lock(self) -> Iterator[None]:
        database = self.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            yield
            return
        with open(f"{database}.startup-lock", "a+b") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def dispose(self) -> None:
        self.engine.dispose()
