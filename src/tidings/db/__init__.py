"""Storage: one SQLAlchemy Core schema for SQLite (embedded) and PostgreSQL (scale-out)."""

from __future__ import annotations

from tidings.db.engine import Database

__all__ = ["Database"]
