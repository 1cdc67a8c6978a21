"""Proofs: messages marked `is_proof`, kept out of counts and reports.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23 16:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.migration_ops import drop_plain_column

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN on both backends: a constant default, so no table copy on
    # SQLite, and existing messages read as not proofs.
    op.add_column(
        "messages",
        sa.Column("is_proof", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # Natively on SQLite: a batch copy of `messages` would cascade into what references it.
    drop_plain_column("messages", "is_proof")
