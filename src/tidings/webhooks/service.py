"""Feedback webhooks: endpoints and their secrets, the delivery log, and the dispatcher.

The dispatcher claims due deliveries from the outbox with a lease (SKIP LOCKED on
PostgreSQL, so several workers share the work), posts them concurrently with a bounded number
in flight, and records every attempt. A failed attempt is retried after an exponential delay
with full jitter, capped, until RETRY_WINDOW has passed since the first attempt; then the
delivery is `failed` (and can be replayed). A 410 from the receiver disables the endpoint.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from tidings.clock import utcnow
from tidings.db import Database
from tidings.errors import Conflict, InvalidInput, NotFound
from tidings.ids import new_id
from tidings.pagination import keyset_page
from tidings.webhooks import signing
from tidings.webhooks.client import (
    RESOLVE_TIMEOUT_SECONDS,
    AddressPolicy,
    Outcome,
    SendResult,
    WebhookSender,
    url_problem,
)
from tidings.webhooks.models import webhook_attempts, webhook_deliveries, webhook_endpoints
from tidings.webhooks.outbox import SUBSCRIPTIONS
from tidings.webhooks.schemas import DeliveryState, WebhookCreate, WebhookPatch

# A rotated-out secret keeps signing (beside the new one) this long, for receivers to switch.
ROTATION_OVERLAP = timedelta(hours=24)
# Retries: full jitter over base * 2^(attempt-1), capped; given up once the first attempt is
# this old (about 15 attempts on average with these numbers).
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=4)
RETRY_WINDOW = timedelta(hours=24)
DISPATCH_BATCH = 100
DISPATCH_CONCURRENCY = 16
DISPATCH_LEASE = timedelta(minutes=2)
ERROR_CHARS = 1000
FORGET_CHUNK = 500


# --- endpoints ---------------------------------------------------------------------------


def _check_url(url: str, policy: AddressPolicy) -> str:
    problem = url_problem(url.strip(), policy)
    if problem is not None:
        raise InvalidInput.on("url", problem)
    return url.strip()


def create(
    db: Database, workspace_id: str, body: WebhookCreate, policy: AddressPolicy
) -> tuple[dict[str, Any], str]:
    """The new endpoint and its secret (returned once)."""
    url = _check_url(body.url, policy)
    now = utcnow()
    secret = signing.generate_secret()
    row = {
        "id": new_id(),
        "workspace_id": workspace_id,
        "url": url,
        "description": body.description,
        "event_types": sorted({event.value for event in body.event_types}),
        "format": body.format.value,
        "enabled": body.enabled,
        "disabled_reason": None,
        "secret": secret,
        "previous_secret": None,
        "previous_secret_expires_at": None,
        "created_at": now,
        "updated_at": now,
    }
    with db.write() as conn:
        conn.execute(webhook_endpoints.insert().values(**row))
    SUBSCRIPTIONS.invalidate()
    return row, secret


def _get(conn: sa.Connection, workspace_id: str, endpoint_id: str) -> dict[str, Any]:
    row = (
        conn.execute(
            sa.select(webhook_endpoints).where(
                webhook_endpoints.c.id == endpoint_id,
                webhook_endpoints.c.workspace_id == workspace_id,
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound(f"no webhook {endpoint_id} in this workspace")
    return dict(row)


def get(db: Database, workspace_id: str, endpoint_id: str) -> dict[str, Any]:
    with db.read() as conn:
        return _get(conn, workspace_id, endpoint_id)


def list_page(
    db: Database, workspace_id: str, *, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    with db.read() as conn:
        rows, next_cursor = keyset_page(
            conn,
            sa.select(webhook_endpoints).where(webhook_endpoints.c.workspace_id == workspace_id),
            webhook_endpoints.c.id,
            cursor,
            limit,
        )
    return [dict(row) for row in rows], next_cursor


def update(
    db: Database, workspace_id: str, endpoint_id: str, body: WebhookPatch, policy: AddressPolicy
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    given = body.model_fields_set
    for name in ("url", "event_types", "format", "enabled"):
        if name in given and getattr(body, name) is None:
            raise InvalidInput.on(name, "may not be null")
    if "url" in given and body.url is not None:
        changes["url"] = _check_url(body.url, policy)
    if "description" in given:
        changes["description"] = body.description
    if body.event_types is not None:
        changes["event_types"] = sorted({event.value for event in body.event_types})
    if body.format is not None:
        changes["format"] = body.format.value
    if body.enabled is not None:
        changes["enabled"] = body.enabled
        if body.enabled:
            changes["disabled_reason"] = None
    with db.write() as conn:
        _get(conn, workspace_id, endpoint_id)
        if changes:
            conn.execute(
                webhook_endpoints.update()
                .where(webhook_endpoints.c.id == endpoint_id)
                .values(**changes, updated_at=utcnow())
            )
        row = _get(conn, workspace_id, endpoint_id)
    SUBSCRIPTIONS.invalidate()
    return row


def delete(db: Database, workspace_id: str, endpoint_id: str) -> None:
    """Removes the endpoint with its outbox and log (deliveries not yet made are dropped)."""
    with db.write() as conn:
        _get(conn, workspace_id, endpoint_id)
        delivery_ids = sa.select(webhook_deliveries.c.id).where(
            webhook_deliveries.c.endpoint_id == endpoint_id
        )
        # Explicitly: SQLite enforces ON DELETE CASCADE only with foreign keys on, and the
        # attempts hang off the deliveries.
        conn.execute(
            webhook_attempts.delete().where(webhook_attempts.c.delivery_id.in_(delivery_ids))
        )
        conn.execute(
            webhook_deliveries.delete().where(webhook_deliveries.c.endpoint_id == endpoint_id)
        )
        conn.execute(webhook_endpoints.delete().where(webhook_endpoints.c.id == endpoint_id))
    SUBSCRIPTIONS.invalidate()


def rotate_secret(
    db: Database,
    workspace_id: str,
    endpoint_id: str,
    *,
    overlap: timedelta = ROTATION_OVERLAP,
) -> tuple[dict[str, Any], str]:
    """A new secret; the current one keeps signing beside it for `overlap`."""
    now = utcnow()
    secret = signing.generate_secret()
    with db.write() as conn:
        current = _get(conn, workspace_id, endpoint_id)
        conn.execute(
            webhook_endpoints.update()
            .where(webhook_endpoints.c.id == endpoint_id)
            .values(
                secret=secret,
                previous_secret=current["secret"],
                previous_secret_expires_at=now + overlap,
                updated_at=now,
            )
        )
        row = _get(conn, workspace_id, endpoint_id)
    return row, secret


def signing_secrets(
    secret: str, previous: str | None, previous_expires_at: datetime | None, now: datetime
) -> list[str]:
    if previous and previous_expires_at is not None and previous_expires_at > now:
        return [secret, previous]
    return [secret]


def to_public(row: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    public = {key: value for key, value in row.items() if "secret" not in key}
    expires = row.get("previous_secret_expires_at")
    public["previous_secret_expires_at"] = (
        expires if expires is not None and expires > (now or utcnow()) else None
    )
    return public


# --- the delivery log --------------------------------------------------------------------


def delivery_public(row: Any) -> dict[str, Any]:
    data = dict(row)
    data["payload"] = orjson.loads(data["payload"])
    if data["state"] != DeliveryState.PENDING.value:
        data["next_attempt_at"] = None
    return data


def list_deliveries(
    db: Database,
    workspace_id: str,
    endpoint_id: str,
    *,
    state: DeliveryState | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first."""
    with db.read() as conn:
        _get(conn, workspace_id, endpoint_id)
        query = sa.select(webhook_deliveries).where(webhook_deliveries.c.endpoint_id == endpoint_id)
        if state is not None:
            query = query.where(webhook_deliveries.c.state == state.value)
        rows, next_cursor = keyset_page(
            conn, query, webhook_deliveries.c.id, cursor, limit, newest_first=True
        )
    return [delivery_public(row) for row in rows], next_cursor


def _delivery(conn: sa.Connection, endpoint_id: str, delivery_id: str) -> dict[str, Any]:
    row = (
        conn.execute(
            sa.select(webhook_deliveries).where(
                webhook_deliveries.c.id == delivery_id,
                webhook_deliveries.c.endpoint_id == endpoint_id,
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound(f"no delivery {delivery_id} of webhook {endpoint_id}")
    return dict(row)


def get_delivery(
    db: Database, workspace_id: str, endpoint_id: str, delivery_id: str
) -> dict[str, Any]:
    """One delivery with every attempt, oldest first."""
    with db.read() as conn:
        _get(conn, workspace_id, endpoint_id)
        data = delivery_public(_delivery(conn, endpoint_id, delivery_id))
        data["attempt_log"] = [
            dict(row)
            for row in conn.execute(
                sa.select(webhook_attempts)
                .where(webhook_attempts.c.delivery_id == delivery_id)
                .order_by(webhook_attempts.c.attempted_at, webhook_attempts.c.id)
            ).mappings()
        ]
    return data


def replay(db: Database, workspace_id: str, endpoint_id: str, delivery_id: str) -> dict[str, Any]:
    """A new delivery of the same event (same webhook-id, same body), due now."""
    now = utcnow()
    with db.write() as conn:
        _get(conn, workspace_id, endpoint_id)
        original = _delivery(conn, endpoint_id, delivery_id)
        if original["state"] in (DeliveryState.PENDING.value, DeliveryState.DELIVERING.value):
            raise Conflict("this delivery is still being attempted; replay it once it ends")
        row = {
            "id": new_id(),
            "workspace_id": workspace_id,
            "endpoint_id": endpoint_id,
            "event_id": original["event_id"],
            "event_type": original["event_type"],
            "message_id": original["message_id"],
            "payload": original["payload"],
            "state": DeliveryState.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "lease_until": None,
            "last_status": None,
            "last_error": None,
            "last_response": None,
            "replay_of": delivery_id,
            "created_at": now,
            "updated_at": now,
            "first_attempt_at": None,
            "delivered_at": None,
        }
        conn.execute(webhook_deliveries.insert().values(**row))
    return delivery_public(row)


def forget_messages(conn: sa.Connection, message_ids: Sequence[str]) -> int:
    """Deletes the deliveries (sent or not) reporting on these messages, with their attempts,
    in the caller's transaction: for an erasure, as their payloads name the recipient.
    Returns how many deliveries went."""
    removed = 0
    ids = list(message_ids)
    for start in range(0, len(ids), FORGET_CHUNK):
        chunk = webhook_deliveries.c.message_id.in_(ids[start : start + FORGET_CHUNK])
        conn.execute(
            webhook_attempts.delete().where(
                webhook_attempts.c.delivery_id.in_(sa.select(webhook_deliveries.c.id).where(chunk))
            )
        )
        removed += conn.execute(webhook_deliveries.delete().where(chunk)).rowcount or 0
    return removed


def purge_finished(conn: sa.Connection, before: datetime, limit: int = 1000) -> int:
    """Deletes up to `limit` deliveries last changed before `before` that will not be sent
    again: delivered or failed ones, and those of a disabled endpoint (which the dispatcher
    skips), with their attempts (for data retention: payloads name recipients). Returns how
    many."""
    d = webhook_deliveries
    disabled = sa.select(webhook_endpoints.c.id).where(webhook_endpoints.c.enabled.is_(False))
    ids = list(
        conn.execute(
            sa.select(d.c.id)
            .where(
                sa.or_(
                    d.c.state.in_([DeliveryState.DELIVERED.value, DeliveryState.FAILED.value]),
                    d.c.endpoint_id.in_(disabled),
                ),
                d.c.updated_at < before,
            )
            .limit(limit)
        ).scalars()
    )
    if not ids:
        return 0
    conn.execute(webhook_attempts.delete().where(webhook_attempts.c.delivery_id.in_(ids)))
    conn.execute(d.delete().where(d.c.id.in_(ids)))
    return len(ids)


def pending_count(conn: sa.Connection) -> int:
    """Deliveries not yet made (pending or being attempted): the webhook backlog."""
    return int(
        conn.execute(
            sa.select(sa.func.count()).where(
                webhook_deliveries.c.state.in_(
                    [DeliveryState.PENDING.value, DeliveryState.DELIVERING.value]
                )
            )
        ).scalar_one()
    )


# --- the dispatcher ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait after a failed attempt, and when to give up."""

    base: timedelta = RETRY_BASE
    cap: timedelta = RETRY_CAP
    window: timedelta = RETRY_WINDOW
    rng: Callable[[], float] = random.random

    def delay(self, attempts: int) -> timedelta:
        ceiling = min(self.cap.total_seconds(), self.base.total_seconds() * 2 ** (attempts - 1))
        return timedelta(seconds=ceiling * self.rng())

    def gives_up(self, first_attempt_at: datetime, now: datetime) -> bool:
        return now - first_attempt_at >= self.window


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: str
    endpoint_id: str
    event_id: str
    url: str
    payload: str
    attempts: int
    first_attempt_at: datetime
    secrets: tuple[str, ...]


def dispatch_lease(timeout_seconds: float) -> timedelta:
    """A claim's lease long enough for its slowest batch: waves of DISPATCH_CONCURRENCY
    sends, each up to a lookup and twice the timeout (connect, then the answer), and a minute
    to record. A shorter one would let another worker claim and send a live batch again."""
    waves = -(-DISPATCH_BATCH // DISPATCH_CONCURRENCY)
    per_send = RESOLVE_TIMEOUT_SECONDS + 2 * timeout_seconds
    return max(DISPATCH_LEASE, timedelta(seconds=waves * per_send + 60))


@dataclass
class WebhookDispatcher:
    """Claims due deliveries, sends them, records the outcomes."""

    db: Database
    sender: WebhookSender
    backoff: Backoff = field(default_factory=Backoff)
    batch_size: int = DISPATCH_BATCH
    concurrency: int = DISPATCH_CONCURRENCY
    lease: timedelta = DISPATCH_LEASE
    clock: Callable[[], datetime] = utcnow

    def claim(self, limit: int) -> list[ClaimedDelivery]:
        now = self.clock()
        d, e = webhook_deliveries, webhook_endpoints
        due = (
            sa.select(d.c.id)
            .join(e, e.c.id == d.c.endpoint_id)
            .where(
                e.c.enabled.is_(True),
                sa.or_(
                    sa.and_(d.c.state == DeliveryState.PENDING.value, d.c.next_attempt_at <= now),
                    # A worker died holding it: due again once its lease ends.
                    sa.and_(d.c.state == DeliveryState.DELIVERING.value, d.c.lease_until < now),
                ),
            )
            .order_by(d.c.next_attempt_at)
        )
        # Most polls find nothing: a read says so without taking SQLite's write lock, which
        # message delivery may be waiting for.
        with self.db.read() as conn:
            if conn.execute(due.limit(1)).first() is None:
                return []
        with self.db.write() as conn:
            claimable = due.limit(limit).with_for_update(skip_locked=True, of=d)
            ids = list(conn.execute(claimable).scalars())
            if not ids:
                return []
            conn.execute(
                d.update()
                .where(d.c.id.in_(ids))
                .values(
                    state=DeliveryState.DELIVERING.value,
                    lease_until=now + self.lease,
                    attempts=d.c.attempts + 1,
                    first_attempt_at=sa.func.coalesce(d.c.first_attempt_at, now),
                    updated_at=now,
                )
            )
            rows = conn.execute(
                sa.select(
                    d.c.id,
                    d.c.endpoint_id,
                    d.c.event_id,
                    d.c.payload,
                    d.c.attempts,
                    d.c.first_attempt_at,
                    e.c.url,
                    e.c.secret,
                    e.c.previous_secret,
                    e.c.previous_secret_expires_at,
                )
                .join(e, e.c.id == d.c.endpoint_id)
                .where(d.c.id.in_(ids))
                .order_by(d.c.next_attempt_at, d.c.id)
            ).all()
        return [
            ClaimedDelivery(
                id=row.id,
                endpoint_id=row.endpoint_id,
                event_id=row.event_id,
                url=row.url,
                payload=row.payload,
                attempts=row.attempts,
                first_attempt_at=row.first_attempt_at or now,
                secrets=tuple(
                    signing_secrets(
                        row.secret, row.previous_secret, row.previous_secret_expires_at, now
                    )
                ),
            )
            for row in rows
        ]

    async def send(self, claimed: Sequence[ClaimedDelivery]) -> list[tuple[datetime, SendResult]]:
        limit = asyncio.Semaphore(self.concurrency)

        async def one(delivery: ClaimedDelivery) -> tuple[datetime, SendResult]:
            async with limit:
                attempted_at = self.clock()
                body = delivery.payload.encode()
                headers = signing.signed_headers(
                    delivery.secrets, delivery.event_id, int(time.time()), body
                )
                try:
                    result = await self.sender.send(delivery.url, headers, body)
                except Exception as exc:  # the sender's own bug must not lose the batch
                    result = SendResult(Outcome.RETRY, error=f"{type(exc).__name__}: {exc}")
                return attempted_at, result

        return list(await asyncio.gather(*(one(delivery) for delivery in claimed)))

    def record(
        self, claimed: Sequence[ClaimedDelivery], results: Sequence[tuple[datetime, SendResult]]
    ) -> None:
        now = self.clock()
        d = webhook_deliveries
        updates: list[dict[str, Any]] = []
        attempts: list[dict[str, Any]] = []
        gone: set[str] = set()
        for delivery, (attempted_at, result) in zip(claimed, results, strict=True):
            error = result.error[:ERROR_CHARS] if result.error else None
            attempts.append(
                {
                    "id": new_id(),
                    "delivery_id": delivery.id,
                    "attempted_at": attempted_at,
                    "status_code": result.status_code,
                    "error": error,
                    "response": result.response_snippet,
                    "duration_ms": result.duration_ms,
                }
            )
            update = {
                "b_id": delivery.id,
                "b_attempts": delivery.attempts,
                "b_status": result.status_code,
                "b_error": error,
                "b_response": result.response_snippet,
                "b_next": now,
                "b_delivered_at": None,
            }
            if result.outcome is Outcome.DELIVERED:
                update["b_state"] = DeliveryState.DELIVERED.value
                update["b_delivered_at"] = now
            elif result.outcome is Outcome.GONE:
                update["b_state"] = DeliveryState.FAILED.value
                gone.add(delivery.endpoint_id)
            elif self.backoff.gives_up(delivery.first_attempt_at, now):
                update["b_state"] = DeliveryState.FAILED.value
            else:
                update["b_state"] = DeliveryState.PENDING.value
                update["b_next"] = now + self.backoff.delay(delivery.attempts)
            updates.append(update)
        with self.db.write() as conn:
            # Only while the claim is ours: a lease that ran out may have been claimed again.
            conn.execute(
                d.update()
                .where(
                    d.c.id == sa.bindparam("b_id"),
                    d.c.state == DeliveryState.DELIVERING.value,
                    d.c.attempts == sa.bindparam("b_attempts"),
                )
                .values(
                    state=sa.bindparam("b_state"),
                    lease_until=None,
                    last_status=sa.bindparam("b_status"),
                    last_error=sa.bindparam("b_error"),
                    last_response=sa.bindparam("b_response"),
                    next_attempt_at=sa.bindparam("b_next"),
                    delivered_at=sa.bindparam("b_delivered_at"),
                    updated_at=now,
                ),
                updates,
            )
            # A delivery deleted meanwhile (its endpoint was) keeps no attempt: its row is gone.
            present = sa.select(d.c.id).where(d.c.id.in_([row["delivery_id"] for row in attempts]))
            if conn.dialect.name == "postgresql":
                present = present.with_for_update(key_share=True)  # a delete waits for us
            existing = set(conn.execute(present).scalars())
            kept = [row for row in attempts if row["delivery_id"] in existing]
            if kept:
                conn.execute(webhook_attempts.insert(), kept)
            if gone:
                conn.execute(
                    webhook_endpoints.update()
                    .where(webhook_endpoints.c.id.in_(sorted(gone)))
                    .values(
                        enabled=False,
                        disabled_reason="the receiver answered 410 Gone",
                        updated_at=now,
                    )
                )
        if gone:
            SUBSCRIPTIONS.invalidate()

    async def run_once(self) -> int:
        """One batch: claimed, sent, recorded; returns how many were claimed."""
        claimed = await asyncio.to_thread(self.claim, self.batch_size)
        if not claimed:
            return 0
        results = await self.send(claimed)
        await asyncio.to_thread(self.record, claimed, results)
        return len(claimed)

    async def close(self) -> None:
        await self.sender.close()
