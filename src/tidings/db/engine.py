"""The database port: connections for reading and transactions for writing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from tidings.errors import Unavailable

SQLITE_BUSY_TIMEOUT_MS = 10_000


class Database:
    """Wraps one SQLAlchemy engine; services receive this, never a global.

    On SQLite every write transaction starts with BEGIN IMMEDIATE: a deferred transaction
    that later wants to write can fail with "database is locked" instead of waiting, while an
    immediate one queues behind the writer for up to the busy timeout.
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
        self.engine = sa.create_engine(self.url, **engine_kwargs)
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
        try:
            with self.engine.connect() as connection:
                connection = connection.execution_options(tidings_write=True)
                with connection.begin():
                    yield connection
        except sa.exc.OperationalError as exc:
            raise Unavailable("the database is unavailable; retry later") from exc

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read-only unit of work (one consistent snapshot on both backends)."""
        try:
            with self.engine.connect() as connection, connection.begin():
                yield connection
        except sa.exc.OperationalError as exc:
            raise Unavailable("the database is unavailable; retry later") from exc

    def dispose(self) -> None:
        self.engine.dispose()
