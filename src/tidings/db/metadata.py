"""The shared MetaData every feature's models.py registers its tables on."""

from __future__ import annotations

import sqlalchemy as sa

# Deterministic constraint names, so Alembic migrations can name what they alter or drop.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
