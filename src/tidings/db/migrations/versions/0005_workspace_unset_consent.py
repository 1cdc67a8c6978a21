"""A workspace's policy for marketing to recipients whose consent is unset.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:12:03.518204
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.migration_ops import drop_plain_column

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unset_consent", sa.String(length=8), nullable=True))


def downgrade() -> None:
    # Not batch mode: on SQLite it would drop and recreate `workspaces`, which every table
    # of a workspace references (see drop_plain_column).
    drop_plain_column("workspaces", "unset_consent")
