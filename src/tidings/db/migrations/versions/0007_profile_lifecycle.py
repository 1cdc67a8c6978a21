"""Push tokens per app and platform, identity merges and right-to-be-forgotten deletions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profile_push_tokens",
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("app_id", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=4096), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_profile_push_tokens_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_profile_push_tokens_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint(
            "workspace_id", "app_id", "token_hash", name=op.f("pk_profile_push_tokens")
        ),
    )
    op.create_index(
        op.f("ix_profile_push_tokens_profile_id"),
        "profile_push_tokens",
        ["profile_id"],
        unique=False,
    )
    op.create_table(
        "profile_merges",
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("from_profile_id", sa.String(length=36), nullable=False),
        sa.Column("into_profile_id", sa.String(length=36), nullable=False),
        sa.Column("merged_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_profile_merges_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("workspace_id", "from_profile_id", name=op.f("pk_profile_merges")),
    )
    op.create_index(
        "ix_profile_merges_workspace_into",
        "profile_merges",
        ["workspace_id", "into_profile_id"],
        unique=False,
    )
    op.create_table(
        "profile_erasures",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("erased_at", UTCDateTime(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_profile_erasures_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_erasures")),
    )
    op.create_index(
        op.f("ix_profile_erasures_workspace_id"),
        "profile_erasures",
        ["workspace_id"],
        unique=False,
    )
    # Push tokens become message addresses. On PostgreSQL, widening a VARCHAR rewrites
    # nothing; SQLite copies the table once (batch mode).
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column(
            "address",
            existing_type=sa.String(length=320),
            type_=sa.String(length=4096),
            existing_nullable=True,
        )


def downgrade() -> None:
    # A push token longer than the narrower column cannot stay the address (PostgreSQL would
    # refuse the change), and a cut token is no address: the message keeps none.
    op.execute("UPDATE messages SET address = NULL WHERE length(address) > 320")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column(
            "address",
            existing_type=sa.String(length=4096),
            type_=sa.String(length=320),
            existing_nullable=True,
        )
    op.drop_index(op.f("ix_profile_erasures_workspace_id"), table_name="profile_erasures")
    op.drop_table("profile_erasures")
    op.drop_index("ix_profile_merges_workspace_into", table_name="profile_merges")
    op.drop_table("profile_merges")
    op.drop_index(op.f("ix_profile_push_tokens_profile_id"), table_name="profile_push_tokens")
    op.drop_table("profile_push_tokens")
