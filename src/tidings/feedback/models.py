"""The log of feedback events applied: what makes applying the same event twice a no-op."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column

# One row per event applied to a message. (source, event_id) is the provider's identity of
# the event (SNS MessageId and recipient, sg_event_id, a hash of a DSN's Message-ID and
# recipient); unknown messages leave no row, so strangers cannot fill the table.
feedback_events = sa.Table(
    "feedback_events",
    metadata,
    sa.Column("source", sa.String(16), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    id_column("message_id", nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Index("ix_feedback_events_message", "message_id"),
)
