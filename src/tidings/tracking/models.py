"""The table of opens and clicks, one row per event, for per-message and per-link reports."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column

USER_AGENT_CHARS = 256

# Every open (the pixel fetched) and click (a tracked link followed), as they come: total
# counts are rows, unique ones distinct message ids, a link's clicks those of its index.
# Campaign and execution are copied from the message when the event is recorded, so reports
# over a campaign read this table alone. Nothing personal beyond the message is kept: no IP
# address; the user agent only, truncated, to tell mail scanners and image proxies apart.
message_events = sa.Table(
    "message_events",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    id_column("message_id", sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    id_column("execution_id", nullable=False),
    id_column("campaign_id", nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    # Clicks: the link's position among the message's tracked links, and where it led.
    sa.Column("link_index", sa.Integer(), nullable=True),
    sa.Column("url", sa.Text(), nullable=True),
    sa.Column("user_agent", sa.String(USER_AGENT_CHARS), nullable=True),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Index("ix_message_events_message", "message_id", "kind"),
    sa.Index("ix_message_events_campaign", "workspace_id", "campaign_id", "kind", "occurred_at"),
)
