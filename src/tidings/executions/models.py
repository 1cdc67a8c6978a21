"""Tables of executions, their messages (the delivery queue) and idempotency keys."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column, json_type

executions = sa.Table(
    "executions",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    id_column("campaign_id", sa.ForeignKey("campaigns.id"), nullable=False),
    # The version that was live when the trigger was accepted: messages render it even if a
    # new version replaces it meanwhile.
    id_column("version_id", sa.ForeignKey("campaign_versions.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("request_id", sa.String(200), nullable=True),
    sa.Column("recipient_count", sa.Integer(), nullable=False),
    sa.Column("execute_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Audience executions: the audience, the call's context (their messages are created when
    # the execution fires), and the fan-out's progress: the last profile id queued moves in the
    # same transaction as the messages it queued, so a crash neither loses nor repeats one.
    id_column("audience_id", nullable=True),
    sa.Column("context", json_type(), nullable=True),
    id_column("fanout_cursor", nullable=True),
    sa.Column("fired_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("failure", sa.Text(), nullable=True),
    sa.Index("ix_executions_workspace_campaign", "workspace_id", "campaign_id", "id"),
    sa.Index("ix_executions_status_execute_at", "status", "execute_at"),
)

# The message table is the queue: a worker claims rows whose due_at has come.
messages = sa.Table(
    "messages",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    id_column("execution_id", sa.ForeignKey("executions.id", ondelete="CASCADE"), nullable=False),
    id_column("campaign_id", nullable=False),
    id_column("version_id", nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("recipient_namespace", sa.String(64), nullable=False),
    sa.Column("recipient_id", sa.String(320), nullable=False),
    id_column("profile_id", nullable=True),
    # An email address, a phone number, or a push token (up to 4 KiB).
    sa.Column("address", sa.String(4096), nullable=True),
    # The call's context merged for this recipient, and profile data the call sent.
    sa.Column("context", json_type(), nullable=False),
    sa.Column("profile_data", json_type(), nullable=True),
    sa.Column("due_at", UTCDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("provider_message_id", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    # SMS: how the body went on the air (gsm7, ucs2) and how many segments it cost (0009).
    sa.Column("sms_encoding", sa.String(8), nullable=True),
    sa.Column("sms_segments", sa.Integer(), nullable=True),
    # A proof (POST /v1/campaigns/{id}/proofs) for a tester: no consent, quiet hours or caps,
    # and kept out of execution counts and reports (0012).
    sa.Column("is_proof", sa.Boolean(), nullable=False, server_default=sa.false()),
    # Times a worker's lease on it ran out (the worker died holding it): a message that keeps
    # killing its worker fails as `worker_crashed` (delivery/queue.py, 0018).
    sa.Column("lease_expiries", sa.Integer(), nullable=False, server_default="0"),
    sa.Index("ix_messages_state_due", "state", "due_at"),
    sa.Index("ix_messages_execution", "execution_id", "id"),
    # Provider callbacks (Twilio's status callback) find their message by the provider's id.
    sa.Index("ix_messages_provider_message_id", "provider_message_id"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    # SHA-256 of the canonical request body: the same key with another body is refused.
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("response", json_type(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)
