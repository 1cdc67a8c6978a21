"""SMS: segments and encoding per message, provider status callbacks.

Two nullable columns on `messages` (the SMS encoding and segment count of a sent message) and
an index on `provider_message_id`, by which Twilio's status callbacks find their message.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 16:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.migration_ops import drop_plain_column

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN on both backends: nullable, so no table copy on SQLite.
    op.add_column("messages", sa.Column("sms_encoding", sa.String(length=8), nullable=True))
    op.add_column("messages", sa.Column("sms_segments", sa.Integer(), nullable=True))
    op.create_index(
        "ix_messages_provider_message_id", "messages", ["provider_message_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_messages_provider_message_id", table_name="messages")
    # Natively on SQLite: a batch copy of `messages` would cascade into what references it.
    drop_plain_column("messages", "sms_segments")
    drop_plain_column("messages", "sms_encoding")
