"""Recording opens and clicks: a few statements per event, never in the way of a response."""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa

from tidings.clock import utcnow
from tidings.db import Database
from tidings.events import EventKind as MessageEventKind
from tidings.events import MessageEvent, announce
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

    The message is looked up within the token's workspace, so a token naming a message of
    another workspace (or one that no longer exists) records nothing. The event is announced
    (tidings.events) with whether it is the message's first of its kind, and for a click the
    first on its link, for unique counts.
    """
    at = now or utcnow()
    with db.write() as conn:
        message = conn.execute(
            sa.select(
                messages.c.workspace_id,
                messages.c.campaign_id,
                messages.c.version_id,
                messages.c.execution_id,
                messages.c.channel,
                messages.c.state,
                messages.c.is_proof,
            )
            .where(messages.c.id == message_id, messages.c.workspace_id == workspace_id)
            # Locked: two fetches of one pixel at once (image proxies) must not both find no
            # earlier open and count the message's unique open twice.
            .with_for_update()
        ).first()
        if message is None:
            return False
        earlier = conn.execute(
            sa.select(message_events.c.link_index)
            .where(message_events.c.message_id == message_id, message_events.c.kind == kind.value)
            .distinct()
        ).scalars()
        links_before = set(earlier)
        conn.execute(
            message_events.insert().values(
                id=new_id(),
                workspace_id=message.workspace_id,
                message_id=message_id,
                execution_id=message.execution_id,
                campaign_id=message.campaign_id,
                kind=kind.value,
                link_index=link_index,
                url=url,
                user_agent=user_agent[:USER_AGENT_CHARS] if user_agent else None,
                occurred_at=at,
            )
        )
        announce(
            conn,
            [
                MessageEvent(
                    kind=MessageEventKind.OPENED
                    if kind is EventKind.OPEN
                    else MessageEventKind.CLICKED,
                    message_id=message_id,
                    workspace_id=message.workspace_id,
                    campaign_id=message.campaign_id,
                    version_id=message.version_id,
                    execution_id=message.execution_id,
                    channel=message.channel,
                    occurred_at=at,
                    previous_state=message.state,
                    link_index=link_index,
                    url=url,
                    first=not links_before,
                    first_on_link=kind is EventKind.CLICK and link_index not in links_before,
                    is_proof=bool(message.is_proof),
                )
            ],
        )
    return True


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
