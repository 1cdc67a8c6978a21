"""Console accounts: argon2id passwords, roles per workspace, sessions, sign-in backoff."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tidings.db import Database
from tidings.errors import AuthenticationFailed, Conflict, InvalidInput, RateLimited
from tidings.ids import new_id
from tidings.users.models import (
    console_memberships,
    console_sessions,
    console_users,
    sign_in_failures,
)
from tidings.users.schemas import ConsoleSession, Role
from tidings.workspaces.models import workspaces

# argon2-cffi's defaults (RFC 9106's second recommendation: 64 MiB, 3 passes, 4 lanes).
_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
SESSION_LIFETIME = timedelta(hours=12)
# Failures of one account from one address before sign-in backs off; then the wait doubles
# with every further failure, up to the cap. A success clears the count.
FREE_FAILURES = 5
FIRST_LOCK = timedelta(seconds=30)
MAX_LOCK = timedelta(minutes=15)
# Spent on an unknown address too, so timing does not tell which accounts exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    check_password(password)
    return _hasher.hash(password)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput.on("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput.on("password", f"must be at most {MAX_PASSWORD_LENGTH} characters")


def password_matches(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _normalized_email(email: str) -> str:
    value = email.strip().lower()
    if "@" not in value or len(value) > 320 or any(c.isspace() for c in value):
        raise InvalidInput.on("email", "is not an email address")
    return value


def count_users(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(console_users)).scalar_one())


def create_user(
    db: Database, email: str, password: str, workspace_id: str, role: Role, now: datetime
) -> dict[str, Any]:
    """Creates an account with a role in one workspace; an existing account gets the role."""
    address = _normalized_email(email)
    password_hash = hash_password(password)
    with db.write() as conn:
        existing = conn.execute(
            sa.select(console_users.c.id).where(console_users.c.email == address)
        ).scalar_one_or_none()
        if existing is not None:
            raise Conflict(f"a console user {address} exists already")
        user_id = new_id()
        conn.execute(
            console_users.insert().values(
                id=user_id, email=address, password_hash=password_hash, created_at=now
            )
        )
        conn.execute(
            console_memberships.insert().values(
                user_id=user_id, workspace_id=workspace_id, role=role.value, created_at=now
            )
        )
    return {"id": user_id, "email": address, "workspace_id": workspace_id, "role": role}


def list_members(db: Database, workspace_id: str) -> list[dict[str, Any]]:
    query = (
        sa.select(
            console_users.c.id,
            console_users.c.email,
            console_users.c.created_at,
            console_memberships.c.role,
        )
        .join(console_memberships, console_memberships.c.user_id == console_users.c.id)
        .where(console_memberships.c.workspace_id == workspace_id)
        .order_by(console_users.c.email)
    )
    with db.read() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def _account_key(email: str, client: str) -> str:
    return f"{email.strip().lower()[:320]}|{client[:64]}"


def _lock_for(failures: int) -> timedelta | None:
    if failures < FREE_FAILURES:
        return None
    return min(FIRST_LOCK * (1 << min(failures - FREE_FAILURES, 16)), MAX_LOCK)


def _locked_until(conn: sa.Connection, key: str) -> datetime | None:
    row = conn.execute(
        sa.select(sign_in_failures.c.locked_until).where(sign_in_failures.c.account_key == key)
    ).scalar_one_or_none()
    return row


def _record_failure(db: Database, key: str, now: datetime) -> None:
    with db.write() as conn:
        failures = conn.execute(
            sa.select(sign_in_failures.c.failures).where(sign_in_failures.c.account_key == key)
        ).scalar_one_or_none()
        count = (failures or 0) + 1
        lock = _lock_for(count)
        values = {
            "failures": count,
            "last_failure_at": now,
            "locked_until": now + lock if lock else None,
        }
        if failures is None:
            conn.execute(sign_in_failures.insert().values(account_key=key, **values))
        else:
            conn.execute(
                sign_in_failures.update()
                .where(sign_in_failures.c.account_key == key)
                .values(**values)
            )


def authenticate(
    db: Database, email: str, password: str, client: str, now: datetime
) -> dict[str, Any]:
    """The account whose address and password these are, after the backoff allows a try.

    Raises RateLimited while this account is locked for this client address, and
    AuthenticationFailed (the same for an unknown address and a wrong password) otherwise.
    """
    key = _account_key(email, client)
    with db.read() as conn:
        locked_until = _locked_until(conn, key)
        if locked_until is not None and locked_until > now:
            raise RateLimited(
                "too many failed sign-ins: try again later",
                retry_after=(locked_until - now).total_seconds(),
            )
        user = (
            conn.execute(
                sa.select(console_users).where(
                    console_users.c.email == email.strip().lower()[:320],
                    console_users.c.disabled_at.is_(None),
                )
            )
            .mappings()
            .first()
        )
    if user is None:
        password_matches(_DUMMY_HASH, password)
        _record_failure(db, key, now)
        raise AuthenticationFailed("wrong email or password")
    if not password_matches(user["password_hash"], password):
        _record_failure(db, key, now)
        raise AuthenticationFailed("wrong email or password")
    with db.write() as conn:
        conn.execute(sign_in_failures.delete().where(sign_in_failures.c.account_key == key))
        if _hasher.check_needs_rehash(user["password_hash"]):
            conn.execute(
                console_users.update()
                .where(console_users.c.id == user["id"])
                .values(password_hash=_hasher.hash(password))
            )
    return dict(user)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(
    db: Database, user_id: str, now: datetime, workspace_id: str | None = None
) -> str:
    """Opens a session in the user's workspace (the first one, unless named); returns the
    cookie's token."""
    with db.write() as conn:
        query = sa.select(console_memberships.c.workspace_id).where(
            console_memberships.c.user_id == user_id
        )
        if workspace_id is not None:
            query = query.where(console_memberships.c.workspace_id == workspace_id)
        chosen = conn.execute(
            query.order_by(console_memberships.c.created_at).limit(1)
        ).scalar_one_or_none()
        if chosen is None:
            raise AuthenticationFailed("this account is a member of no workspace")
        token = secrets.token_urlsafe(32)
        conn.execute(
            console_sessions.insert().values(
                token_hash=_token_hash(token),
                user_id=user_id,
                workspace_id=chosen,
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=now + SESSION_LIFETIME,
            )
        )
        # Expired sessions go when anyone signs in: no extra job for a small table.
        conn.execute(console_sessions.delete().where(console_sessions.c.expires_at <= now))
    return token


def session_for(db: Database, token: str, now: datetime) -> ConsoleSession | None:
    """The live session of a cookie's token, with the user's current role; None if none."""
    if not token or len(token) > 128:
        return None
    query = (
        sa.select(
            console_sessions.c.user_id,
            console_sessions.c.workspace_id,
            console_sessions.c.csrf_token,
            console_users.c.email,
            console_memberships.c.role,
            workspaces.c.name.label("workspace_name"),
        )
        .join(console_users, console_users.c.id == console_sessions.c.user_id)
        .join(
            console_memberships,
            (console_memberships.c.user_id == console_sessions.c.user_id)
            & (console_memberships.c.workspace_id == console_sessions.c.workspace_id),
        )
        .join(workspaces, workspaces.c.id == console_sessions.c.workspace_id)
        .where(
            console_sessions.c.token_hash == _token_hash(token),
            console_sessions.c.expires_at > now,
            console_users.c.disabled_at.is_(None),
        )
    )
    with db.read() as conn:
        row = conn.execute(query).mappings().first()
    if row is None:
        return None
    return ConsoleSession(
        user_id=row["user_id"],
        email=row["email"],
        workspace_id=row["workspace_id"],
        workspace_name=row["workspace_name"],
        role=Role(row["role"]),
        csrf_token=row["csrf_token"],
    )


def end_session(db: Database, token: str) -> None:
    with db.write() as conn:
        conn.execute(
            console_sessions.delete().where(console_sessions.c.token_hash == _token_hash(token))
        )
