"""Audiences (lists of members) and audience executions (scheduling, fan-out progress).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:55:47.466453
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.types import UTCDateTime, json_type

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audiences",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_audiences_workspace_id_workspaces")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audiences")),
        sa.UniqueConstraint("workspace_id", "name", name=op.f("uq_audiences_workspace_id_name")),
    )
    op.create_table(
        "audience_members",
        sa.Column("audience_id", sa.String(length=36), nullable=False),
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("added_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["audience_id"],
            ["audiences.id"],
            name=op.f("fk_audience_members_audience_id_audiences"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_audience_members_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("audience_id", "profile_id", name=op.f("pk_audience_members")),
    )
    with op.batch_alter_table("audience_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audience_members_profile_id"), ["profile_id"], unique=False
        )

    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audience_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("context", json_type(), nullable=True))
        batch_op.add_column(sa.Column("fanout_cursor", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("fired_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("finished_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("failure", sa.Text(), nullable=True))
        batch_op.create_index(
            "ix_executions_status_execute_at", ["status", "execute_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_status_execute_at")
        batch_op.drop_column("failure")
        batch_op.drop_column("finished_at")
        batch_op.drop_column("fired_at")
        batch_op.drop_column("fanout_cursor")
        batch_op.drop_column("context")
        batch_op.drop_column("audience_id")

    with op.batch_alter_table("audience_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audience_members_profile_id"))

    op.drop_table("audience_members")
    op.drop_table("audiences")
