"""Rule sets: create, read, change, delete, and attach to campaigns. Knows nothing of HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tidings.campaigns.models import campaigns
from tidings.clock import utcnow
from tidings.db import Database
from tidings.errors import Conflict, ErrorCollector, InvalidInput, NotFound
from tidings.ids import new_id
from tidings.rules.counters import purge_ended
from tidings.rules.models import rule_sets
from tidings.rules.schemas import RuleSetCreate, RuleSetPatch
from tidings.vocabulary import Category

NOT_FOUND = "no such rule set in this workspace"
CAMPAIGN_NOT_FOUND = "no such campaign in this workspace"
MAX_RULE_SETS = 200


def _view(row: Any) -> dict[str, Any]:
    values = dict(row._mapping)
    values["default"] = values.pop("is_default")
    return values


def _load(conn: sa.Connection, workspace_id: str, rule_set_id: str) -> dict[str, Any]:
    row = conn.execute(
        sa.select(rule_sets).where(
            rule_sets.c.workspace_id == workspace_id, rule_sets.c.id == rule_set_id
        )
    ).first()
    if row is None:
        raise NotFound(NOT_FOUND)
    return _view(row)


def _check_name(
    conn: sa.Connection, workspace_id: str, name: str, except_id: str | None = None
) -> None:
    query = sa.select(rule_sets.c.id).where(
        rule_sets.c.workspace_id == workspace_id, rule_sets.c.name == name
    )
    if except_id is not None:
        query = query.where(rule_sets.c.id != except_id)
    if conn.execute(query).first() is not None:
        raise Conflict(f"a rule set named '{name}' exists already")


def create(db: Database, workspace_id: str, body: RuleSetCreate) -> dict[str, Any]:
    now = utcnow()
    rule_set_id = new_id()
    with db.write() as conn:
        _check_name(conn, workspace_id, body.name)
        count = conn.execute(
            sa.select(sa.func.count()).where(rule_sets.c.workspace_id == workspace_id)
        ).scalar_one()
        if count >= MAX_RULE_SETS:
            raise Conflict(f"a workspace holds at most {MAX_RULE_SETS} rule sets")
        conn.execute(
            rule_sets.insert().values(
                id=rule_set_id,
                workspace_id=workspace_id,
                name=body.name,
                description=body.description,
                is_default=body.default,
                frequency_caps=[cap.model_dump(mode="json") for cap in body.frequency_caps],
                quiet_hours=body.quiet_hours.model_dump(mode="json") if body.quiet_hours else None,
                created_at=now,
                updated_at=now,
            )
        )
        return _load(conn, workspace_id, rule_set_id)


def get(db: Database, workspace_id: str, rule_set_id: str) -> dict[str, Any]:
    with db.read() as conn:
        return _load(conn, workspace_id, rule_set_id)


def list_all(db: Database, workspace_id: str) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(rule_sets)
            .where(rule_sets.c.workspace_id == workspace_id)
            .order_by(rule_sets.c.name)
        )
        return [_view(row) for row in rows]


def update(db: Database, workspace_id: str, rule_set_id: str, body: RuleSetPatch) -> dict[str, Any]:
    """A PATCH: fields left out keep their value; `quiet_hours: null` removes them. A change
    applies to the next message claimed, live campaigns included."""
    given = body.model_fields_set
    values: dict[str, Any] = {}
    if "name" in given and body.name is not None:
        values["name"] = body.name
    if "description" in given and body.description is not None:
        values["description"] = body.description
    if "default" in given and body.default is not None:
        values["is_default"] = body.default
    if "frequency_caps" in given and body.frequency_caps is not None:
        values["frequency_caps"] = [cap.model_dump(mode="json") for cap in body.frequency_caps]
    if "quiet_hours" in given:
        values["quiet_hours"] = (
            body.quiet_hours.model_dump(mode="json") if body.quiet_hours else None
        )
    with db.write() as conn:
        _load(conn, workspace_id, rule_set_id)
        if "name" in values:
            _check_name(conn, workspace_id, values["name"], except_id=rule_set_id)
        if values:
            conn.execute(
                rule_sets.update()
                .where(rule_sets.c.id == rule_set_id)
                .values(**values, updated_at=utcnow())
            )
        return _load(conn, workspace_id, rule_set_id)


def _campaigns_using(conn: sa.Connection, workspace_id: str, rule_set_id: str) -> list[str]:
    rows = conn.execute(
        sa.select(campaigns.c.id, campaigns.c.rule_set_ids).where(
            campaigns.c.workspace_id == workspace_id, campaigns.c.rule_set_ids.is_not(None)
        )
    )
    return [campaign_id for campaign_id, ids in rows if rule_set_id in (ids or ())]


def delete(db: Database, workspace_id: str, rule_set_id: str) -> None:
    """Refused while a campaign names the rule set: detach it first."""
    with db.write() as conn:
        _load(conn, workspace_id, rule_set_id)
        using = _campaigns_using(conn, workspace_id, rule_set_id)
        if using:
            raise Conflict(
                f"campaigns {', '.join(sorted(using)[:10])} use this rule set: detach it first"
            )
        conn.execute(rule_sets.delete().where(rule_sets.c.id == rule_set_id))


def _campaign_row(conn: sa.Connection, workspace_id: str, campaign_id: str) -> Any:
    row = conn.execute(
        sa.select(campaigns.c.id, campaigns.c.category, campaigns.c.rule_set_ids).where(
            campaigns.c.workspace_id == workspace_id, campaigns.c.id == campaign_id
        )
    ).first()
    if row is None:
        raise NotFound(CAMPAIGN_NOT_FOUND)
    return row


def check_rule_set_ids(
    conn: sa.Connection,
    workspace_id: str,
    rule_set_ids: Sequence[str],
    category: str,
    field: str = "rule_set_ids",
) -> list[str]:
    """The ids, checked: each a rule set of the workspace, once, on a marketing campaign."""
    if rule_set_ids and category != Category.MARKETING:
        raise InvalidInput.on(
            field, "business rules apply to marketing campaigns only; this one is transactional"
        )
    errors = ErrorCollector()
    known = set(
        conn.execute(
            sa.select(rule_sets.c.id).where(
                rule_sets.c.workspace_id == workspace_id, rule_sets.c.id.in_(list(rule_set_ids))
            )
        ).scalars()
    )
    seen: set[str] = set()
    for index, rule_set_id in enumerate(rule_set_ids):
        if rule_set_id in seen:
            errors.add(f"{field}[{index}]", "is listed twice")
        elif rule_set_id not in known:
            errors.add(f"{field}[{index}]", NOT_FOUND)
        seen.add(rule_set_id)
    errors.raise_if_any("some rule sets are invalid")
    return list(rule_set_ids)


def campaign_rule_sets(db: Database, workspace_id: str, campaign_id: str) -> list[str]:
    with db.read() as conn:
        return list(_campaign_row(conn, workspace_id, campaign_id).rule_set_ids or [])


def attach(
    db: Database, workspace_id: str, campaign_id: str, rule_set_ids: Sequence[str]
) -> list[str]:
    """Sets the rule sets of a campaign (replacing its list); applies at once, live version
    included: the rules are read when each message is claimed."""
    with db.write() as conn:
        row = _campaign_row(conn, workspace_id, campaign_id)
        ids = check_rule_set_ids(conn, workspace_id, rule_set_ids, row.category)
        conn.execute(
            campaigns.update()
            .where(campaigns.c.id == campaign_id)
            .values(rule_set_ids=ids or None, updated_at=utcnow())
        )
        return ids


def purge_counters(db: Database, now: datetime) -> int:
    with db.write() as conn:
        return purge_ended(conn, now)
