"""An index for the console's search of identities by their start, in any namespace.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-24 00:25:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_profile_identities_workspace_value",
        "profile_identities",
        ["workspace_id", "value"],
        postgresql_ops={"value": "text_pattern_ops"},
        # An operator may have built it beforehand with CREATE INDEX CONCURRENTLY, which
        # does not block writes (docs/operations.md, "Upgrades").
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_profile_identities_workspace_value", table_name="profile_identities")
