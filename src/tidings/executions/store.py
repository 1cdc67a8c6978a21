"""The trigger batch's storage port: what `service.accept_batch` reads and writes.

Two implementations with one interface. `SqlAlchemyStore` runs on any connection of the
`Database` (PostgreSQL, and SQLite outside the event loop). `SqliteStore` runs the same
statements straight on the sqlite3 connection for batches committed in the event loop: through
SQLAlchemy, a transaction and each statement cost over a tenth of a millisecond of Python,
about twenty times SQLite's own work, and small batches paid it in full.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from tidings.audiences.models import audiences
from tidings.campaigns.models import campaign_versions, campaigns
from tidings.channels.models import channel_configurations
from tidings.db.bulk import bulk_insert, sqlite_insert
from tidings.db.types import bind_processor
from tidings.events import MessageEvent, announce, announce_on_sqlite
from tidings.executions.models import idempotency_keys
from tidings.profiles.models import profile_identities, profile_push_tokens

# Columns of the reads, in order, for both implementations.
CAMPAIGN_STATE_COLUMNS = ("id", "workspace_id", "status", "channel", "category", "live_version_id")
LIVE_VERSION_COLUMNS = ("id", "audience", "start_at", "end_at", "channel_configuration_id")


class TriggerStore(Protocol):
    def lock_key(self, workspace_id: str, key: str) -> bool:
        """Takes the idempotency key for this transaction; False when another holds it."""

    def stored_responses(
        self, workspace_id: str, keys: Sequence[str], now: datetime
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """(key, request hash, response) of unexpired keys."""

    def campaign_states(self, ids: Sequence[str]) -> list[dict[str, Any]]: ...

    def live_versions(self, ids: Sequence[str]) -> list[dict[str, Any]]: ...

    def existing_audiences(self, ids: Sequence[str]) -> set[tuple[str, str]]:
        """(workspace_id, audience id) of those that exist."""

    def profile_ids(
        self, workspace_id: str, namespace: str, values: Sequence[str]
    ) -> list[tuple[str, str]]:
        """(identity value, profile id)."""

    def addresses(self, profile_ids: Sequence[str], namespace: str) -> list[tuple[str, str]]:
        """(profile id, identity value in `namespace`)."""

    def push_app_ids(self, configuration_ids: Sequence[str]) -> dict[str, str | None]:
        """The app id the push settings of each configuration name (None: any app)."""

    def push_tokens(self, profile_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        """(profile id, app id, token) of the profiles' push tokens, the newest first."""

    def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None: ...

    def forget_keys(self, workspace_id: str, keys: Sequence[str]) -> None: ...

    def announce(self, events: Sequence[MessageEvent]) -> None:
        """events.announce, in this store's transaction."""


def advisory_lock_id(workspace_id: str, key: str) -> int:
    digest = hashlib.sha256(f"{workspace_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# Built once: a statement object caches its compiled form.
_STORED_RESPONSES = sa.select(
    idempotency_keys.c.key, idempotency_keys.c.request_hash, idempotency_keys.c.response
).where(
    idempotency_keys.c.workspace_id == sa.bindparam("workspace_id"),
    idempotency_keys.c.key.in_(sa.bindparam("keys", expanding=True)),
    idempotency_keys.c.expires_at > sa.bindparam("now"),
)
_CAMPAIGN_STATES = sa.select(*(campaigns.c[name] for name in CAMPAIGN_STATE_COLUMNS)).where(
    campaigns.c.id.in_(sa.bindparam("ids", expanding=True))
)
_LIVE_VERSIONS = sa.select(*(campaign_versions.c[name] for name in LIVE_VERSION_COLUMNS)).where(
    campaign_versions.c.id.in_(sa.bindparam("ids", expanding=True))
)
_AUDIENCES = sa.select(audiences.c.workspace_id, audiences.c.id).where(
    audiences.c.id.in_(sa.bindparam("ids", expanding=True))
)
_PROFILE_IDS = sa.select(profile_identities.c.value, profile_identities.c.profile_id).where(
    profile_identities.c.workspace_id == sa.bindparam("workspace_id"),
    profile_identities.c.namespace == sa.bindparam("namespace"),
    profile_identities.c.value.in_(sa.bindparam("values", expanding=True)),
)
_ADDRESSES = sa.select(profile_identities.c.profile_id, profile_identities.c.value).where(
    profile_identities.c.profile_id.in_(sa.bindparam("ids", expanding=True)),
    profile_identities.c.namespace == sa.bindparam("namespace"),
)
_PUSH_SETTINGS = sa.select(channel_configurations.c.id, channel_configurations.c.settings).where(
    channel_configurations.c.id.in_(sa.bindparam("ids", expanding=True))
)
_PUSH_TOKENS = (
    sa.select(
        profile_push_tokens.c.profile_id, profile_push_tokens.c.app_id, profile_push_tokens.c.token
    )
    .where(profile_push_tokens.c.profile_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(profile_push_tokens.c.last_seen_at.desc(), profile_push_tokens.c.created_at.desc())
)
_FORGET_KEYS = idempotency_keys.delete().where(
    idempotency_keys.c.workspace_id == sa.bindparam("workspace_id"),
    idempotency_keys.c.key.in_(sa.bindparam("keys", expanding=True)),
)


class SqlAlchemyStore:
    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def lock_key(self, workspace_id: str, key: str) -> bool:
        if self.conn.dialect.name != "postgresql":
            # SQLite has one writer: the transaction already excludes every other.
            return True
        lock = sa.func.pg_try_advisory_xact_lock(advisory_lock_id(workspace_id, key))
        return bool(self.conn.execute(sa.select(lock)).scalar_one())

    def stored_responses(
        self, workspace_id: str, keys: Sequence[str], now: datetime
    ) -> list[tuple[str, str, dict[str, Any]]]:
        rows = self.conn.execute(
            _STORED_RESPONSES, {"workspace_id": workspace_id, "keys": list(keys), "now": now}
        )
        return [(row.key, row.request_hash, row.response) for row in rows]

    def campaign_states(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return [
            dict(row) for row in self.conn.execute(_CAMPAIGN_STATES, {"ids": list(ids)}).mappings()
        ]

    def live_versions(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return [
            dict(row) for row in self.conn.execute(_LIVE_VERSIONS, {"ids": list(ids)}).mappings()
        ]

    def existing_audiences(self, ids: Sequence[str]) -> set[tuple[str, str]]:
        rows = self.conn.execute(_AUDIENCES, {"ids": list(ids)})
        return {(row.workspace_id, row.id) for row in rows}

    def profile_ids(
        self, workspace_id: str, namespace: str, values: Sequence[str]
    ) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            _PROFILE_IDS,
            {"workspace_id": workspace_id, "namespace": namespace, "values": list(values)},
        )
        return [(row.value, row.profile_id) for row in rows]

    def addresses(self, profile_ids: Sequence[str], namespace: str) -> list[tuple[str, str]]:
        rows = self.conn.execute(_ADDRESSES, {"ids": list(profile_ids), "namespace": namespace})
        return [(row.profile_id, row.value) for row in rows]

    def push_app_ids(self, configuration_ids: Sequence[str]) -> dict[str, str | None]:
        rows = self.conn.execute(_PUSH_SETTINGS, {"ids": list(configuration_ids)})
        return {row.id: row.settings.get("app_id") for row in rows}

    def push_tokens(self, profile_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        rows = self.conn.execute(_PUSH_TOKENS, {"ids": list(profile_ids)})
        return [(row.profile_id, row.app_id, row.token) for row in rows]

    def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        bulk_insert(self.conn, table, rows)

    def announce(self, events: Sequence[MessageEvent]) -> None:
        announce(self.conn, events)

    def forget_keys(self, workspace_id: str, keys: Sequence[str]) -> None:
        self.conn.execute(_FORGET_KEYS, {"workspace_id": workspace_id, "keys": list(keys)})


def _marks(count: int) -> str:
    return ", ".join("?" for _ in range(count))


@lru_cache(maxsize=8)
def _converters(dialect: Dialect) -> dict[str, Callable[[Any], Any]]:
    """SQLAlchemy's own conversions for the few typed values these statements read or bind,
    so the stored text is exactly what the rest of Tidings writes and reads."""

    def result(column: sa.Column[Any]) -> Callable[[Any], Any]:
        processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
        return processor if processor is not None else (lambda value: value)

    bind = bind_processor(idempotency_keys.c.expires_at.type, dialect)
    return {
        "audience": result(campaign_versions.c.audience),
        "start_at": result(campaign_versions.c.start_at),
        "end_at": result(campaign_versions.c.end_at),
        "settings": result(channel_configurations.c.settings),
        "now": bind if bind is not None else (lambda value: value),
    }


class SqliteStore:
    """The same reads and writes on a sqlite3 connection inside a transaction it was given."""

    def __init__(self, connection: sqlite3.Connection, dialect: Dialect) -> None:
        self.connection = connection
        self.dialect = dialect
        self._convert = _converters(dialect)

    def _rows(self, sql: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.connection.execute(sql, tuple(parameters)).fetchall()

    def lock_key(self, workspace_id: str, key: str) -> bool:
        return True

    def stored_responses(
        self, workspace_id: str, keys: Sequence[str], now: datetime
    ) -> list[tuple[str, str, dict[str, Any]]]:
        rows = self._rows(
            "SELECT key, request_hash, response FROM idempotency_keys "
            f"WHERE workspace_id = ? AND key IN ({_marks(len(keys))}) AND expires_at > ?",
            [workspace_id, *keys, self._convert["now"](now)],
        )
        return [(key, digest, json.loads(response)) for key, digest, response in rows]

    def campaign_states(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        rows = self._rows(
            f"SELECT {', '.join(CAMPAIGN_STATE_COLUMNS)} FROM campaigns "
            f"WHERE id IN ({_marks(len(ids))})",
            ids,
        )
        return [dict(zip(CAMPAIGN_STATE_COLUMNS, row, strict=True)) for row in rows]

    def live_versions(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        rows = self._rows(
            f"SELECT {', '.join(LIVE_VERSION_COLUMNS)} FROM campaign_versions "
            f"WHERE id IN ({_marks(len(ids))})",
            ids,
        )
        convert = self._convert
        return [
            {
                "id": version_id,
                "audience": convert["audience"](audience),
                "start_at": convert["start_at"](start_at),
                "end_at": convert["end_at"](end_at),
                "channel_configuration_id": configuration_id,
            }
            for version_id, audience, start_at, end_at, configuration_id in rows
        ]

    def existing_audiences(self, ids: Sequence[str]) -> set[tuple[str, str]]:
        rows = self._rows(
            f"SELECT workspace_id, id FROM audiences WHERE id IN ({_marks(len(ids))})", ids
        )
        return {(workspace_id, audience_id) for workspace_id, audience_id in rows}

    def profile_ids(
        self, workspace_id: str, namespace: str, values: Sequence[str]
    ) -> list[tuple[str, str]]:
        rows = self._rows(
            "SELECT value, profile_id FROM profile_identities "
            f"WHERE workspace_id = ? AND namespace = ? AND value IN ({_marks(len(values))})",
            [workspace_id, namespace, *values],
        )
        return [(value, profile_id) for value, profile_id in rows]

    def addresses(self, profile_ids: Sequence[str], namespace: str) -> list[tuple[str, str]]:
        rows = self._rows(
            "SELECT profile_id, value FROM profile_identities "
            f"WHERE profile_id IN ({_marks(len(profile_ids))}) AND namespace = ?",
            [*profile_ids, namespace],
        )
        return [(profile_id, value) for profile_id, value in rows]

    def push_app_ids(self, configuration_ids: Sequence[str]) -> dict[str, str | None]:
        rows = self._rows(
            "SELECT id, settings FROM channel_configurations "
            f"WHERE id IN ({_marks(len(configuration_ids))})",
            configuration_ids,
        )
        settings_of = self._convert["settings"]
        return {
            configuration_id: settings_of(settings).get("app_id")
            for configuration_id, settings in rows
        }

    def push_tokens(self, profile_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        rows = self._rows(
            "SELECT profile_id, app_id, token FROM profile_push_tokens "
            f"WHERE profile_id IN ({_marks(len(profile_ids))}) "
            "ORDER BY last_seen_at DESC, created_at DESC",
            profile_ids,
        )
        return [(profile_id, app_id, token) for profile_id, app_id, token in rows]

    def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            sql, parameters = sqlite_insert(self.dialect, table, rows)
            self.connection.executemany(sql, parameters)

    def announce(self, events: Sequence[MessageEvent]) -> None:
        announce_on_sqlite(self.connection, events)

    def forget_keys(self, workspace_id: str, keys: Sequence[str]) -> None:
        self.connection.execute(
            f"DELETE FROM idempotency_keys WHERE workspace_id = ? AND key IN ({_marks(len(keys))})",
            (workspace_id, *keys),
        )
