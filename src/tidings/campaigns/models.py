"""Tables of campaigns and their versions; a version holds everything authored in steps 1-5."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column, json_type

campaigns = sa.Table(
    "campaigns",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("category", sa.String(16), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    # No foreign keys to campaign_versions: the two tables point at each other.
    id_column("live_version_id", nullable=True),
    id_column("draft_version_id", nullable=True),
    id_column("duplicated_from_id", nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("activated_at", UTCDateTime(), nullable=True),
    sa.Column("stopped_at", UTCDateTime(), nullable=True),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Column("archived_at", UTCDateTime(), nullable=True),
    # Business rule sets of a marketing campaign, beside the workspace's defaults. On the
    # campaign, not a version: a change applies at once to the live version too.
    sa.Column("rule_set_ids", json_type(), nullable=True),
    sa.Index("ix_campaigns_workspace_status", "workspace_id", "status", "id"),
)

campaign_versions = sa.Table(
    "campaign_versions",
    metadata,
    id_column(primary_key=True),
    id_column("campaign_id", sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    sa.Column("number", sa.Integer(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("tags", json_type(), nullable=False),
    id_column("channel_configuration_id", nullable=True),
    sa.Column("content", json_type(), nullable=True),
    sa.Column("audience", json_type(), nullable=False),
    sa.Column("start_at", UTCDateTime(), nullable=True),
    sa.Column("end_at", UTCDateTime(), nullable=True),
    sa.Column("rate_per_second", sa.Integer(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("activated_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("campaign_id", "number"),
)

# One row per tag of a version, so listing can filter by tag with an index on both backends.
campaign_version_tags = sa.Table(
    "campaign_version_tags",
    metadata,
    id_column(
        "version_id",
        sa.ForeignKey("campaign_versions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("tag", sa.String(64), primary_key=True),
    sa.Index("ix_campaign_version_tags_tag", "tag"),
)
