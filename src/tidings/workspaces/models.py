"""Tables of workspaces (tenants, AJO's sandboxes) and their API keys."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column, json_type

workspaces = sa.Table(
    "workspaces",
    metadata,
    id_column(primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("settings", json_type(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Whether marketing may go to a recipient whose consent is unset: "allow", "deny", or
    # NULL for the server's TIDINGS_UNSET_CONSENT.
    sa.Column("unset_consent", sa.String(8), nullable=True),
    # The IANA zone of quiet hours for profiles without one; NULL: UTC.
    sa.Column("timezone", sa.String(64), nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    # SHA-256 of the whole secret: keys are long random strings, so a fast hash is enough and
    # lets a request find its key by an indexed equality instead of trying every row.
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("display_prefix", sa.String(16), nullable=False),
    sa.Column("scopes", json_type(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
)
