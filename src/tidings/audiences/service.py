"""List audiences: create, read, list, delete, members in and out, and paging members for the
fan-out of audience executions. Knows nothing of HTTP."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

from tidings.audiences.models import audience_members, audiences
from tidings.audiences.schemas import AudienceCreate
from tidings.campaigns.models import campaign_versions, campaigns
from tidings.clock import utcnow
from tidings.db import Database
from tidings.db.upsert import insert_ignoring_conflicts
from tidings.errors import Conflict, InvalidInput, NotFound
from tidings.ids import new_id
from tidings.pagination import keyset_page
from tidings.profiles.models import profile_identities
from tidings.profiles.schemas import Identity
from tidings.profiles.service import normalize_identity

LIST_KIND = "list"
NOT_FOUND = "no such audience in this workspace"
NO_PROFILE = "no profile has this identity"
# Values per IN (...) list: well under SQLite's limit on bound parameters.
CHUNK = 500
_ACTIVE_CAMPAIGNS = ("live", "scheduled")

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(slots=True)
class MembersResult:
    """How many memberships a change made, and the request's members it could not use."""

    count: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------- reading


def _member_count() -> sa.ScalarSelect[int]:
    return (
        sa.select(sa.func.count())
        .select_from(audience_members)
        .where(audience_members.c.audience_id == audiences.c.id)
        .scalar_subquery()
    )


def _query() -> sa.Select[Any]:
    return sa.select(audiences, _member_count().label("member_count"))


def load(conn: sa.Connection, workspace_id: str, audience_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            _query().where(audiences.c.id == audience_id, audiences.c.workspace_id == workspace_id)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def _any_audience(conn: sa.Connection, *conditions: sa.ColumnElement[bool]) -> bool:
    return conn.execute(sa.select(audiences.c.id).where(*conditions)).first() is not None


def exists(conn: sa.Connection, workspace_id: str, audience_id: str) -> bool:
    """Whether the workspace has this audience."""
    return _any_audience(
        conn, audiences.c.id == audience_id, audiences.c.workspace_id == workspace_id
    )


def get(db: Database, workspace_id: str, audience_id: str) -> dict[str, Any]:
    with db.read() as conn:
        row = load(conn, workspace_id, audience_id)
    if row is None:
        raise NotFound(NOT_FOUND)
    return row


def list_page(
    db: Database, workspace_id: str, *, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Audiences of the workspace, newest first."""
    query = _query().where(audiences.c.workspace_id == workspace_id)
    with db.read() as conn:
        rows, next_cursor = keyset_page(
            conn, query, audiences.c.id, cursor, limit, newest_first=True
        )
    return [dict(row) for row in rows], next_cursor


def member_page(
    conn: sa.Connection, audience_id: str, after_profile_id: str | None, limit: int
) -> list[str]:
    """Up to `limit` member profile ids in ascending order, after `after_profile_id`.

    A keyset walk of the (audience_id, profile_id) primary key: the fan-out of an audience
    execution reads pages of any audience size in flat memory, and resumes from the last id it
    queued. The caller checks the audience's workspace.
    """
    query = sa.select(audience_members.c.profile_id).where(
        audience_members.c.audience_id == audience_id
    )
    if after_profile_id is not None:
        query = query.where(audience_members.c.profile_id > after_profile_id)
    return list(conn.execute(query.order_by(audience_members.c.profile_id).limit(limit)).scalars())


# ---------------------------------------------------------------- writing


def _name_taken(conn: sa.Connection, workspace_id: str, name: str) -> bool:
    return _any_audience(conn, audiences.c.workspace_id == workspace_id, audiences.c.name == name)


def create(
    db: Database, workspace_id: str, body: AudienceCreate
) -> tuple[dict[str, Any], MembersResult]:
    """A new list audience with the members the body names that resolve to profiles."""
    now = utcnow()
    audience_id = new_id()
    with db.write() as conn:
        if _name_taken(conn, workspace_id, body.name):
            raise Conflict(f"an audience named '{body.name}' exists already")
        conn.execute(
            audiences.insert().values(
                id=audience_id,
                workspace_id=workspace_id,
                name=body.name,
                description=body.description,
                kind=LIST_KIND,
                created_at=now,
                updated_at=now,
            )
        )
        result = _add_within(conn, workspace_id, audience_id, body.members, now)
        row = load(conn, workspace_id, audience_id)
    assert row is not None
    return row, result


def delete(db: Database, workspace_id: str, audience_id: str) -> None:
    """Removes the audience and its memberships (never the profiles).

    Refused while a live or scheduled campaign targets it. An audience execution that has not
    finished its fan-out fails when it finds its audience gone (executions/fanout.py).
    """
    with db.write() as conn:
        _lock(conn, workspace_id, audience_id)
        if _targeted_by_active_campaign(conn, workspace_id, audience_id):
            raise Conflict("a live or scheduled campaign targets this audience; change it first")
        conn.execute(audience_members.delete().where(audience_members.c.audience_id == audience_id))
        conn.execute(audiences.delete().where(audiences.c.id == audience_id))


def _targeted_by_active_campaign(conn: sa.Connection, workspace_id: str, audience_id: str) -> bool:
    """Whether the live version of a live or scheduled campaign names the audience.

    The audience sits in a JSON column whose operators differ between the backends, so the
    (few) live versions of the workspace are read and looked at here.
    """
    query = (
        sa.select(campaign_versions.c.audience)
        .join(campaigns, campaign_versions.c.id == campaigns.c.live_version_id)
        .where(
            campaigns.c.workspace_id == workspace_id,
            campaigns.c.status.in_(_ACTIVE_CAMPAIGNS),
        )
    )
    return any(
        (audience or {}).get("audience_id") == audience_id
        for audience in conn.execute(query).scalars()
    )


def _lock(conn: sa.Connection, workspace_id: str, audience_id: str) -> None:
    """Holds the audience row for the transaction (PostgreSQL; SQLite has one writer), so a
    concurrent delete cannot remove it under the memberships being written."""
    found = conn.execute(
        sa.select(audiences.c.id)
        .where(audiences.c.id == audience_id, audiences.c.workspace_id == workspace_id)
        .with_for_update()
    ).first()
    if found is None:
        raise NotFound(NOT_FOUND)


def add_members(
    db: Database, workspace_id: str, audience_id: str, members: Sequence[Identity]
) -> MembersResult:
    """Adds the profiles the identities name; members already in the audience stay as they are."""
    now = utcnow()
    with db.write() as conn:
        _lock(conn, workspace_id, audience_id)
        result = _add_within(conn, workspace_id, audience_id, members, now)
        if result.count:
            _touch(conn, audience_id, now)
    return result


def remove_members(
    db: Database, workspace_id: str, audience_id: str, members: Sequence[Identity]
) -> MembersResult:
    """Removes the profiles the identities name; non-members are no error."""
    now = utcnow()
    with db.write() as conn:
        _lock(conn, workspace_id, audience_id)
        profile_ids, rejected = _resolve(conn, workspace_id, members)
        removed = 0
        for chunk in _chunks(profile_ids):
            outcome = conn.execute(
                audience_members.delete().where(
                    audience_members.c.audience_id == audience_id,
                    audience_members.c.profile_id.in_(chunk),
                )
            )
            removed += outcome.rowcount
        if removed:
            _touch(conn, audience_id, now)
    return MembersResult(removed, rejected)


def _touch(conn: sa.Connection, audience_id: str, now: Any) -> None:
    conn.execute(audiences.update().where(audiences.c.id == audience_id).values(updated_at=now))


def _add_within(
    conn: sa.Connection,
    workspace_id: str,
    audience_id: str,
    members: Sequence[Identity],
    now: Any,
) -> MembersResult:
    profile_ids, rejected = _resolve(conn, workspace_id, members)
    added = 0
    for chunk in _chunks(profile_ids):
        present = set(
            conn.execute(
                sa.select(audience_members.c.profile_id).where(
                    audience_members.c.audience_id == audience_id,
                    audience_members.c.profile_id.in_(chunk),
                )
            ).scalars()
        )
        rows = [
            {"audience_id": audience_id, "profile_id": profile_id, "added_at": now}
            for profile_id in chunk
            if profile_id not in present
        ]
        # A concurrent add of the same member is ignored, not an error.
        insert_ignoring_conflicts(conn, audience_members, rows)
        added += len(rows)
    return MembersResult(added, rejected)


def _resolve(
    conn: sa.Connection, workspace_id: str, members: Sequence[Identity]
) -> tuple[list[str], list[dict[str, Any]]]:
    """The distinct profile ids (ascending) the identities name, and the identities rejected:
    invalid ones with the validation message, unknown ones. No profile is created."""
    rejected: list[dict[str, Any]] = []
    wanted: dict[tuple[str, str], list[int]] = {}
    for index, member in enumerate(members):
        try:
            value = normalize_identity(member.namespace, member.id, f"members.{index}.id")
        except InvalidInput as exc:
            reason = exc.errors[0].message if exc.errors else exc.detail
            rejected.append(_rejection(index, member, reason))
            continue
        wanted.setdefault((member.namespace, value), []).append(index)
    owners = _owners(conn, workspace_id, wanted)
    profile_ids: set[str] = set()
    for identity, indexes in wanted.items():
        owner = owners.get(identity)
        if owner is None:
            rejected.extend(_rejection(index, members[index], NO_PROFILE) for index in indexes)
        else:
            profile_ids.add(owner)
    rejected.sort(key=lambda rejection: int(rejection["index"]))
    return sorted(profile_ids), rejected


def _rejection(index: int, member: Identity, reason: str) -> dict[str, Any]:
    return {"index": index, "namespace": member.namespace, "id": member.id, "reason": reason}


def _owners(
    conn: sa.Connection, workspace_id: str, identities: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """Profile id of each identity that one of the workspace's profiles has, by namespace and
    chunks of values (the identities' primary key)."""
    by_namespace: dict[str, list[str]] = {}
    for namespace, value in identities:
        by_namespace.setdefault(namespace, []).append(value)
    owners: dict[tuple[str, str], str] = {}
    for namespace, values in by_namespace.items():
        for chunk in _chunks(values):
            rows = conn.execute(
                sa.select(profile_identities.c.value, profile_identities.c.profile_id).where(
                    profile_identities.c.workspace_id == workspace_id,
                    profile_identities.c.namespace == namespace,
                    profile_identities.c.value.in_(chunk),
                )
            ).all()
            owners.update({(namespace, row.value): row.profile_id for row in rows})
    return owners
