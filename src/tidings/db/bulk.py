"""Bulk inserts for the hot paths: rows of many requests in one statement, cheaply.

SQLAlchemy's executemany spends most of its time per row in generic parameter handling. On
SQLite this writes the same values (each column type's own bind processor, so stored text is
identical) straight through the driver. PostgreSQL keeps SQLAlchemy's path, which adds the
casts its JSONB columns need.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from tidings.db.types import bind_processor

_Processor = Callable[[Any], Any] | None


def bulk_insert(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Inserts rows that all have the same keys."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(table.insert(), list(rows))
        return
    sql, parameters = sqlite_insert(conn.dialect, table, rows)
    conn.exec_driver_sql(sql, parameters)


def sqlite_insert(
    dialect: Dialect, table: sa.Table, rows: Sequence[dict[str, Any]]
) -> tuple[str, list[tuple[Any, ...]]]:
    """The INSERT statement and its parameters for sqlite3's executemany."""
    columns = tuple(rows[0])
    sql, processors = _statement(dialect, table, columns)
    values_of = itemgetter(*columns)
    processed = [(index, processor) for index, processor in enumerate(processors) if processor]
    # The rows of a batch share a few timestamps: each is formatted once.
    formatted: dict[datetime, Any] = {}
    parameters = []
    for row in rows:
        values = list(values_of(row)) if len(columns) > 1 else [values_of(row)]
        for index, processor in processed:
            value = values[index]
            if isinstance(value, datetime):
                text = formatted.get(value)
                if text is None:
                    text = formatted[value] = processor(value)
                values[index] = text
            else:
                values[index] = processor(value)
        parameters.append(tuple(values))
    return sql, parameters


@lru_cache(maxsize=64)
def _statement(
    dialect: Dialect, table: sa.Table, columns: tuple[str, ...]
) -> tuple[str, tuple[_Processor, ...]]:
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    processors = tuple(bind_processor(table.c[column].type, dialect) for column in columns)
    return f"INSERT INTO {table.name} ({names}) VALUES ({marks})", processors
