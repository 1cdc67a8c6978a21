"""Open and click tracking: the message events table.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 16:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("campaign_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("link_index", sa.Integer(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.String(length=256), nullable=True),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_events_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_message_events_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_events")),
    )
    op.create_index("ix_message_events_message", "message_events", ["message_id", "kind"])
    op.create_index(
        "ix_message_events_campaign",
        "message_events",
        ["workspace_id", "campaign_id", "kind", "occurred_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_message_events_campaign", table_name="message_events")
    op.drop_index("ix_message_events_message", table_name="message_events")
    op.drop_table("message_events")
