"""Keyset pagination over time-ordered ids: stable pages however many rows arrive meanwhile."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def keyset_page(
    conn: sa.Connection,
    query: sa.Select[Any],
    id_column: sa.ColumnElement[str],
    cursor: str | None,
    limit: int,
    *,
    newest_first: bool = False,
) -> tuple[Sequence[sa.RowMapping], str | None]:
    """Rows after `cursor` in id order, and the cursor of the next page (None on the last)."""
    if cursor:
        query = query.where(id_column < cursor if newest_first else id_column > cursor)
    order = id_column.desc() if newest_first else id_column.asc()
    rows = conn.execute(query.order_by(order).limit(limit + 1)).mappings().all()
    if len(rows) > limit:
        return rows[:limit], str(rows[limit - 1][str(id_column.key)])
    return rows, None
