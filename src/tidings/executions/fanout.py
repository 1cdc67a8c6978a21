"""Audience executions fire: their audience is streamed page by page into queued messages.

Each page is one transaction that inserts the page's messages and moves the execution's cursor
(the last profile id queued), so memory stays flat whatever the audience's size and a crash
between pages neither loses nor repeats a recipient. On PostgreSQL the execution row is locked
with SKIP LOCKED, so several workers fan out different executions side by side.

A page that fails on an error of its own (not the database being unavailable) would fail again
at every pass and, as the due execution first in line, hold up every other one: that execution
is failed instead, in a transaction of its own, and the pass goes on with the others.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tidings.audiences import service as audiences
from tidings.audiences.rules import RuleError
from tidings.campaigns.models import campaign_versions, campaigns
from tidings.campaigns.state import TRIGGERABLE, CampaignStatus
from tidings.db import Database
from tidings.db.bulk import bulk_insert
from tidings.delivery.state import MessageState
from tidings.errors import TidingsError
from tidings.events import EventKind, MessageEvent, announce
from tidings.executions.models import executions, messages
from tidings.executions.service import ADDRESS_NAMESPACES
from tidings.executions.state import FANNING, ExecutionStatus, check_execution_move
from tidings.executions.store import SqlAlchemyStore
from tidings.ids import new_id
from tidings.profiles.models import profile_identities
from tidings.profiles.service import push_tokens_for
from tidings.vocabulary import Channel

PAGE_SIZE = 1000

log = logging.getLogger("tidings.fanout")


def advance(db: Database, now: datetime, page_size: int = PAGE_SIZE, budget: int = 10) -> int:
    """Queues up to `budget` pages of due audience executions, each page in its own
    transaction (so one worker turn stays short); returns how many messages it queued."""
    if not _anything_due(db, now):
        # The common case, answered by a read: no write lock taken from the trigger writer.
        return 0
    queued = 0
    for _ in range(budget):
        execution: Mapping[str, Any] | None = None
        try:
            with db.write() as conn:
                execution = _next_due(conn, now)
                if execution is None:
                    break
                queued += _queue_page(conn, execution, now, page_size)
        except Exception as exc:
            # The page's transaction is rolled back. An error before an execution was picked,
            # or one that retrying may cure (the database unavailable), stops the pass: the
            # worker retries it later.
            if execution is None or _transient(exc):
                raise
            log.exception(
                "audience execution %s failed: its page could not be queued",
                execution["id"],
                extra={"execution_id": execution["id"]},
            )
            _fail(db, execution["id"], now, _failure_reason(exc))
    return queued


def _transient(exc: Exception) -> bool:
    """Whether `exc` says the database could not be used now, not that the page is wrong."""
    if isinstance(exc, TidingsError):
        return exc.retryable
    if isinstance(exc, sa.exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa.exc.OperationalError | sa.exc.InterfaceError
        )
    return isinstance(exc, sa.exc.TimeoutError | sa.exc.DisconnectionError)


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, RuleError):
        # A rule saved before the language's limits were narrowed.
        return f"the audience's rule cannot be evaluated: {exc}; change the rule"
    if isinstance(exc, TidingsError):
        return f"queueing the messages failed: {exc.detail}"
    # The message of an unexpected error may hold internals: it goes to the log only.
    return f"queueing the messages failed on an unexpected error ({type(exc).__name__})"


def _fail(db: Database, execution_id: str, now: datetime, reason: str) -> None:
    """Fails the execution unless it left the fan-out meanwhile (cancelled, or failed already
    by another worker that met the same error)."""
    with db.write() as conn:
        current = conn.execute(
            sa.select(executions.c.status).where(executions.c.id == execution_id).with_for_update()
        ).scalar()
        if current is None or ExecutionStatus(current) not in FANNING:
            return
        check_execution_move(ExecutionStatus(current), ExecutionStatus.FAILED)
        conn.execute(
            executions.update()
            .where(executions.c.id == execution_id)
            .values(status=ExecutionStatus.FAILED.value, finished_at=now, failure=reason)
        )


def _anything_due(db: Database, now: datetime) -> bool:
    with db.read() as conn:
        found = conn.execute(
            sa.select(executions.c.id)
            .where(
                executions.c.status.in_([status.value for status in FANNING]),
                executions.c.execute_at <= now,
            )
            .limit(1)
        ).first()
    return found is not None


def _next_due(conn: sa.Connection, now: datetime) -> Mapping[str, Any] | None:
    query = (
        sa.select(
            executions,
            campaigns.c.status.label("campaign_status"),
            campaigns.c.channel,
            campaign_versions.c.audience.label("version_audience"),
            campaign_versions.c.channel_configuration_id,
        )
        .join(campaigns, campaigns.c.id == executions.c.campaign_id)
        .join(campaign_versions, campaign_versions.c.id == executions.c.version_id)
        .where(
            executions.c.status.in_([status.value for status in FANNING]),
            executions.c.execute_at <= now,
        )
        .order_by(executions.c.execute_at)
        .limit(1)
        .with_for_update(skip_locked=True, of=executions)
    )
    row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def _queue_page(
    conn: sa.Connection, execution: Mapping[str, Any], now: datetime, page_size: int
) -> int:
    status = ExecutionStatus(execution["status"])
    failure = _failure(conn, execution)
    if failure is not None:
        _finish(conn, execution, status, ExecutionStatus.FAILED, now, failure=failure)
        return 0
    # A rule audience is evaluated at the time the execution fired, on every page: `now - 30d`
    # means the same instant from the first page to the last.
    profile_ids = audiences.member_page(
        conn,
        execution["audience_id"],
        execution["fanout_cursor"],
        page_size,
        now=execution["fired_at"] or now,
    )
    rows = _message_rows(conn, execution, profile_ids, now)
    bulk_insert(conn, messages, rows)
    announce(
        conn,
        [
            MessageEvent(
                kind=EventKind.TARGETED,
                message_id=row["id"],
                workspace_id=row["workspace_id"],
                campaign_id=row["campaign_id"],
                version_id=row["version_id"],
                execution_id=row["execution_id"],
                channel=row["channel"],
                occurred_at=now,
                audience=True,
            )
            for row in rows
        ],
    )
    values: dict[str, Any] = {
        "recipient_count": executions.c.recipient_count + len(rows),
        "fanout_cursor": profile_ids[-1] if profile_ids else execution["fanout_cursor"],
    }
    if execution["fired_at"] is None:
        values["fired_at"] = now
    if len(profile_ids) < page_size:
        _finish(conn, execution, status, ExecutionStatus.ACCEPTED, now, **values)
    else:
        if status is not ExecutionStatus.FANNING_OUT:
            check_execution_move(status, ExecutionStatus.FANNING_OUT)
        conn.execute(
            executions.update()
            .where(executions.c.id == execution["id"])
            .values(status=ExecutionStatus.FANNING_OUT.value, **values)
        )
    return len(rows)


def _failure(conn: sa.Connection, execution: Mapping[str, Any]) -> str | None:
    """Why the execution cannot go on, if it cannot: checked when it fires and at every page."""
    if CampaignStatus(execution["campaign_status"]) not in TRIGGERABLE:
        return f"the campaign is {execution['campaign_status']}, not live"
    if audiences.exists(conn, execution["workspace_id"], execution["audience_id"]):
        return None
    return "the audience was deleted"


def _finish(
    conn: sa.Connection,
    execution: Mapping[str, Any],
    current: ExecutionStatus,
    target: ExecutionStatus,
    now: datetime,
    **values: Any,
) -> None:
    check_execution_move(current, target)
    conn.execute(
        executions.update()
        .where(executions.c.id == execution["id"])
        .values(status=target.value, finished_at=now, **values)
    )


def _message_rows(
    conn: sa.Connection, execution: Mapping[str, Any], profile_ids: Sequence[str], now: datetime
) -> list[dict[str, Any]]:
    if not profile_ids:
        return []
    channel = Channel(execution["channel"])
    namespace = execution["version_audience"]["identity_namespace"]
    address_namespace = ADDRESS_NAMESPACES.get(channel)
    identities: dict[str, dict[str, str]] = {}
    for row in conn.execute(
        sa.select(
            profile_identities.c.profile_id,
            profile_identities.c.namespace,
            profile_identities.c.value,
        ).where(
            profile_identities.c.profile_id.in_(profile_ids),
            profile_identities.c.namespace.in_({namespace, address_namespace or namespace}),
        )
    ):
        identities.setdefault(row.profile_id, {})[row.namespace] = row.value
    tokens = _push_tokens(conn, execution, profile_ids) if channel is Channel.PUSH else {}
    rows = []
    for profile_id in profile_ids:
        known = identities.get(profile_id, {})
        # A member without an identity in the campaign's namespace is named by profile id.
        recipient = (namespace, known[namespace]) if namespace in known else ("profile", profile_id)
        rows.append(
            {
                "id": new_id(),
                "workspace_id": execution["workspace_id"],
                "execution_id": execution["id"],
                "campaign_id": execution["campaign_id"],
                "version_id": execution["version_id"],
                "channel": channel.value,
                "state": MessageState.QUEUED.value,
                "recipient_namespace": recipient[0],
                "recipient_id": recipient[1],
                "profile_id": profile_id,
                # No address: the deliverer excludes the message with reason no_address.
                "address": (
                    known.get(address_namespace)
                    if address_namespace
                    else next(iter(tokens.get(profile_id, ())), None)
                ),
                "context": execution["context"] or {},
                "profile_data": None,
                "due_at": now,
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
    return rows


def _push_tokens(
    conn: sa.Connection, execution: Mapping[str, Any], profile_ids: Sequence[str]
) -> dict[str, list[str]]:
    """The members' push tokens for the app of the campaign's configuration (any app when it
    names none), the newest first."""
    configuration_id = execution["channel_configuration_id"]
    app_id = None
    if configuration_id:
        app_id = SqlAlchemyStore(conn).push_app_ids([configuration_id]).get(configuration_id)
    return push_tokens_for(conn, execution["workspace_id"], profile_ids, app_id)
