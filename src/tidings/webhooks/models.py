"""Tables of feedback webhooks: endpoints, their outbox of deliveries, and each attempt."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column, json_type

# Where a workspace wants events, in which shape. The signing secrets are kept as they are:
# an HMAC needs the key itself (unlike API keys, which are only compared). During a rotation
# the previous secret signs too, until previous_secret_expires_at.
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("description", sa.String(500), nullable=True),
    sa.Column("event_types", json_type(), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    # Why Tidings turned it off (a 410 from the receiver), cleared when it is enabled again.
    sa.Column("disabled_reason", sa.String(500), nullable=True),
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("previous_secret", sa.String(128), nullable=True),
    sa.Column("previous_secret_expires_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_webhook_endpoints_workspace", "workspace_id"),
)

# The outbox: one row per event per subscribed endpoint, written in the transaction of the
# change it reports, and the queue the dispatcher claims from (like messages: a lease, due
# times, attempts). The body is stored as sent, so every retry signs the same bytes.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    id_column(
        "endpoint_id", sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    ),
    # The event's id: the webhook-id header, the same on retries and replays.
    id_column("event_id", nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False),
    id_column("message_id", nullable=True),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("last_status", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_response", sa.Text(), nullable=True),
    id_column("replay_of", nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("first_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    sa.Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    # Erasures find a person's deliveries by their messages.
    sa.Index("ix_webhook_deliveries_message", "message_id"),
)

# Every attempt of every delivery, for the log: what was answered and how long it took.
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    id_column(primary_key=True),
    id_column(
        "delivery_id",
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("attempted_at", UTCDateTime(), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("response", sa.Text(), nullable=True),
    sa.Column("duration_ms", sa.Integer(), nullable=False),
    sa.Index("ix_webhook_attempts_delivery", "delivery_id", "attempted_at"),
)
