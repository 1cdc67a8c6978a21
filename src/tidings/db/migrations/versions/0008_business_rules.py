"""Business rule sets (frequency caps, quiet hours), their counters, and a workspace time zone.

Also renames exclusion reasons to the documented codes: `suppressed` becomes the code it kept
as detail (`suppressed_address`, `suppressed_domain`), `frequency_cap` `frequency_capped`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.migration_ops import drop_plain_column
from tidings.db.types import UTCDateTime, json_type

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_sets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("frequency_caps", json_type(), nullable=False),
        sa.Column("quiet_hours", json_type(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_rule_sets_workspace_id_workspaces")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_sets")),
        sa.UniqueConstraint("workspace_id", "name", name=op.f("uq_rule_sets_workspace_id_name")),
    )
    op.create_table(
        "frequency_counters",
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("cap_key", sa.String(length=64), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("period_end", UTCDateTime(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_frequency_counters_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint(
            "workspace_id",
            "recipient",
            "cap_key",
            "period_start",
            name=op.f("pk_frequency_counters"),
        ),
    )
    op.create_index(op.f("ix_frequency_counters_period_end"), "frequency_counters", ["period_end"])
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rule_set_ids", json_type(), nullable=True))
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE messages SET reason = last_error, last_error = NULL WHERE reason = 'suppressed' "
        "AND last_error IN ('suppressed_address', 'suppressed_domain')"
    )
    op.execute("UPDATE messages SET reason = 'frequency_capped' WHERE reason = 'frequency_cap'")


def downgrade() -> None:
    op.execute("UPDATE messages SET reason = 'frequency_cap' WHERE reason = 'frequency_capped'")
    op.execute(
        "UPDATE messages SET last_error = reason, reason = 'suppressed' "
        "WHERE reason IN ('suppressed_address', 'suppressed_domain')"
    )
    # Not batch mode: on SQLite it would drop and recreate `workspaces` and `campaigns`, which
    # other tables reference (see drop_plain_column).
    drop_plain_column("workspaces", "timezone")
    drop_plain_column("campaigns", "rule_set_ids")
    op.drop_index(op.f("ix_frequency_counters_period_end"), table_name="frequency_counters")
    op.drop_table("frequency_counters")
    op.drop_table("rule_sets")
