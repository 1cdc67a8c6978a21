"""Workspaces and API keys: creation, listing, revocation and authentication of a secret."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from tidings.clock import utcnow
from tidings.db import Database
from tidings.errors import AuthenticationFailed, Conflict, NotFound, PermissionDenied
from tidings.ids import new_id
from tidings.workspaces.models import api_keys, workspaces
from tidings.workspaces.schemas import Scope

DEFAULT_WORKSPACE = "default"
KEY_PREFIX = "tdg_"
DISPLAY_PREFIX_LENGTH = 12
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key of one workspace with its scopes."""

    workspace_id: str
    workspace_name: str
    key_id: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes

    def require(self, scope: Scope) -> None:
        if not self.allows(scope):
            raise PermissionDenied(f"this API key lacks the '{scope}' scope")


def create_workspace(db: Database, name: str) -> dict[str, Any]:
    with db.write() as conn:
        exists = conn.execute(sa.select(workspaces.c.id).where(workspaces.c.name == name)).first()
        if exists:
            raise Conflict(f"a workspace named '{name}' exists already")
        row: dict[str, Any] = {
            "id": new_id(),
            "name": name,
            "settings": {},
            "unset_consent": None,
            "created_at": utcnow(),
        }
        conn.execute(workspaces.insert().values(**row))
    return row


def ensure_workspace(db: Database, name: str = DEFAULT_WORKSPACE) -> dict[str, Any]:
    """The workspace of that name, created on first use (the default one at first start)."""
    found = find_workspace(db, name)
    if found is not None:
        return found
    try:
        return create_workspace(db, name)
    except (Conflict, sa.exc.IntegrityError):
        # Another process created it between our read and our insert.
        found = find_workspace(db, name)
        assert found is not None
        return found


def find_workspace(db: Database, name: str) -> dict[str, Any] | None:
    with db.read() as conn:
        row = (
            conn.execute(sa.select(workspaces).where(workspaces.c.name == name)).mappings().first()
        )
    return dict(row) if row else None


def _load_workspace(conn: sa.Connection, workspace_id: str) -> dict[str, Any]:
    row = (
        conn.execute(sa.select(workspaces).where(workspaces.c.id == workspace_id))
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("no such workspace")
    return dict(row)


def get_workspace(db: Database, workspace_id: str) -> dict[str, Any]:
    with db.read() as conn:
        return _load_workspace(conn, workspace_id)


def update_workspace(db: Database, workspace_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Applies the fields given (a PATCH: absent fields keep their value, null clears one)."""
    allowed = {"unset_consent", "timezone"}
    values = {name: value for name, value in changes.items() if name in allowed}
    with db.write() as conn:
        if values:
            conn.execute(
                workspaces.update().where(workspaces.c.id == workspace_id).values(**values)
            )
        return _load_workspace(conn, workspace_id)


def list_workspaces(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(sa.select(workspaces).order_by(workspaces.c.name)).mappings().all()
    return [dict(row) for row in rows]


def create_api_key(
    db: Database,
    workspace_id: str,
    name: str,
    scopes: Iterable[Scope],
    secret: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Stores a new key and returns it with its secret, which is never retrievable again."""
    secret = secret or generate_secret()
    row = {
        "id": new_id(),
        "workspace_id": workspace_id,
        "name": name,
        "secret_hash": hash_secret(secret),
        # Enough to recognise a key, never enough to matter: at most a quarter of a short one.
        "display_prefix": secret[: min(DISPLAY_PREFIX_LENGTH, len(secret) // 4)],
        "scopes": sorted({Scope(scope).value for scope in scopes}),
        "created_at": utcnow(),
        "last_used_at": None,
        "revoked_at": None,
    }
    with db.write() as conn:
        taken = conn.execute(
            sa.select(api_keys.c.id).where(api_keys.c.secret_hash == row["secret_hash"])
        ).first()
        if taken:
            raise Conflict("an API key with this secret exists already")
        conn.execute(api_keys.insert().values(**row))
    return row, secret


def ensure_api_key(db: Database, workspace_id: str, secret: str, name: str) -> dict[str, Any]:
    """An admin key with exactly this secret in the workspace (TIDINGS_BOOTSTRAP_API_KEY)."""
    with db.write() as conn:
        row = (
            conn.execute(sa.select(api_keys).where(api_keys.c.secret_hash == hash_secret(secret)))
            .mappings()
            .first()
        )
        if row is not None:
            # The operator asked for this key to work: undo a revocation, restore admin.
            conn.execute(
                api_keys.update()
                .where(api_keys.c.id == row["id"])
                .values(workspace_id=workspace_id, revoked_at=None, scopes=[Scope.ADMIN.value])
            )
            return dict(row)
    created, _ = create_api_key(db, workspace_id, name, [Scope.ADMIN], secret=secret)
    return created


def list_api_keys(db: Database, workspace_id: str) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = (
            conn.execute(
                sa.select(api_keys)
                .where(api_keys.c.workspace_id == workspace_id)
                .order_by(api_keys.c.id)
            )
            .mappings()
            .all()
        )
    return [dict(row) for row in rows]


def count_active_keys(db: Database) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(api_keys)
                .where(api_keys.c.revoked_at.is_(None))
            ).scalar_one()
        )


def revoke_api_key(db: Database, workspace_id: str, key_id: str) -> dict[str, Any]:
    with db.write() as conn:
        row = (
            conn.execute(
                sa.select(api_keys).where(
                    api_keys.c.id == key_id, api_keys.c.workspace_id == workspace_id
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound("no such API key in this workspace")
        revoked = dict(row)
        if revoked["revoked_at"] is None:
            revoked["revoked_at"] = utcnow()
            conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id)
                .values(revoked_at=revoked["revoked_at"])
            )
    return revoked


class Authenticator:
    """Turns a bearer secret into a Principal, caching answers for a few seconds.

    The cache keeps the trigger hot path off the database for every request; a revoked key
    therefore stops working within `ttl_seconds`.
    """

    def __init__(self, db: Database, ttl_seconds: float = 5.0) -> None:
        self._db = db
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def cached(self, secret: str) -> Principal | None:
        """The principal of a key seen in the last `ttl_seconds`, without touching the database."""
        with self._lock:
            hit = self._cache.get(hash_secret(secret))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def authenticate(self, secret: str) -> Principal:
        digest = hash_secret(secret)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = self._load(digest)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        return principal

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    def _load(self, digest: str) -> Principal:
        query = (
            sa.select(api_keys, workspaces.c.name.label("workspace_name"))
            .join(workspaces, workspaces.c.id == api_keys.c.workspace_id)
            .where(api_keys.c.secret_hash == digest)
        )
        with self._db.read() as conn:
            row = conn.execute(query).mappings().first()
        if row is None or row["revoked_at"] is not None:
            raise AuthenticationFailed("unknown or revoked API key")
        now = utcnow()
        if row["last_used_at"] is None or now - row["last_used_at"] > LAST_USED_RESOLUTION:
            with self._db.write() as conn:
                conn.execute(
                    api_keys.update().where(api_keys.c.id == row["id"]).values(last_used_at=now)
                )
        return Principal(
            workspace_id=row["workspace_id"],
            workspace_name=row["workspace_name"],
            key_id=row["id"],
            scopes=frozenset(Scope(scope) for scope in row["scopes"]),
        )
