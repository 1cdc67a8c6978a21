"""A full disk is told apart from other database failures: 507, not the generic 503."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa

from tidings.db.engine import _translated_errors, is_disk_full
from tidings.errors import StorageFull, Unavailable


class _PostgresError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _sqlite_full() -> sqlite3.Error:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (x)")
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")
    try:
        connection.execute("INSERT INTO t SELECT zeroblob(100000)")
    except sqlite3.Error as exc:
        return exc
    finally:
        connection.close()
    raise AssertionError("the insert should not have fitted")


def test_disk_full_is_recognized_on_both_backends():
    assert is_disk_full(_sqlite_full())
    assert is_disk_full(_PostgresError("53100"))
    assert not is_disk_full(_PostgresError("08006"))  # connection failure
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(None)


def test_disk_full_becomes_storage_full_and_other_failures_unavailable():
    with pytest.raises(StorageFull) as full, _translated_errors():
        raise sa.exc.OperationalError("INSERT", {}, _sqlite_full())
    assert full.value.status == 507
    assert "disk is full" in full.value.detail
    with pytest.raises(Unavailable) as down, _translated_errors():
        raise sa.exc.OperationalError("SELECT 1", {}, _PostgresError("08006"))
    assert not isinstance(down.value, StorageFull)
    assert down.value.status == 503
