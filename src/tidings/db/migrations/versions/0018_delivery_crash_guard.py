"""Counts the times a message's lease expired, to fail a message that keeps killing its worker.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-23 20:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.migration_ops import drop_plain_column

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "messages",
        sa.Column("lease_expiries", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    drop_plain_column("messages", "lease_expiries")
