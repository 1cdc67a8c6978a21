"""Bulk inserts for the hot paths: rows of many requests in one statement, cheaply.

SQLAlchemy's executemany spends most of its time per row in generic parameter handling. On
SQLite this writes the same values (each column type's own bind processor, so stored text is
identical) straight through the driver. PostgreSQL keeps SQLAlchemy's path, which adds the
casts its JSONB columns need.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

_Processor = Callable[[Any], Any] | None


def bulk_insert(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Inserts rows that all have the same keys."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(table.insert(), list(rows))
        return
    columns = tuple(rows[0])
    sql, processors = _statement(conn.dialect, table, columns)
    parameters = [
        tuple(
            processor(row[column]) if processor is not None else row[column]
            for column, processor in zip(columns, processors, strict=True)
        )
        for row in rows
    ]
    conn.exec_driver_sql(sql, parameters)


@lru_cache(maxsize=64)
def _statement(
    dialect: Dialect, table: sa.Table, columns: tuple[str, ...]
) -> tuple[str, tuple[_Processor, ...]]:
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    processors = tuple(
        table.c[column].type.dialect_impl(dialect).bind_processor(dialect) for column in columns
    )
    return f"INSERT INTO {table.name} ({names}) VALUES ({marks})", processors
