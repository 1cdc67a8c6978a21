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
    # The console's search by the start of any identity (`ada` finds ada@example.com): a range
    # of this index, in any namespace. On PostgreSQL the pattern operator class compares bytes
    # (~>=~, ~<~) whatever the database's collation, which the key's own index compares by.
    sa.Index(
        "ix_profile_identities_workspace_value",
        "workspace_id",
        "value",
        postgresql_ops={"value": "text_pattern_ops"},
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

# Every change of a profile's consent on a channel, written in the transaction that made it:
# the trail an audit asks for (what changed, from what to what, when, through what). No
# foreign key to profiles: a merge moves the rows to the profile that remains and an erasure
# deletes them (a cascade would scan this table, whose index starts with the workspace).
consent_events = sa.Table(
    "consent_events",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    id_column("profile_id", nullable=False),
    sa.Column("channel", sa.String(8), nullable=False),
    # None: unknown, on the rows the upgrade to 0016 wrote from the latest state stored then.
    sa.Column("previous_status", sa.String(8), nullable=True),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    # What made the change: the message of an unsubscribe or complaint, the API key, the
    # console user, the profile merged in.
    sa.Column("detail", sa.String(400), nullable=True),
    # The profile the change was recorded on, when a merge brought it here: after merges in a
    # chain, the first one, where it happened. Without it the surviving profile's trail would
    # claim changes made to another person's record.
    id_column("merged_from", nullable=True),
    sa.Index("ix_consent_events_profile", "workspace_id", "profile_id", "id"),
)

# Profile imports as jobs: their progress, written with each batch the import commits, lives
# here so that any process can show it and a restart loses nothing of what was accepted.
# `created_by` is the console user's or the API key's id (None from the command line).
import_jobs = sa.Table(
    "import_jobs",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    id_column("created_by", nullable=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("file_name", sa.String(200), nullable=True),
    sa.Column("format", sa.String(8), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("bytes_total", sa.BigInteger(), nullable=True),
    sa.Column("bytes_read", sa.BigInteger(), nullable=False),
    sa.Column("lines", sa.Integer(), nullable=False),
    sa.Column("rows_created", sa.Integer(), nullable=False),
    sa.Column("rows_updated", sa.Integer(), nullable=False),
    sa.Column("rows_unchanged", sa.Integer(), nullable=False),
    sa.Column("rows_rejected", sa.Integer(), nullable=False),
    # The first rejected rows, [{"line": n, "reason": "..."}], capped (import_jobs.SAMPLED).
    sa.Column("rejected_sample", json_type(), nullable=False),
    sa.Column("error", sa.String(2000), nullable=True),
    # The field errors of a failed import ([{"field", "message", "line", "column"}]).
    sa.Column("error_details", json_type(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_import_jobs_workspace_id", "workspace_id", "id"),
)
