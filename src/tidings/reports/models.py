"""Report counters: how many messages did what, per campaign version (and audience execution)
and per minute or day, moved by message events as they happen."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column
from tidings.executions.models import executions, messages

DETAIL_CHARS = 64

# One row per (campaign version, execution or '', period, bucket, metric, detail): the number
# of events of that metric in that bucket. Rows of the campaign carry execution_id '' and sum
# every execution; an audience execution also has rows of its own. `period` is "m" for a
# minute bucket and "d" for a day one (the worker folds minute rows older than two days into
# day rows). `detail` is the reason (excluded, failed, cancelled, retried), the bounce type,
# or a tracked link's index (clicks), else ''.
report_counters = sa.Table(
    "report_counters",
    metadata,
    id_column("workspace_id", nullable=False),
    id_column("campaign_id", nullable=False),
    id_column("version_id", nullable=False),
    id_column("execution_id", nullable=False),
    sa.Column("period", sa.String(1), nullable=False),
    sa.Column("bucket_start", UTCDateTime(), nullable=False),
    sa.Column("metric", sa.String(24), nullable=False),
    sa.Column("detail", sa.String(DETAIL_CHARS), nullable=False),
    sa.Column("count", sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint(
        "workspace_id",
        "campaign_id",
        "execution_id",
        "version_id",
        "period",
        "bucket_start",
        "metric",
        "detail",
    ),
    # The compaction finds old minute rows without reading the whole table.
    sa.Index("ix_report_counters_period_bucket", "period", "bucket_start"),
)

# Where each tracked link of a version led (its index is all a click counter keeps).
report_links = sa.Table(
    "report_links",
    metadata,
    id_column("workspace_id", nullable=False),
    id_column("campaign_id", nullable=False),
    id_column("version_id", nullable=False),
    sa.Column("link_index", sa.Integer(), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint("workspace_id", "campaign_id", "version_id", "link_index"),
)

# Message search (GET /v1/messages): by recipient within a workspace, and executions by the
# trigger's request id; the other filters ride on these or on ix_messages_execution.
ix_messages_workspace_recipient = sa.Index(
    "ix_messages_workspace_recipient",
    messages.c.workspace_id,
    messages.c.recipient_id,
    messages.c.id,
)
ix_executions_workspace_request = sa.Index(
    "ix_executions_workspace_request", executions.c.workspace_id, executions.c.request_id
)
