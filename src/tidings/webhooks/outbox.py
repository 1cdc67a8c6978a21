"""The outbox of webhook deliveries, filled by message events in their own transaction.

`enqueue_events` is a listener of tidings.events: it runs inside every transaction that
creates a message or moves one, so it must cost next to nothing when nobody listens. It reads
which endpoints subscribe to what from a per-process cache (one query per database every
CACHE_TTL_SECONDS, emptied when this process changes an endpoint): another process sees a new,
changed or deleted endpoint up to CACHE_TTL_SECONDS late, so events in those seconds may be
enqueued by the old subscriptions. When some endpoint does subscribe, the messages' recipients
are read in one query and the deliveries written in one statement per batch.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from tidings.clock import utcnow
from tidings.events import EventKind, MessageEvent
from tidings.executions.models import executions, messages
from tidings.ids import new_id
from tidings.webhooks.models import webhook_deliveries, webhook_endpoints
from tidings.webhooks.schemas import DeliveryState, WebhookEventType, WebhookFormat

CACHE_TTL_SECONDS = 5.0
# Message ids per recipient query (bound parameters stay well under every backend's limit).
RECIPIENT_CHUNK = 500

# Event kinds an endpoint can subscribe to; targeted, cancelled and retried are not offered.
EVENT_TYPES: dict[EventKind, WebhookEventType] = {
    EventKind.SENT: WebhookEventType.SENT,
    EventKind.DELIVERED: WebhookEventType.DELIVERED,
    EventKind.BOUNCED: WebhookEventType.BOUNCED,
    EventKind.EXCLUDED: WebhookEventType.EXCLUDED,
    EventKind.FAILED: WebhookEventType.FAILED,
    EventKind.OPENED: WebhookEventType.OPENED,
    EventKind.CLICKED: WebhookEventType.CLICKED,
    EventKind.UNSUBSCRIBED: WebhookEventType.UNSUBSCRIBED,
    EventKind.COMPLAINED: WebhookEventType.COMPLAINED,
}


@dataclass(frozen=True, slots=True)
class Subscription:
    endpoint_id: str
    format: WebhookFormat
    event_types: frozenset[str]


# By workspace, then by event kind: the endpoints to write a delivery for.
Subscriptions = Mapping[str, Mapping[EventKind, tuple[Subscription, ...]]]


class SubscriptionCache:
    """Enabled endpoints by workspace, per database, for at most `ttl` seconds."""

    # Entries kept for bare sqlite3 connections (a handful per process: its pool).
    MAX_RAW_ENTRIES = 64

    def __init__(self, ttl: float = CACHE_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._generation = 0
        self._by_engine: weakref.WeakKeyDictionary[sa.Engine, tuple[float, Subscriptions]] = (
            weakref.WeakKeyDictionary()
        )
        self._by_raw: dict[int, tuple[float, Subscriptions]] = {}

    def subscriptions(self, conn: sa.Connection) -> Subscriptions:
        engine = conn.engine
        # events.announce_on_sqlite lends listeners a bare sqlite3 connection under a
        # stand-in engine that names no database: that connection is the database's token.
        raw_key = id(conn.connection.dbapi_connection) if engine.url.database is None else None
        entry = self._by_engine.get(engine) if raw_key is None else self._by_raw.get(raw_key)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        generation = self._generation
        loaded = load_subscriptions(conn)
        with self._lock:
            # An endpoint changed while this was read: keep it for this call only.
            if generation == self._generation:
                if raw_key is None:
                    self._by_engine[engine] = (now + self.ttl, loaded)
                else:
                    if len(self._by_raw) >= self.MAX_RAW_ENTRIES:
                        self._by_raw.clear()
                    self._by_raw[raw_key] = (now + self.ttl, loaded)
        return loaded

    def fresh_on_sqlite(self, connection: sqlite3.Connection) -> Subscriptions | None:
        """What `subscriptions` would answer for a view of this bare sqlite3 connection, if it
        is remembered and fresh; else None (the caller asks `subscriptions`)."""
        entry = self._by_raw.get(id(connection))
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._by_engine.clear()
            self._by_raw.clear()


SUBSCRIPTIONS = SubscriptionCache()


def load_subscriptions(conn: sa.Connection) -> dict[str, dict[EventKind, tuple[Subscription, ...]]]:
    rows = conn.execute(
        sa.select(
            webhook_endpoints.c.id,
            webhook_endpoints.c.workspace_id,
            webhook_endpoints.c.format,
            webhook_endpoints.c.event_types,
        ).where(webhook_endpoints.c.enabled.is_(True))
    ).all()
    by_workspace: dict[str, dict[EventKind, tuple[Subscription, ...]]] = {}
    for row in rows:
        subscription = Subscription(row.id, WebhookFormat(row.format), frozenset(row.event_types))
        by_kind = by_workspace.setdefault(row.workspace_id, {})
        for kind, event_type in EVENT_TYPES.items():
            if event_type.value in subscription.event_types:
                by_kind[kind] = (*by_kind.get(kind, ()), subscription)
    return by_workspace


def enqueue_events(conn: sa.Connection, events: Sequence[MessageEvent]) -> None:
    """Writes a delivery for every event every enabled endpoint of its workspace subscribes
    to, in the caller's transaction. Proofs are never reported."""
    subscribed = SUBSCRIPTIONS.subscriptions(conn)
    if not subscribed:
        return
    wanted: list[tuple[MessageEvent, tuple[Subscription, ...]]] = []
    for event in events:
        by_kind = subscribed.get(event.workspace_id)
        if by_kind is None:
            continue
        targets = by_kind.get(event.kind)
        if targets and not event.is_proof:
            wanted.append((event, targets))
    if not wanted:
        return
    recipients = load_recipients(conn, {event.message_id for event, _ in wanted})
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for event, targets in wanted:
        event_type = EVENT_TYPES[event.kind]
        event_id = new_id()
        recipient = recipients.get(event.message_id)
        bodies: dict[WebhookFormat, str] = {}
        for sub in targets:
            body = bodies.get(sub.format)
            if body is None:
                body = bodies[sub.format] = render(
                    sub.format, event_id, event_type, event, recipient
                )
            rows.append(
                {
                    "id": new_id(),
                    "workspace_id": event.workspace_id,
                    "endpoint_id": sub.endpoint_id,
                    "event_id": event_id,
                    "event_type": event_type.value,
                    "message_id": event.message_id,
                    "payload": body,
                    "state": DeliveryState.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    # The cache may be seconds old: an endpoint deleted or disabled since (by any process) gets
    # nothing, and one being deleted waits for this transaction (PostgreSQL's key-share lock),
    # so no delivery ever names a missing endpoint.
    live_query = sa.select(webhook_endpoints.c.id).where(
        webhook_endpoints.c.id.in_({row["endpoint_id"] for row in rows}),
        webhook_endpoints.c.enabled.is_(True),
    )
    if conn.dialect.name == "postgresql":
        live_query = live_query.with_for_update(key_share=True)
    live = set(conn.execute(live_query).scalars())
    rows = [row for row in rows if row["endpoint_id"] in live]
    if rows:
        conn.execute(webhook_deliveries.insert(), rows)


def enqueue_events_on_sqlite(
    connection: sqlite3.Connection, events: Sequence[MessageEvent]
) -> bool:
    """`enqueue_events`' answer on a bare sqlite3 connection (events.announce_on_sqlite) when
    the cache says no endpoint subscribes to any of `events`: True, nothing to write, and no
    SQLAlchemy view of the connection built for it. False: `enqueue_events` must decide."""
    subscribed = SUBSCRIPTIONS.fresh_on_sqlite(connection)
    if subscribed is None:
        return False
    if not subscribed:
        return True
    for event in events:
        by_kind = subscribed.get(event.workspace_id)
        if by_kind is not None and by_kind.get(event.kind) and not event.is_proof:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Recipient:
    namespace: str
    id: str
    request_id: str | None


def load_recipients(conn: sa.Connection, message_ids: Iterable[str]) -> dict[str, Recipient]:
    """Who each message went to and the request that triggered it: no context, no profile."""
    ids = sorted(message_ids)
    found: dict[str, Recipient] = {}
    for start in range(0, len(ids), RECIPIENT_CHUNK):
        rows = conn.execute(
            sa.select(
                messages.c.id,
                messages.c.recipient_namespace,
                messages.c.recipient_id,
                executions.c.request_id,
            )
            .join(executions, executions.c.id == messages.c.execution_id)
            .where(messages.c.id.in_(ids[start : start + RECIPIENT_CHUNK]))
        ).all()
        for row in rows:
            found[row.id] = Recipient(row.recipient_namespace, row.recipient_id, row.request_id)
    return found


def timestamp_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render(
    format: WebhookFormat,
    event_id: str,
    event_type: WebhookEventType,
    event: MessageEvent,
    recipient: Recipient | None,
) -> str:
    payload = (
        ajo_payload(event_id, event_type, event, recipient)
        if format is WebhookFormat.AJO
        else standard_payload(event_type, event, recipient)
    )
    return orjson.dumps(payload).decode()


def standard_payload(
    event_type: WebhookEventType, event: MessageEvent, recipient: Recipient | None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "message_id": event.message_id,
        "execution_id": event.execution_id,
        "campaign_id": event.campaign_id,
        "version_id": event.version_id,
        "channel": event.channel,
        "request_id": recipient.request_id if recipient else None,
        "recipient": (
            {"namespace": recipient.namespace, "id": recipient.id} if recipient else None
        ),
        "reason": event.reason,
        "occurred_at": timestamp_text(event.occurred_at),
    }
    if event_type in (WebhookEventType.OPENED, WebhookEventType.CLICKED):
        data["first"] = event.first
    if event_type is WebhookEventType.CLICKED:
        data["link_index"] = event.link_index
        data["url"] = event.url
    return {
        "type": f"message.{event_type.value}",
        "timestamp": timestamp_text(event.occurred_at),
        "data": data,
    }


# AJO's feedbackStatus for each state a message reaches; the recipients' acts are AJO
# tracking events (message.tracking) with an interactionType instead.
AJO_FEEDBACK_STATUS = {
    WebhookEventType.SENT: "sent",
    WebhookEventType.DELIVERED: "delivered",
    WebhookEventType.BOUNCED: "bounce",
    WebhookEventType.EXCLUDED: "exclude",
    WebhookEventType.FAILED: "error",
}
AJO_INTERACTION = {
    WebhookEventType.OPENED: "open",
    WebhookEventType.CLICKED: "click",
    WebhookEventType.UNSUBSCRIBED: "unsubscribe",
    WebhookEventType.COMPLAINED: "spam_complaint",
}
# The category of an exclusion reason code (delivery/state.py's ExclusionReason).
EXCLUSION_CATEGORIES = {
    "no_consent": "consent",
    "suppressed_address": "suppression",
    "suppressed_domain": "suppression",
    "frequency_capped": "business_rule",
    "quiet_hours_discard": "business_rule",
    "quiet_hours_expired": "business_rule",
    "campaign_not_live": "business_rule",
}
AJO_CHANNELS = "https://ns.adobe.com/xdm/channels/"


def ajo_payload(
    event_id: str,
    event_type: WebhookEventType,
    event: MessageEvent,
    recipient: Recipient | None,
) -> dict[str, Any]:
    """AJO's experience event shape: `_experience.customerJourneyManagement` with the
    message's execution and its delivery feedback (XDM field names, as AJO's message
    feedback dataset spells them)."""
    execution: dict[str, Any] = {
        "messageExecutionID": event.execution_id,
        "messageID": event.message_id,
        "campaignID": event.campaign_id,
        "campaignVersionID": event.version_id,
        "batchInstanceID": event.execution_id,
    }
    if recipient is not None and recipient.request_id is not None:
        execution["requestID"] = recipient.request_id
    journey: dict[str, Any] = {
        "messageExecution": execution,
        "messageProfile": {"channel": {"_id": AJO_CHANNELS + event.channel}},
    }
    status = AJO_FEEDBACK_STATUS.get(event_type)
    if status is not None:
        feedback: dict[str, Any] = {"feedbackStatus": status}
        if event_type is WebhookEventType.EXCLUDED:
            feedback["messageExclusion"] = {
                "category": EXCLUSION_CATEGORIES.get(event.reason or "", "data"),
                "reason": event.reason,
            }
        elif event_type is WebhookEventType.BOUNCED:
            feedback["messageFailure"] = {
                "category": "async",
                "type": "Hard" if event.reason == "hard" else "Soft",
                "reason": event.reason,
            }
        elif event_type is WebhookEventType.FAILED:
            feedback["messageFailure"] = {"category": "sync", "reason": event.reason}
        journey["messageDeliveryfeedback"] = feedback
        event_name = "message.feedback"
    else:
        interaction: dict[str, Any] = {"interactionType": AJO_INTERACTION[event_type]}
        if event_type is WebhookEventType.CLICKED:
            interaction["url"] = event.url
            interaction["linkIndex"] = event.link_index
        journey["messageInteraction"] = interaction
        event_name = "message.tracking"
    payload: dict[str, Any] = {
        "_id": event_id,
        "eventType": event_name,
        "timestamp": timestamp_text(event.occurred_at),
        "_experience": {"customerJourneyManagement": journey},
    }
    if recipient is not None:
        payload["identityMap"] = {recipient.namespace: [{"id": recipient.id}]}
    return payload
