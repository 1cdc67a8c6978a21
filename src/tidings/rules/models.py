"""Tables of business rule sets and of the frequency counters their caps read."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.db.metadata import metadata
from tidings.db.types import UTCDateTime, id_column, json_type

rule_sets = sa.Table(
    "rule_sets",
    metadata,
    id_column(primary_key=True),
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    # A default rule set applies to every marketing campaign of its workspace.
    sa.Column("is_default", sa.Boolean(), nullable=False),
    sa.Column("frequency_caps", json_type(), nullable=False),
    sa.Column("quiet_hours", json_type(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("workspace_id", "name"),
)

# Marketing messages claimed per recipient, counter key (channels and period, see
# policy.cap_key) and calendar period. A claim adds one in its own transaction, so the row lock
# makes concurrent workers take turns and a cap is never passed; outcomes other than sent give
# the count back.
frequency_counters = sa.Table(
    "frequency_counters",
    metadata,
    id_column("workspace_id", sa.ForeignKey("workspaces.id"), primary_key=True),
    # The profile id, or the address when the message has no profile.
    sa.Column("recipient", sa.String(320), primary_key=True),
    sa.Column("cap_key", sa.String(64), primary_key=True),
    sa.Column("period_start", UTCDateTime(), primary_key=True),
    sa.Column("period_end", UTCDateTime(), nullable=False, index=True),
    sa.Column("sent", sa.Integer(), nullable=False),
)
