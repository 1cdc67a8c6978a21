"""Report counters per campaign, version and execution; indexes for message search.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-23 17:50:00.000000
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from tidings.db.types import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _id(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(36), nullable=False)


def upgrade() -> None:
    op.create_table(
        "report_counters",
        _id("workspace_id"),
        _id("campaign_id"),
        _id("version_id"),
        _id("execution_id"),
        sa.Column("period", sa.String(1), nullable=False),
        sa.Column("bucket_start", UTCDateTime(), nullable=False),
        sa.Column("metric", sa.String(24), nullable=False),
        sa.Column("detail", sa.String(64), nullable=False),
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
            name="pk_report_counters",
        ),
    )
    op.create_index(
        "ix_report_counters_period_bucket", "report_counters", ["period", "bucket_start"]
    )
    op.create_table(
        "report_links",
        _id("workspace_id"),
        _id("campaign_id"),
        _id("version_id"),
        sa.Column("link_index", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "workspace_id", "campaign_id", "version_id", "link_index", name="pk_report_links"
        ),
    )
    _count_existing_messages()
    op.create_index(
        "ix_messages_workspace_recipient", "messages", ["workspace_id", "recipient_id", "id"]
    )
    op.create_index("ix_executions_workspace_request", "executions", ["workspace_id", "request_id"])


_STATES = sa.text(
    """
    SELECT m.workspace_id, m.campaign_id, {execution} AS execution_id, m.version_id,
           m.state, m.reason, COUNT(*)
    FROM messages AS m {join}
    WHERE m.is_proof = :no {where}
    GROUP BY m.workspace_id, m.campaign_id{grouped}, m.version_id, m.state, m.reason
    """
)
_EVENTS = sa.text(
    """
    SELECT e.workspace_id, e.campaign_id, m.version_id, e.kind, e.link_index,
           COUNT(*), COUNT(DISTINCT e.message_id), MIN(e.url)
    FROM message_events AS e JOIN messages AS m ON m.id = e.message_id
    WHERE m.is_proof = :no
    GROUP BY e.workspace_id, e.campaign_id, m.version_id, e.kind, e.link_index
    """
)
_CLICKERS = sa.text(
    """
    SELECT e.workspace_id, e.campaign_id, m.version_id, COUNT(DISTINCT e.message_id)
    FROM message_events AS e JOIN messages AS m ON m.id = e.message_id
    WHERE m.is_proof = :no AND e.kind = 'click'
    GROUP BY e.workspace_id, e.campaign_id, m.version_id
    """
)


def _count_existing_messages() -> None:
    """Counts the messages already there, as if their events had been counted, into one day
    bucket: today's (the series shows what came before the upgrade on the day of the upgrade)."""
    bind = op.get_bind()
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    counts: dict[tuple[str, str, str, str, str, str], int] = {}

    def add(
        workspace: str,
        campaign: str,
        execution: str,
        version: str,
        metric: str,
        detail: str,
        count: int,
    ) -> None:
        key = (workspace, campaign, execution, version, metric, detail[:64])
        counts[key] = counts.get(key, 0) + count

    campaign_rows = bind.execute(
        sa.text(_STATES.text.format(execution="''", grouped="", join="", where="")),
        {"no": False},
    ).all()
    audience_rows = bind.execute(
        sa.text(
            _STATES.text.format(
                execution="m.execution_id",
                grouped=", m.execution_id",
                join="JOIN executions AS x ON x.id = m.execution_id",
                where="AND x.kind = 'audience'",
            )
        ),
        {"no": False},
    ).all()
    for grouped in (campaign_rows, audience_rows):
        for workspace, campaign, execution, version, state, reason, count in grouped:
            head = (workspace, campaign, execution, version)
            add(*head, "targeted", "", count)
            if state in ("sent", "delivered", "bounced"):
                add(*head, "sent", "", count)
            if state == "delivered":
                add(*head, "delivered", "", count)
            elif state == "bounced":
                add(*head, "bounced", "hard", count)
            elif state in ("excluded", "failed", "cancelled"):
                add(*head, state, reason or "", count)
    links = []
    for workspace, campaign, version, kind, link, count, unique, url in bind.execute(
        _EVENTS, {"no": False}
    ):
        head = (workspace, campaign, "", version)
        if kind == "open":
            add(*head, "opened", "", count)
            add(*head, "opened_unique", "", unique)
        else:
            index = "" if link is None else str(link)
            add(*head, "clicked", index, count)
            add(*head, "clicked_unique", index, unique)
            if link is not None and url:
                links.append(
                    {
                        "workspace_id": workspace,
                        "campaign_id": campaign,
                        "version_id": version,
                        "link_index": link,
                        "url": url,
                    }
                )
    for workspace, campaign, version, clickers in bind.execute(_CLICKERS, {"no": False}):
        add(workspace, campaign, "", version, "clickers", "", clickers)
    table = sa.table(
        "report_counters",
        *(sa.column(name) for name in _KEY_COLUMNS),
        sa.column("period"),
        sa.column("bucket_start", UTCDateTime()),
        sa.column("count"),
    )
    rows = [
        {
            **dict(zip(_KEY_COLUMNS, key, strict=True)),
            "period": "d",
            "bucket_start": day,
            "count": count,
        }
        for key, count in counts.items()
        if count
    ]
    for start in range(0, len(rows), 1000):
        bind.execute(table.insert(), rows[start : start + 1000])
    if links:
        link_table = sa.table(
            "report_links",
            *(sa.column(name) for name in ("workspace_id", "campaign_id", "version_id")),
            sa.column("link_index"),
            sa.column("url"),
        )
        bind.execute(link_table.insert(), links)


_KEY_COLUMNS = ("workspace_id", "campaign_id", "execution_id", "version_id", "metric", "detail")


def downgrade() -> None:
    op.drop_index("ix_executions_workspace_request", table_name="executions")
    op.drop_index("ix_messages_workspace_recipient", table_name="messages")
    op.drop_table("report_links")
    op.drop_index("ix_report_counters_period_bucket", table_name="report_counters")
    op.drop_table("report_counters")
