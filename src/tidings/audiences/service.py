"""Audiences, lists and rules: create, read, change, delete, members in and out, estimates, and
paging members for the fan-out of audience executions. Knows nothing of HTTP."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from tidings.audiences import rule_sql, rules
from tidings.audiences.models import audience_members, audiences
from tidings.audiences.schemas import AudienceCreate, AudienceUpdate
from tidings.campaigns.models import campaign_versions, campaigns
from tidings.clock import utcnow
from tidings.db import Database
from tidings.db.upsert import insert_ignoring_conflicts
from tidings.errors import Conflict, FieldError, InvalidInput, NotFound
from tidings.ids import new_id
from tidings.pagination import keyset_page
from tidings.profiles.models import profile_identities, profiles
from tidings.profiles.schemas import Identity
from tidings.profiles.service import normalize_identity

LIST_KIND = "list"
RULE_KIND = "rule"
NOT_FOUND = "no such audience in this workspace"
NO_PROFILE = "no profile has this identity"
NO_MEMBERS = "a rule audience has no members to add or remove: change its rule instead"
# An estimate counts matching profiles up to this many (a LIMIT under the COUNT), so reading a
# rule audience stays bounded by the workspace's size, not by the audience's.
ESTIMATE_CAP = 100_000
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


def _view(row: sa.RowMapping) -> dict[str, Any]:
    view = dict(row)
    if view["kind"] == RULE_KIND:
        view["member_count"] = None
    return view


def load(
    conn: sa.Connection, workspace_id: str, audience_id: str, *, now: datetime | None = None
) -> dict[str, Any] | None:
    """The audience; with `now`, a rule audience comes with its estimate at that time."""
    row = (
        conn.execute(
            _query().where(audiences.c.id == audience_id, audiences.c.workspace_id == workspace_id)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    view = _view(row)
    if now is not None and view["kind"] == RULE_KIND:
        try:
            rule = rules.parse(view["rule"])
        except rules.RuleError:
            # Saved before the language's limits were narrowed (a duration of over a century,
            # a date past 9998): still readable, and changeable by PATCH, without an estimate.
            return view
        view["estimate"] = count_matching(conn, workspace_id, rule, now)
    return view


def _any_audience(conn: sa.Connection, *conditions: sa.ColumnElement[bool]) -> bool:
    return conn.execute(sa.select(audiences.c.id).where(*conditions)).first() is not None


def exists(conn: sa.Connection, workspace_id: str, audience_id: str) -> bool:
    """Whether the workspace has this audience."""
    return _any_audience(
        conn, audiences.c.id == audience_id, audiences.c.workspace_id == workspace_id
    )


def get(db: Database, workspace_id: str, audience_id: str) -> dict[str, Any]:
    with db.read() as conn:
        row = load(conn, workspace_id, audience_id, now=utcnow())
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
    return [_view(row) for row in rows], next_cursor


def parse_rule(source: str, field_name: str = "rule") -> rules.Rule:
    """The rule, or a 422 naming the field, with the line and column of the problem."""
    try:
        return rules.parse(source)
    except rules.RuleError as exc:
        raise InvalidInput(
            f"{field_name}: {exc}",
            errors=[FieldError(field_name, str(exc), line=exc.line, column=exc.column)],
        ) from None


def _matching(
    conn: sa.Connection, workspace_id: str, rule: rules.Rule, now: datetime
) -> sa.Select[str]:
    return sa.select(profiles.c.id).where(
        profiles.c.workspace_id == workspace_id,
        rule_sql.condition(rule, conn.dialect.name, now),
    )


def count_matching(
    conn: sa.Connection,
    workspace_id: str,
    rule: rules.Rule,
    now: datetime,
    cap: int = ESTIMATE_CAP,
) -> dict[str, Any]:
    """`{count, exact}`: the profiles of the workspace the rule matches at `now`, counted up to
    `cap` (beyond it, `count` is the cap and `exact` false)."""
    matching = _matching(conn, workspace_id, rule, now).limit(cap + 1).subquery()
    count = conn.execute(sa.select(sa.func.count()).select_from(matching)).scalar_one()
    return {"count": min(count, cap), "exact": count <= cap}


def estimate(db: Database, workspace_id: str, source: str) -> dict[str, Any]:
    """How many profiles of the workspace a rule (not saved) matches now."""
    rule = parse_rule(source)
    with db.read() as conn:
        return count_matching(conn, workspace_id, rule, utcnow())


def member_page(
    conn: sa.Connection,
    audience_id: str,
    after_profile_id: str | None,
    limit: int,
    *,
    now: datetime | None = None,
) -> list[str]:
    """Up to `limit` member profile ids in ascending order, after `after_profile_id`.

    A keyset walk: of the (audience_id, profile_id) primary key for a list audience, of the
    profiles of its workspace by id for a rule audience (the rule evaluated at `now`, by
    default the time of the call). The fan-out of an audience execution reads pages of any
    audience size in flat memory, and resumes from the last id it queued. No audience: no
    members. The caller checks the audience's workspace.
    """
    audience = conn.execute(
        sa.select(audiences.c.workspace_id, audiences.c.kind, audiences.c.rule).where(
            audiences.c.id == audience_id
        )
    ).first()
    if audience is None:
        return []
    if audience.kind == RULE_KIND:
        id_column = profiles.c.id
        rule = rules.parse(audience.rule)
        query = _matching(conn, audience.workspace_id, rule, now or utcnow())
    else:
        id_column = audience_members.c.profile_id
        query = sa.select(id_column).where(audience_members.c.audience_id == audience_id)
    if after_profile_id is not None:
        query = query.where(id_column > after_profile_id)
    return list(conn.execute(query.order_by(id_column).limit(limit)).scalars())


# ---------------------------------------------------------------- writing


def _name_taken(conn: sa.Connection, workspace_id: str, name: str) -> bool:
    return _any_audience(conn, audiences.c.workspace_id == workspace_id, audiences.c.name == name)


def create(
    db: Database, workspace_id: str, body: AudienceCreate
) -> tuple[dict[str, Any], MembersResult]:
    """A new rule audience when the body has a rule; else a new list audience with the members
    the body names that resolve to profiles."""
    if body.rule is not None:
        if body.members:
            raise InvalidInput.on(
                "members", "a rule audience has no members: send either `rule` or `members`"
            )
        parse_rule(body.rule)
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
                kind=LIST_KIND if body.rule is None else RULE_KIND,
                rule=body.rule,
                created_at=now,
                updated_at=now,
            )
        )
        result = _add_within(conn, workspace_id, audience_id, body.members, now)
    # Counted after the commit: an estimate does not hold the write lock.
    return get(db, workspace_id, audience_id), result


def update(
    db: Database, workspace_id: str, audience_id: str, body: AudienceUpdate
) -> dict[str, Any]:
    """Renames, describes, or changes the rule of a rule audience; fields not sent stay."""
    sent = body.model_fields_set
    for name in ("name", "rule"):
        if name in sent and getattr(body, name) is None:
            raise InvalidInput.on(name, "cannot be null")
    if body.rule is not None:
        parse_rule(body.rule)
    values: dict[str, Any] = {}
    with db.write() as conn:
        kind = _lock(conn, workspace_id, audience_id)
        if body.rule is not None:
            if kind != RULE_KIND:
                raise Conflict("a list audience has no rule: create a rule audience instead")
            values["rule"] = body.rule
        if body.name is not None:
            taken = _any_audience(
                conn,
                audiences.c.workspace_id == workspace_id,
                audiences.c.name == body.name,
                audiences.c.id != audience_id,
            )
            if taken:
                raise Conflict(f"an audience named '{body.name}' exists already")
            values["name"] = body.name
        if "description" in sent:
            values["description"] = body.description
        if values:
            values["updated_at"] = utcnow()
            conn.execute(audiences.update().where(audiences.c.id == audience_id).values(**values))
    return get(db, workspace_id, audience_id)


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


def _lock(conn: sa.Connection, workspace_id: str, audience_id: str) -> str:
    """Holds the audience row for the transaction (PostgreSQL; SQLite has one writer), so a
    concurrent delete cannot remove it under the memberships being written; its kind."""
    kind = conn.execute(
        sa.select(audiences.c.kind)
        .where(audiences.c.id == audience_id, audiences.c.workspace_id == workspace_id)
        .with_for_update()
    ).scalar()
    if kind is None:
        raise NotFound(NOT_FOUND)
    return str(kind)


def add_members(
    db: Database, workspace_id: str, audience_id: str, members: Sequence[Identity]
) -> MembersResult:
    """Adds the profiles the identities name; members already in the audience stay as they are."""
    now = utcnow()
    with db.write() as conn:
        if _lock(conn, workspace_id, audience_id) == RULE_KIND:
            raise Conflict(NO_MEMBERS)
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
        if _lock(conn, workspace_id, audience_id) == RULE_KIND:
            raise Conflict(NO_MEMBERS)
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
