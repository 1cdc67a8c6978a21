"""Tables of profiles, their identities in namespaces, and the attribute paths seen so far."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column, json_type

profiles = sa.Table(
    "profiles",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False, index=True),
    sa.Column("attributes", json_type(), nullable=False),
    sa.Column("consent", json_type(), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=True),
    sa.Column("locale", sa.String(35), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

profile_identities = sa.Table(
    "profile_identities",
    metadata,
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), primary_key=True),
    sa.Column("namespace", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(320), primary_key=True),
    id_column(
        "profile_id", sa.ForeignKey("profiles.id", ondelete="CASCADE"), nullable=False, index=True
    ),
)

# Every dotted attribute path any profile of the workspace has had: review warns about content
# that reads an attribute no profile has, without scanning the profiles.
profile_attribute_paths = sa.Table(
    "profile_attribute_paths",
    metadata,
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), primary_key=True),
    sa.Column("path", sa.String(512), primary_key=True),
    sa.Column("first_seen_at", UTCDateTime(), nullable=False),
)
