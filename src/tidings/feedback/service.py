"""Applies feedback events to Tidings' data: message states, the suppression list, soft-bounce
counts and marketing consent. Knows nothing of HTTP, SMTP or providers' formats.

An event is tied to a message, whose workspace it then acts in, and to nothing else:
1. by our message id (the original's Message-ID, or a VERP address): a primary-key lookup;
2. else by the provider's message id (`messages.provider_message_id`, indexed);
3. else by recipient address: the most recent email sent to it within LOOKBACK, provided
   every such message is in one workspace (an address several workspaces mail is ambiguous,
   and the event is then ignored rather than applied to the wrong tenant).
An event that names no message is acknowledged and ignored, and leaves nothing behind.

What each kind does (in one transaction with the event's log row, so a repeated event, same
source and event id, changes nothing more):
- hard_bounce: a sent or delivered message becomes `bounced` (reason `hard_bounce`, the
  provider's diagnostic as last_error); the address gets a `hard_bounce` suppression.
- soft_bounce: counts towards TIDINGS_SOFT_BOUNCE_THRESHOLD (suppressions.record_soft_bounce);
  a sent message stays sent, with reason `soft_bounce` and the diagnostic as a note.
- delayed: logged only (the remote MTA still tries).
- complaint: a `spam_complaint` suppression, and the profile's email consent `out` (source
  `complaint`).
- delivered: a sent message becomes `delivered`; the address's soft bounces in a row reset.
- unsubscribe (SendGrid): email consent `out`, or for a recipient without a profile a
  `manual` suppression, as an unsubscribe link does.

A suppression the event would add never weakens one already there: a `soft_bounce` entry is
upgraded, others (manual, hard_bounce, spam_complaint) keep their type and source.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from email_validator import EmailNotValidError
from sqlalchemy.dialects import postgresql, sqlite

from tidings.clock import utcnow
from tidings.db import Database
from tidings.delivery.state import MESSAGE_TRANSITIONS, MessageState
from tidings.errors import InvalidInput
from tidings.events import EventKind, MessageEvent, announce
from tidings.executions.models import messages
from tidings.feedback.events import FeedbackEvent, FeedbackKind
from tidings.feedback.models import feedback_events
from tidings.ids import new_id
from tidings.profiles import service as profiles
from tidings.profiles.schemas import ConsentStatus
from tidings.suppressions import service as suppressions
from tidings.suppressions.models import suppressions as suppressions_table
from tidings.suppressions.schemas import (
    MAX_REASON_LENGTH,
    SuppressionChannel,
    SuppressionKind,
    SuppressionType,
)
from tidings.vocabulary import Channel

# How far back the address fallback looks for the message a bounce is about.
LOOKBACK = timedelta(days=14)
# Messages read per address fallback: enough to see whether two workspaces share the address.
_FALLBACK_ROWS = 50
SOURCE_COMPLAINT = "complaint"
REASON_HARD_BOUNCE = "hard_bounce"
REASON_SOFT_BOUNCE = "soft_bounce"
_AFTER_SENDING = (MessageState.SENT, MessageState.DELIVERED, MessageState.BOUNCED)
_COLUMNS = (
    messages.c.id,
    messages.c.workspace_id,
    messages.c.channel,
    messages.c.state,
    messages.c.address,
    messages.c.profile_id,
    messages.c.campaign_id,
    messages.c.version_id,
    messages.c.execution_id,
    messages.c.is_proof,
)


class Outcome(StrEnum):
    APPLIED = "applied"
    # The same event (source, event id) was applied before.
    DUPLICATE = "duplicate"
    # No message of ours matches: acknowledged and ignored.
    UNMATCHED = "unmatched"


@dataclass(frozen=True, slots=True)
class Applied:
    outcome: Outcome
    workspace_id: str | None = None
    message_id: str | None = None


# ---------------------------------------------------------------- finding the message


def _address_forms(address: str) -> set[str]:
    forms = {address.strip(), address.strip().lower()}
    with contextlib.suppress(EmailNotValidError, ValueError):
        forms.add(profiles.normalize_email(address.strip()))
    return {form for form in forms if form}


def find_message(conn: sa.Connection, event: FeedbackEvent, now: datetime) -> Any | None:
    """The email message the event is about (see the module's docstring), or None."""
    email = messages.c.channel == Channel.EMAIL.value
    if event.message_ref:
        # Our id says which message it is: no guessing by address if that one is gone.
        return conn.execute(
            sa.select(*_COLUMNS).where(messages.c.id == event.message_ref, email)
        ).first()
    if event.provider_message_id:
        # Relays answer "250 Ok <id>" (Amazon SES) as often as "queued as <id>" (Postfix).
        candidates = {event.provider_message_id, f"Ok {event.provider_message_id}"}
        rows = conn.execute(
            sa.select(*_COLUMNS)
            .where(messages.c.provider_message_id.in_(candidates), email)
            .limit(2)
        ).all()
        if len(rows) == 1:
            return rows[0]
        if rows:
            return None
    if not event.recipient:
        return None
    # Through ix_messages_state_due: recent messages past sending, not the whole table.
    rows = conn.execute(
        sa.select(*_COLUMNS)
        .where(
            messages.c.state.in_([state.value for state in _AFTER_SENDING]),
            messages.c.due_at >= now - LOOKBACK,
            messages.c.address.in_(_address_forms(event.recipient)),
            email,
        )
        .order_by(messages.c.due_at.desc(), messages.c.id.desc())
        .limit(_FALLBACK_ROWS)
    ).all()
    if not rows or len({row.workspace_id for row in rows}) > 1:
        return None
    return rows[0]


# ---------------------------------------------------------------- applying


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def apply_event(
    conn: sa.Connection,
    event: FeedbackEvent,
    *,
    now: datetime,
    soft_bounce_threshold: int = suppressions.DEFAULT_SOFT_BOUNCE_THRESHOLD,
) -> Applied:
    """Applies one event in the caller's transaction (see the module's docstring)."""
    row = find_message(conn, event, now)
    if row is None:
        return Applied(Outcome.UNMATCHED)
    logged = conn.execute(
        _insert(conn, feedback_events)
        .values(
            source=event.source.value,
            event_id=event.event_id[:200],
            workspace_id=row.workspace_id,
            message_id=row.id,
            kind=event.kind.value,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        # RETURNING rather than rowcount, which psycopg leaves at -1 here.
        .returning(feedback_events.c.event_id)
    ).first()
    if logged is None:
        return Applied(Outcome.DUPLICATE, row.workspace_id, row.id)
    address = row.address or event.recipient
    source = event.source.value
    kind = event.kind
    if kind == FeedbackKind.HARD_BOUNCE:
        if _move(conn, row, MessageState.BOUNCED, now, REASON_HARD_BOUNCE, event.detail):
            announce(conn, [message_event(row, EventKind.BOUNCED, now, reason="hard")])
        if address:
            _suppress(
                conn, row.workspace_id, address, SuppressionType.HARD_BOUNCE, source, event, now
            )
    elif kind == FeedbackKind.SOFT_BOUNCE:
        if row.state == MessageState.SENT:
            noted = conn.execute(
                messages.update()
                .where(messages.c.id == row.id, messages.c.state == MessageState.SENT.value)
                .values(reason=REASON_SOFT_BOUNCE, last_error=event.detail, updated_at=now)
            ).rowcount
            if noted:
                # Counted beside the states: the message stays sent.
                announce(conn, [message_event(row, EventKind.BOUNCED, now, reason="soft")])
        if address:
            # An address the suppression list cannot hold has nothing to count it by.
            with contextlib.suppress(InvalidInput):
                suppressions.record_soft_bounce(
                    conn,
                    row.workspace_id,
                    address,
                    source,
                    now,
                    threshold=soft_bounce_threshold,
                )
    elif kind == FeedbackKind.DELIVERED:
        if _move(conn, row, MessageState.DELIVERED, now, None, None):
            announce(conn, [message_event(row, EventKind.DELIVERED, now)])
        if address:
            suppressions.reset_soft_bounces(conn, row.workspace_id, address)
    elif kind == FeedbackKind.COMPLAINT:
        announce(conn, [message_event(row, EventKind.COMPLAINED, now)])
        if address:
            _suppress(
                conn, row.workspace_id, address, SuppressionType.SPAM_COMPLAINT, source, event, now
            )
        _opt_out(conn, row, SOURCE_COMPLAINT, now)
    elif kind == FeedbackKind.UNSUBSCRIBE:
        announce(conn, [message_event(row, EventKind.UNSUBSCRIBED, now)])
        _unsubscribe(conn, row, address, source, now)
    # DELAYED: the log row is all.
    return Applied(Outcome.APPLIED, row.workspace_id, row.id)


def message_event(
    row: Any,
    kind: EventKind,
    now: datetime,
    *,
    reason: str | None = None,
) -> MessageEvent:
    """The event of a message read with _COLUMNS (its state before this change)."""
    return MessageEvent(
        kind=kind,
        message_id=row.id,
        workspace_id=row.workspace_id,
        campaign_id=row.campaign_id,
        version_id=row.version_id,
        execution_id=row.execution_id,
        channel=row.channel,
        occurred_at=now,
        reason=reason,
        previous_state=row.state,
        is_proof=bool(row.is_proof),
    )


def _unsubscribe(
    conn: sa.Connection, row: Any, address: str | None, source: str, now: datetime
) -> None:
    if not _opt_out(conn, row, f"{source}_unsubscribe", now) and address:
        # A recipient without a profile has no consent: a suppression keeps marketing away.
        with contextlib.suppress(InvalidInput):
            suppressions.suppress_unless_suppressed(
                conn,
                row.workspace_id,
                SuppressionChannel.EMAIL,
                address,
                source=source,
                reason="unsubscribed at the provider",
                now=now,
            )


def apply_events(
    db: Database, events: Iterable[FeedbackEvent], *, soft_bounce_threshold: int
) -> list[Applied]:
    """Applies each event in a transaction of its own: one that fails leaves the others."""
    results = []
    for event in events:
        with db.write() as conn:
            results.append(
                apply_event(conn, event, now=utcnow(), soft_bounce_threshold=soft_bounce_threshold)
            )
    return results


def _move(
    conn: sa.Connection,
    row: Any,
    target: MessageState,
    now: datetime,
    reason: str | None,
    detail: str | None,
) -> bool:
    """Moves the message when the state machine allows it; a bounce after a delivery is a
    late bounce, a delivery after a bounce changes nothing. True when it moved."""
    current = MessageState(row.state)
    if target not in MESSAGE_TRANSITIONS[current]:
        return False
    values: dict[str, Any] = {"state": target.value, "updated_at": now}
    if target == MessageState.BOUNCED:
        values.update(reason=reason, last_error=detail)
    moved = conn.execute(
        messages.update()
        .where(messages.c.id == row.id, messages.c.state == current.value)
        .values(**values)
    ).rowcount
    return bool(moved)


def _opt_out(conn: sa.Connection, row: Any, source: str, now: datetime) -> bool:
    """Email marketing consent `out` for the message's profile; False when it has none."""
    if not row.profile_id:
        return False
    profile_id = profiles.current_profile_id(conn, row.workspace_id, row.profile_id)
    if profile_id is None:
        return False
    entry = profiles.set_channel_consent(
        conn,
        row.workspace_id,
        profile_id,
        Channel.EMAIL,
        ConsentStatus.OUT,
        source,
        now,
        detail=f"message:{row.id}",
    )
    return entry is not None


def _suppress(
    conn: sa.Connection,
    workspace_id: str,
    address: str,
    type: SuppressionType,
    source: str,
    event: FeedbackEvent,
    now: datetime,
) -> None:
    """Suppresses the address unless an entry of another type than `soft_bounce` has it."""
    try:
        kind, value = suppressions.normalize_value(
            SuppressionChannel.EMAIL, address, SuppressionKind.ADDRESS
        )
    except InvalidInput:
        return
    table = suppressions_table
    where = (
        table.c.workspace_id == workspace_id,
        table.c.channel == SuppressionChannel.EMAIL.value,
        table.c.kind == kind.value,
        table.c.value == value,
    )
    reason = " ".join(filter(None, [event.status, event.detail]))[:MAX_REASON_LENGTH] or None
    present = conn.execute(sa.select(table.c.type).where(*where)).scalar_one_or_none()
    if present is None:
        conn.execute(
            _insert(conn, table)
            .values(
                id=new_id(),
                workspace_id=workspace_id,
                channel=SuppressionChannel.EMAIL.value,
                kind=kind.value,
                value=value,
                type=type.value,
                source=source,
                reason=reason,
                soft_bounce_count=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["workspace_id", "channel", "kind", "value"])
        )
    elif present == SuppressionType.SOFT_BOUNCE.value:
        conn.execute(
            table.update()
            .where(*where)
            .values(type=type.value, source=source, reason=reason, updated_at=now)
        )
