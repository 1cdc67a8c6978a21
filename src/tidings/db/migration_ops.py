"""Schema operations that migrations share, where SQLite needs other means than PostgreSQL."""

from __future__ import annotations

import sqlite3

from alembic import op

# ALTER TABLE … DROP COLUMN came with SQLite 3.35.
SQLITE_DROP_COLUMN = (3, 35, 0)


def drop_plain_column(table: str, column: str) -> None:
    """Drops a column that no index, key, constraint, trigger or view uses.

    On SQLite natively, not by batch mode: batch mode copies the table and drops the old one,
    and with foreign keys on, dropping a table that other tables reference deletes their rows
    (ON DELETE CASCADE: every audience member went with `audiences`) or fails (FOREIGN KEY
    constraint failed). A native drop rewrites the rows in place and leaves other tables be.
    """
    if op.get_bind().dialect.name != "sqlite":
        op.drop_column(table, column)
        return
    if sqlite3.sqlite_version_info < SQLITE_DROP_COLUMN:
        raise RuntimeError(
            f"dropping {table}.{column} needs SQLite {'.'.join(map(str, SQLITE_DROP_COLUMN))} "
            f"or later (this is {sqlite3.sqlite_version})"
        )
    op.execute(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
