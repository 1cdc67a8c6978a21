"""Tables of the suppression list and of soft bounces counted below the threshold."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column

# One row per suppressed address (an email address or an E.164 phone number) or email domain.
# `value` is normalized (see service.normalize_value), so a lookup is one equality.
suppressions = sa.Table(
    "suppressions",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("channel", sa.String(8), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("value", sa.String(320), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    # Soft bounces seen for the address: the count that crossed the threshold, and any after.
    sa.Column("soft_bounce_count", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("workspace_id", "channel", "kind", "value"),
)

# Soft bounces of addresses that are not suppressed (yet): a row lives until the count reaches
# the threshold (then it becomes a `soft_bounce` suppression) or a delivery succeeds.
suppression_soft_bounces = sa.Table(
    "suppression_soft_bounces",
    metadata,
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), primary_key=True),
    sa.Column("channel", sa.String(8), primary_key=True),
    sa.Column("value", sa.String(320), primary_key=True),
    sa.Column("count", sa.Integer(), nullable=False),
    sa.Column("first_at", UTCDateTime(), nullable=False),
    sa.Column("last_at", UTCDateTime(), nullable=False),
)
