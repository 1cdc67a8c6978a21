"""Recording opens and clicks: one INSERT … SELECT per event, never in the way of a response."""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa

from tidings.clock import utcnow
from tidings.db import Database
from tidings.executions.models import messages
from tidings.ids import new_id
from tidings.tracking.models import USER_AGENT_CHARS, message_events

log = logging.getLogger("tidings.tracking")


class EventKind(StrEnum):
    OPEN = "open"
    CLICK = "click"


def record(
    db: Database,
    kind: EventKind,
    workspace_id: str,
    message_id: str,
    *,
    link_index: int | None = None,
    url: str | None = None,
    user_agent: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Stores one event of a message, copying its campaign and execution; True when stored.

    The message is looked up within the token's workspace in the same statement, so a token
    naming a message of another workspace (or one that no longer exists) records nothing.
    """
    columns = (
        "id",
        "workspace_id",
        "message_id",
        "execution_id",
        "campaign_id",
        "kind",
        "link_index",
        "url",
        "user_agent",
        "occurred_at",
    )
    source = sa.select(
        sa.literal(new_id(), sa.String()),
        messages.c.workspace_id,
        messages.c.id,
        messages.c.execution_id,
        messages.c.campaign_id,
        sa.literal(kind.value, sa.String()),
        sa.literal(link_index, sa.Integer()),
        sa.literal(url, sa.Text()),
        sa.literal(user_agent[:USER_AGENT_CHARS] if user_agent else None, sa.String()),
        sa.literal(now or utcnow(), message_events.c.occurred_at.type),
    ).where(messages.c.id == message_id, messages.c.workspace_id == workspace_id)
    with db.write() as conn:
        result = conn.execute(message_events.insert().from_select(columns, source))
    return result.rowcount == 1


def record_quietly(
    db: Database,
    kind: EventKind,
    workspace_id: str,
    message_id: str,
    *,
    link_index: int | None = None,
    url: str | None = None,
    user_agent: str | None = None,
) -> None:
    """`record`, with any error logged rather than raised: losing an event is better than
    failing the recipient's click or image."""
    try:
        record(
            db,
            kind,
            workspace_id,
            message_id,
            link_index=link_index,
            url=url,
            user_agent=user_agent,
        )
    except Exception:
        log.exception("could not record the %s of message %s", kind.value, message_id)


def counts(conn: sa.Connection, message_ids: list[str]) -> dict[str, dict[str, int]]:
    """Total opens and clicks per message, for the messages that have any."""
    rows = conn.execute(
        sa.select(message_events.c.message_id, message_events.c.kind, sa.func.count())
        .where(message_events.c.message_id.in_(message_ids))
        .group_by(message_events.c.message_id, message_events.c.kind)
    )
    result: dict[str, dict[str, int]] = {}
    for message_id, kind, count in rows:
        result.setdefault(message_id, {})[kind] = count
    return result
