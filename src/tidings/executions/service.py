"""Triggers: validate, deduplicate, and commit an execution with its messages before the 202."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from tidings.campaigns.models import campaign_versions, campaigns
from tidings.campaigns.state import TRIGGERABLE, CampaignStatus
from tidings.content.schemas import MAX_CONTEXT_BYTES
from tidings.db import Database
from tidings.delivery.state import TERMINAL, MessageState
from tidings.errors import Conflict, ErrorCollector, InvalidInput, NotFound
from tidings.executions.models import executions, idempotency_keys, messages
from tidings.executions.schemas import ExecutionCreate, Recipient
from tidings.ids import new_id
from tidings.json_data import unstorable
from tidings.pagination import keyset_page
from tidings.profiles import service as profiles
from tidings.profiles.models import profile_identities
from tidings.profiles.models import profiles as profiles_table
from tidings.vocabulary import EMAIL_NAMESPACE, PHONE_NAMESPACE, Channel

IDEMPOTENCY_TTL = timedelta(hours=24)
UNITARY = "unitary"
# The identity namespace whose value is the address on each channel.
ADDRESS_NAMESPACES = {Channel.EMAIL: EMAIL_NAMESPACE, Channel.SMS: PHONE_NAMESPACE}


@dataclass(frozen=True, slots=True)
class Triggered:
    response: dict[str, Any]
    # True when an earlier request with the same idempotency key produced this response.
    replayed: bool


class _InFlight:
    """Idempotency keys being processed in this process: a concurrent duplicate gets a 409.

    Across processes, PostgreSQL's advisory lock does the same (see _lock_key); SQLite has one
    writer, so there a duplicate waits and then finds the stored response.
    """

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, workspace_id: str, key: str | None) -> Iterator[None]:
        if key is None:
            yield
            return
        entry = (workspace_id, key)
        with self._lock:
            if entry in self._keys:
                raise Conflict("a request with this idempotency key is in progress; retry later")
            self._keys.add(entry)
        try:
            yield
        finally:
            with self._lock:
                self._keys.discard(entry)


IN_FLIGHT = _InFlight()


def request_hash(body: ExecutionCreate) -> str:
    canonical = json.dumps(
        body.model_dump(mode="json", exclude={"request_id"}), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def trigger(
    db: Database,
    workspace_id: str,
    body: ExecutionCreate,
    now: datetime,
    idempotency_key: str | None = None,
) -> Triggered:
    """Accepts a unitary execution: on return, the execution and its messages are committed."""
    if idempotency_key and body.request_id and idempotency_key != body.request_id:
        raise InvalidInput.on("request_id", "differs from the Idempotency-Key header")
    key = body.request_id or idempotency_key
    _check_payload(body)
    digest = request_hash(body)
    with IN_FLIGHT.hold(workspace_id, key), db.write() as conn:
        if key is not None:
            _lock_key(conn, workspace_id, key)
            stored = _stored_response(conn, workspace_id, key, digest, now)
            if stored is not None:
                return Triggered(stored, replayed=True)
        response = _accept(conn, workspace_id, body, key, now)
        if key is not None:
            conn.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.workspace_id == workspace_id, idempotency_keys.c.key == key
                )
            )
            conn.execute(
                idempotency_keys.insert().values(
                    workspace_id=workspace_id,
                    key=key,
                    request_hash=digest,
                    response=response,
                    created_at=now,
                    expires_at=now + IDEMPOTENCY_TTL,
                )
            )
    return Triggered(response, replayed=False)


def _check_payload(body: ExecutionCreate) -> None:
    errors = ErrorCollector()
    if body.recipients is None:
        errors.add(
            "recipients",
            "audience executions (no recipients) are not available yet; send 1 to 20 recipients",
        )
    contexts = [("context", body.context)] + [
        (f"recipients.{index}.context", recipient.context or {})
        for index, recipient in enumerate(body.recipients or [])
    ]
    for field, context in contexts:
        problem = unstorable(context, field)
        if problem is not None:
            errors.errors.append(problem)
        elif len(json.dumps(context)) > MAX_CONTEXT_BYTES:
            errors.add(field, f"is larger than {MAX_CONTEXT_BYTES} bytes as JSON")
    for index, recipient in enumerate(body.recipients or []):
        problem = unstorable(recipient.profile or {}, f"recipients.{index}.profile")
        if problem is not None:
            errors.errors.append(problem)
    errors.raise_if_any("the execution request is invalid")


def _lock_key(conn: sa.Connection, workspace_id: str, key: str) -> None:
    if conn.dialect.name != "postgresql":
        return
    lock_id = int.from_bytes(
        hashlib.sha256(f"{workspace_id}:{key}".encode()).digest()[:8], "big", signed=True
    )
    taken = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(lock_id))).scalar_one()
    if not taken:
        raise Conflict("a request with this idempotency key is in progress; retry later")


def _stored_response(
    conn: sa.Connection, workspace_id: str, key: str, digest: str, now: datetime
) -> dict[str, Any] | None:
    row = conn.execute(
        sa.select(idempotency_keys.c.request_hash, idempotency_keys.c.response).where(
            idempotency_keys.c.workspace_id == workspace_id,
            idempotency_keys.c.key == key,
            idempotency_keys.c.expires_at > now,
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != digest:
        raise InvalidInput.on(
            "request_id", "was used before with a different body; use a new idempotency key"
        )
    response: dict[str, Any] = row.response
    return response


def _live_campaign(
    conn: sa.Connection, workspace_id: str, campaign_id: str, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    campaign = (
        conn.execute(
            sa.select(campaigns).where(
                campaigns.c.id == campaign_id, campaigns.c.workspace_id == workspace_id
            )
        )
        .mappings()
        .first()
    )
    if campaign is None:
        raise InvalidInput.on("campaign_id", "no such campaign in this workspace")
    status = CampaignStatus(campaign["status"])
    if status not in TRIGGERABLE:
        raise InvalidInput.on("campaign_id", f"the campaign is {status}, not live")
    version = (
        conn.execute(
            sa.select(campaign_versions).where(
                campaign_versions.c.id == campaign["live_version_id"]
            )
        )
        .mappings()
        .one()
    )
    if version["start_at"] and now < version["start_at"]:
        raise InvalidInput.on("campaign_id", "the campaign's schedule has not started")
    if version["end_at"] and now >= version["end_at"]:
        raise InvalidInput.on("campaign_id", "the campaign's schedule has ended")
    return dict(campaign), dict(version)


@dataclass(slots=True)
class _Resolved:
    namespace: str
    value: str
    address: str | None
    recipient: Recipient


def _resolve_recipients(body: ExecutionCreate, channel: Channel, namespace: str) -> list[_Resolved]:
    errors = ErrorCollector()
    resolved: list[_Resolved] = []
    seen: set[str] = set()
    for index, recipient in enumerate(body.recipients or []):
        field = f"recipients.{index}"
        if recipient.identity.namespace != namespace:
            errors.add(
                f"{field}.identity.namespace",
                f"the campaign identifies recipients in the '{namespace}' namespace",
            )
            continue
        try:
            value = profiles.normalize_identity(
                namespace, recipient.identity.id, f"{field}.identity.id"
            )
        except InvalidInput as exc:
            errors.errors.extend(exc.errors)
            continue
        if value in seen:
            errors.add(f"{field}.identity.id", "appears twice in this call")
            continue
        seen.add(value)
        address = _channel_address(channel, recipient, errors, field)
        if address is None and ADDRESS_NAMESPACES.get(channel) == namespace:
            address = value
        resolved.append(_Resolved(namespace, value, address, recipient))
    errors.raise_if_any("some recipients are invalid")
    return resolved


def _channel_address(
    channel: Channel, recipient: Recipient, errors: ErrorCollector, field: str
) -> str | None:
    data = recipient.channel_data
    if data is None:
        return None
    if channel is Channel.EMAIL and data.email:
        try:
            return validate_email(data.email, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            errors.add(f"{field}.channel_data.email", f"is not a valid email address ({exc})")
    if channel is Channel.SMS and data.phone:
        try:
            return profiles.normalize_identity(
                PHONE_NAMESPACE, data.phone, f"{field}.channel_data.phone"
            )
        except InvalidInput as exc:
            errors.errors.extend(exc.errors)
    if channel is Channel.PUSH and data.push_token:
        return data.push_token
    return None


def _accept(
    conn: sa.Connection,
    workspace_id: str,
    body: ExecutionCreate,
    key: str | None,
    now: datetime,
) -> dict[str, Any]:
    campaign, version = _live_campaign(conn, workspace_id, body.campaign_id, now)
    channel = Channel(campaign["channel"])
    audience = version["audience"]
    namespace = audience["identity_namespace"]
    resolved = _resolve_recipients(body, channel, namespace)
    stored = [r for r in resolved if not r.recipient.external]
    profile_ids = _profile_ids(conn, workspace_id, namespace, [r.value for r in stored])
    unknown = [r for r in stored if r.value not in profile_ids]
    if unknown and not audience.get("create_new_profiles"):
        errors = ErrorCollector()
        for index, sent in enumerate(body.recipients or []):
            if any(r.recipient is sent for r in unknown):
                errors.add(
                    f"recipients.{index}.identity.id",
                    "no profile has this identity, and the campaign does not create profiles",
                )
        errors.raise_if_any("some recipients are unknown")
    for recipient in unknown:
        profile_ids[recipient.value] = _create_profile(conn, workspace_id, recipient, now)
    missing_address = [
        profile_ids[r.value] for r in resolved if r.address is None and r.value in profile_ids
    ]
    stored_addresses = _addresses(conn, channel, missing_address)

    execution_id = new_id()
    conn.execute(
        executions.insert().values(
            id=execution_id,
            workspace_id=workspace_id,
            campaign_id=campaign["id"],
            version_id=version["id"],
            kind=UNITARY,
            status="accepted",
            request_id=key,
            recipient_count=len(resolved),
            execute_at=body.execute_at,
            created_at=now,
        )
    )
    due_at = max(body.execute_at or now, now)
    rows = []
    for recipient in resolved:
        profile_id = None if recipient.recipient.external else profile_ids[recipient.value]
        rows.append(
            {
                "id": new_id(),
                "workspace_id": workspace_id,
                "execution_id": execution_id,
                "campaign_id": campaign["id"],
                "version_id": version["id"],
                "channel": channel.value,
                "state": MessageState.QUEUED.value,
                "recipient_namespace": recipient.namespace,
                "recipient_id": recipient.value,
                "profile_id": profile_id,
                "address": recipient.address or stored_addresses.get(profile_id or ""),
                "context": {**body.context, **(recipient.recipient.context or {})},
                "profile_data": recipient.recipient.profile,
                "due_at": due_at,
                "attempts": 0,
                "lease_until": None,
                "reason": None,
                "last_error": None,
                "provider_message_id": None,
                "created_at": now,
                "updated_at": now,
                "sent_at": None,
            }
        )
    conn.execute(messages.insert(), rows)
    return {"execution_id": execution_id, "request_id": key, "accepted": len(rows)}


def _profile_ids(
    conn: sa.Connection, workspace_id: str, namespace: str, values: list[str]
) -> dict[str, str]:
    rows = conn.execute(
        sa.select(profile_identities.c.value, profile_identities.c.profile_id).where(
            profile_identities.c.workspace_id == workspace_id,
            profile_identities.c.namespace == namespace,
            profile_identities.c.value.in_(values),
        )
    ).all()
    return {row.value: row.profile_id for row in rows}


def _create_profile(
    conn: sa.Connection, workspace_id: str, recipient: _Resolved, now: datetime
) -> str:
    profile_id = new_id()
    conn.execute(
        profiles_table.insert().values(
            id=profile_id,
            workspace_id=workspace_id,
            attributes=recipient.recipient.profile or {},
            consent={},
            timezone=None,
            locale=None,
            created_at=now,
            updated_at=now,
        )
    )
    conn.execute(
        profile_identities.insert().values(
            workspace_id=workspace_id,
            namespace=recipient.namespace,
            value=recipient.value,
            profile_id=profile_id,
        )
    )
    return profile_id


def _addresses(conn: sa.Connection, channel: Channel, profile_ids: list[str]) -> dict[str, str]:
    """Addresses from the profiles' identities, for recipients the call gave none for."""
    namespace = ADDRESS_NAMESPACES.get(channel)
    if not profile_ids or namespace is None:
        return {}
    rows = conn.execute(
        sa.select(profile_identities.c.profile_id, profile_identities.c.value).where(
            profile_identities.c.profile_id.in_(profile_ids),
            profile_identities.c.namespace == namespace,
        )
    ).all()
    return {row.profile_id: row.value for row in rows}


# ---------------------------------------------------------------- reading


def _load_execution(conn: sa.Connection, workspace_id: str, execution_id: str) -> dict[str, Any]:
    row = (
        conn.execute(
            sa.select(executions, campaign_versions.c.number.label("version"))
            .join(campaign_versions, campaign_versions.c.id == executions.c.version_id)
            .where(executions.c.id == execution_id, executions.c.workspace_id == workspace_id)
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("no such execution in this workspace")
    return dict(row)


def get(db: Database, workspace_id: str, execution_id: str) -> dict[str, Any]:
    with db.read() as conn:
        execution = _load_execution(conn, workspace_id, execution_id)
        counts = {
            row.state: row.count
            for row in conn.execute(
                sa.select(messages.c.state, sa.func.count().label("count"))
                .where(messages.c.execution_id == execution_id)
                .group_by(messages.c.state)
            )
        }
    finished = all(MessageState(state) in TERMINAL for state in counts)
    return {
        "id": execution["id"],
        "campaign_id": execution["campaign_id"],
        "version": execution["version"],
        "kind": execution["kind"],
        "status": "completed" if finished else "running",
        "request_id": execution["request_id"],
        "recipients": execution["recipient_count"],
        "counts": counts,
        "created_at": execution["created_at"],
    }


def list_messages(
    db: Database, workspace_id: str, execution_id: str, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    with db.read() as conn:
        _load_execution(conn, workspace_id, execution_id)
        query = sa.select(messages).where(messages.c.execution_id == execution_id)
        rows, next_cursor = keyset_page(conn, query, messages.c.id, cursor, limit)
    return [
        {
            **dict(row),
            "recipient": {"namespace": row["recipient_namespace"], "id": row["recipient_id"]},
        }
        for row in rows
    ], next_cursor
