"""Tables of profiles, their identities in namespaces, and the attribute paths seen so far."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column, json_type

profiles = sa.Table(
    "profiles",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("attributes", json_type(), nullable=False),
    sa.Column("consent", json_type(), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=True),
    sa.Column("locale", sa.String(35), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # A workspace's profiles in id order: rule audiences page through them by keyset, each
    # page a range scan instead of a sort of the whole workspace.
    sa.Index("ix_profiles_workspace_id_id", "workspace_id", "id"),
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

# A token is unique per app: registered again, it moves to the newest profile, since devices
# change hands. It is keyed by its SHA-256: a 4 KiB token is too long for a B-tree entry.
profile_push_tokens = sa.Table(
    "profile_push_tokens",
    metadata,
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), primary_key=True),
    sa.Column("app_id", sa.String(200), primary_key=True),
    sa.Column("token_hash", sa.String(64), primary_key=True),
    id_column(
        "profile_id", sa.ForeignKey("profiles.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("token", sa.String(4096), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
)

# Which profile was merged into which: no foreign keys, the source is gone once merged. An
# erasure follows these rows to the messages of profiles merged into the erased one.
profile_merges = sa.Table(
    "profile_merges",
    metadata,
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), primary_key=True),
    id_column("from_profile_id", primary_key=True),
    id_column("into_profile_id", nullable=False),
    sa.Column("merged_at", UTCDateTime(), nullable=False),
    sa.Index("ix_profile_merges_workspace_into", "workspace_id", "into_profile_id"),
)

# Proof that an erasure happened, holding nothing that could name the person.
profile_erasures = sa.Table(
    "profile_erasures",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False, index=True),
    sa.Column("erased_at", UTCDateTime(), nullable=False),
    sa.Column("message_count", sa.Integer(), nullable=False),
)
