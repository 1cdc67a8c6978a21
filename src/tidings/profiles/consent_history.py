"""Consent history: a row per change of a profile's consent on a channel, for the audit trail.

Every writer of profiles.consent (the profile API, imports, unsubscribe links, provider
feedback, SMS keywords, merges, the console) records its changes here in the transaction
that makes them, through `changes` and `record`; a write that leaves a channel's status as it
was records nothing. Rows are kept as long as the profile: consent proof is what operators
must be able to show, so retention leaves them alone; a merge moves them to the profile that
remains and an erasure deletes them with the person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tidings.db.bulk import bulk_insert
from tidings.ids import new_id
from tidings.pagination import keyset_page
from tidings.profiles.models import consent_events
from tidings.vocabulary import Channel

UNSET = "unset"
# Ids per IN (...) list: well under SQLite's limit on bound parameters.
_IN_CHUNK = 500
_COLUMNS = tuple(column.name for column in consent_events.columns)
# On PostgreSQL, a batch is one INSERT of unnested arrays, a parameter per column: SQLAlchemy's
# multi-row VALUES (a parameter per value) took three times as long, psycopg's executemany
# is a statement per row.
_INSERT_UNNESTED = sa.text(
    f"INSERT INTO consent_events ({', '.join(_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(
        f"CAST(:{name} AS {'TIMESTAMPTZ' if name == 'occurred_at' else 'VARCHAR'}[])"
        for name in _COLUMNS
    )
    + ")"
)


def status_of(consent: Mapping[str, Any], channel: str) -> str:
    """A channel's status in a profile's stored consent; a channel never set is unset."""
    entry = consent.get(channel)
    if isinstance(entry, Mapping):
        return str(entry.get("status", UNSET))
    return UNSET


def changes(
    workspace_id: str,
    profile_id: str,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    source: str,
    now: datetime,
    detail: str | None = None,
) -> list[dict[str, Any]]:
    """The rows recording what changed between two states of a profile's stored consent:
    one per channel whose status differs, none for a channel only re-stamped."""
    rows = []
    for channel in after:
        status, previous = status_of(after, channel), status_of(before, channel)
        if status != previous:
            rows.append(
                {
                    "id": new_id(),
                    "workspace_id": workspace_id,
                    "profile_id": profile_id,
                    "channel": channel,
                    "previous_status": previous,
                    "status": status,
                    "source": source,
                    "occurred_at": now,
                    "detail": detail,
                    "merged_from": None,
                }
            )
    if rows and (len(source) > 64 or (detail and len(detail) > 400)):
        for row in rows:
            row["source"], row["detail"] = source[:64], detail[:400] if detail else None
    return rows


def record(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Inserts rows made by `changes` with one statement (on SQLite, one executemany)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(_INSERT_UNNESTED, {name: [row[name] for row in rows] for name in _COLUMNS})
    else:
        bulk_insert(conn, consent_events, rows)


def move(conn: sa.Connection, workspace_id: str, from_id: str, into_id: str) -> None:
    """Hands the history of a profile merged away to the profile it was merged into, each
    entry marked with the profile it was recorded on (kept from an earlier merge, if any)."""
    conn.execute(
        consent_events.update()
        .where(
            consent_events.c.workspace_id == workspace_id,
            consent_events.c.profile_id == from_id,
        )
        .values(
            profile_id=into_id,
            merged_from=sa.func.coalesce(consent_events.c.merged_from, from_id),
        )
    )


def forget(conn: sa.Connection, workspace_id: str, profile_ids: Iterable[str]) -> None:
    """Deletes the history of erased profiles."""
    ids = sorted(set(profile_ids))
    for start in range(0, len(ids), _IN_CHUNK):
        conn.execute(
            consent_events.delete().where(
                consent_events.c.workspace_id == workspace_id,
                consent_events.c.profile_id.in_(ids[start : start + _IN_CHUNK]),
            )
        )


def page(
    conn: sa.Connection,
    workspace_id: str,
    profile_id: str,
    channel: Channel | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of a profile's history, newest first (ids are minted in time order, and the
    rows the upgrade wrote have ids of their time)."""
    query = sa.select(consent_events).where(
        consent_events.c.workspace_id == workspace_id,
        consent_events.c.profile_id == profile_id,
    )
    if channel is not None:
        query = query.where(consent_events.c.channel == channel.value)
    rows, next_cursor = keyset_page(
        conn, query, consent_events.c.id, cursor, limit, newest_first=True
    )
    return [dict(row) for row in rows], next_cursor
