"""Consent history entries a merge moved name the profile they were recorded on.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-24 04:20:00.000000

Entries moved by merges before this revision keep a null `merged_from`: which profile they
were recorded on was not kept (the merge's own entries name the profile merged in, in
`detail`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("consent_events", sa.Column("merged_from", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consent_events") as batch:
        batch.drop_column("merged_from")
