"""Rule audiences: the expression over profiles as authored, validated when saved.

The index on profiles' workspace becomes one on (workspace, id), so that a rule audience's
keyset pages are range scans.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.migration_ops import drop_plain_column

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audiences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rule", sa.Text(), nullable=True))
    op.create_index("ix_profiles_workspace_id_id", "profiles", ["workspace_id", "id"])
    op.drop_index("ix_profiles_workspace_id", table_name="profiles")


def downgrade() -> None:
    op.create_index("ix_profiles_workspace_id", "profiles", ["workspace_id"])
    op.drop_index("ix_profiles_workspace_id_id", table_name="profiles")
    # Rule audiences cannot be lists: they go with their column (and nothing targets them by
    # membership, as they have none).
    op.execute("DELETE FROM audiences WHERE kind = 'rule'")
    # Not batch mode: on SQLite, recreating `audiences` deleted every list audience's members
    # (ON DELETE CASCADE) when the old table was dropped (see drop_plain_column).
    drop_plain_column("audiences", "rule")
