"""Consent history: one row per consent change.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-23 20:40:00.000000
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from tidings.db.types import UTCDateTime, json_type

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# Profiles read per backfill query, and rows written per insert.
_BATCH = 1000
_CHANNELS = ("email", "sms", "push")
_STATUSES = ("in", "out", "unset")


def upgrade() -> None:
    op.create_table(
        "consent_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("previous_status", sa.String(length=8), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("detail", sa.String(length=400), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_consent_events_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_events")),
    )
    _backfill()
    op.create_index(
        "ix_consent_events_profile",
        "consent_events",
        # Pages go newest first by id (time-ordered): the index serves that order.
        ["workspace_id", "profile_id", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_consent_events_profile", table_name="consent_events")
    op.drop_table("consent_events")


_profiles = sa.table(
    "profiles",
    sa.column("id", sa.String(36)),
    sa.column("workspace_id", sa.String(36)),
    sa.column("consent", json_type()),
    sa.column("updated_at", UTCDateTime()),
)
_events = sa.table(
    "consent_events",
    sa.column("id", sa.String(36)),
    sa.column("workspace_id", sa.String(36)),
    sa.column("profile_id", sa.String(36)),
    sa.column("channel", sa.String(8)),
    sa.column("previous_status", sa.String(8)),
    sa.column("status", sa.String(8)),
    sa.column("source", sa.String(64)),
    sa.column("occurred_at", UTCDateTime()),
    sa.column("detail", sa.String(400)),
)


def _backfill() -> None:
    """A history start for every consent entry stored: the latest state, with its time and
    source, and no previous status (what came before was not kept)."""
    bind = op.get_bind()
    after = ""
    while True:
        rows = bind.execute(
            sa.select(_profiles)
            .where(_profiles.c.id > after)
            .order_by(_profiles.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        events = [event for row in rows for event in _events_of(row)]
        for start in range(0, len(events), _BATCH):
            bind.execute(_events.insert(), events[start : start + _BATCH])
        after = rows[-1].id


def _events_of(row: Any) -> list[dict[str, Any]]:
    consent = row.consent if isinstance(row.consent, Mapping) else {}
    events = []
    for channel in _CHANNELS:
        entry = consent.get(channel)
        if not isinstance(entry, Mapping) or entry.get("status") not in _STATUSES:
            continue
        occurred_at = _stamp(entry.get("updated_at")) or row.updated_at
        source = entry.get("source")
        events.append(
            {
                "id": _id_at(occurred_at),
                "workspace_id": row.workspace_id,
                "profile_id": row.id,
                "channel": channel,
                "previous_status": None,
                "status": entry["status"],
                "source": source[:64] if isinstance(source, str) and source else "unknown",
                "occurred_at": occurred_at,
                "detail": None,
            }
        )
    return events


def _stamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _id_at(moment: datetime) -> str:
    """A UUIDv7 of the moment (as tidings.ids mints them), so that these rows sort by id
    among the later ones as they do by time: the history pages by id."""
    value = (int(moment.timestamp() * 1000) & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76 | random.getrandbits(12) << 64 | 0b10 << 62 | random.getrandbits(62)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
