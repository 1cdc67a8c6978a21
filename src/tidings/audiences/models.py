"""Tables of audiences and the members of list audiences."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column

audiences = sa.Table(
    "audiences",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    # "list": uploaded members. Rule audiences (an expression over profiles) come later and
    # will add their own columns.
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("workspace_id", "name"),
)

# Keyed by (audience, profile): an audience execution streams members in profile id order.
audience_members = sa.Table(
    "audience_members",
    metadata,
    id_column("audience_id", sa.ForeignKey("audiences.id", ondelete="CASCADE"), primary_key=True),
    id_column(
        "profile_id", sa.ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True, index=True
    ),
    sa.Column("added_at", UTCDateTime(), nullable=False),
)
