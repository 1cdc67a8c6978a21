"""Provider feedback: bounces, complaints and delivery events from DSNs and webhooks.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 16:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback_events",
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_feedback_events_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("source", "event_id", name=op.f("pk_feedback_events")),
    )
    op.create_index(op.f("ix_feedback_events_message"), "feedback_events", ["message_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_feedback_events_message"), table_name="feedback_events")
    op.drop_table("feedback_events")
