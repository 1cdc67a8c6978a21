"""Tables of audiences (lists and rules) and the members of list audiences."""

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
    # "list": uploaded members (audience_members). "rule": the profiles `rule` matches when
    # read, so it has no stored members.
    sa.Column("kind", sa.String(16), nullable=False),
    # The rule as authored (audiences/rules.py); parsed again whenever it is evaluated, so what
    # the user wrote is what is kept. NULL for a list audience.
    sa.Column("rule", sa.Text(), nullable=True),
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
