"""Tables of console users, their roles per workspace, sessions and sign-in failures."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column

console_users = sa.Table(
    "console_users",
    metadata,
    id_column(primary_key=True),
    # Lower-cased: an address signs in whatever its case.
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    # argon2id, with its parameters and salt in the encoded string.
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("disabled_at", UTCDateTime(), nullable=True),
)

console_memberships = sa.Table(
    "console_memberships",
    metadata,
    id_column("user_id", sa.ForeignKey("console_users.id"), primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    # SHA-256 of the cookie's token: a leaked table opens no session.
    sa.Column("token_hash", sa.String(64), primary_key=True),
    id_column("user_id", sa.ForeignKey("console_users.id"), nullable=False, index=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    # The synchronizer token every form of this session carries.
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
)

# Failed sign-ins per account and client address: the backoff of brute-force guessing.
sign_in_failures = sa.Table(
    "console_sign_in_failures",
    metadata,
    sa.Column("account_key", sa.String(400), primary_key=True),
    sa.Column("failures", sa.Integer(), nullable=False),
    sa.Column("last_failure_at", UTCDateTime(), nullable=False),
    sa.Column("locked_until", UTCDateTime(), nullable=True),
)
