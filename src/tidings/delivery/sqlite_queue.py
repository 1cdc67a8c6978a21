"""queue.claim and queue.record on a bare sqlite3 connection, for a worker on the event loop.

The same statements and the same answers as the SQLAlchemy versions in queue.py (held to it by
tests/integration/test_delivery_store.py), run inside a transaction the caller opened with
`Database.sqlite_write_at_once()`. Through SQLAlchemy a claim cost ~0.13 ms and a record
~0.05 ms per message, mostly generic row and parameter handling, and ran in a thread whose
turns at the GIL with the event loop cost more again; here both are a few hundredths of that.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy.engine import Dialect

from tidings.campaigns.models import campaign_versions, campaigns
from tidings.channels import service as channels
from tidings.channels.models import channel_configurations
from tidings.db.types import bind_processor
from tidings.delivery.queue import (
    CAMPAIGN_COLUMNS,
    CRASHED_ERROR,
    DEFAULT_MAX_LEASE_EXPIRIES,
    MESSAGE_COLUMNS,
    PROFILE_COLUMNS,
    REF_COLUMNS,
    VERSION_COLUMNS,
    ClaimedMessage,
    Outcomes,
    announced_ids,
    assemble,
    find_suppressions,
    isolate_suspects,
    outcome_events,
    rules_by_workspace,
    written_ids,
)
from tidings.delivery.state import CLAIMABLE, QUIET_HOURS_HELD, ExclusionReason, MessageState
from tidings.events import announce_on_sqlite
from tidings.executions.models import messages
from tidings.profiles.models import profiles
from tidings.rules import enforcement
from tidings.rules.counters import SqliteCounters
from tidings.rules.models import rule_sets
from tidings.rules.policy import WorkspaceRules
from tidings.suppressions.schemas import SuppressionKind
from tidings.suppressions.service import MATCH_COLUMNS, SuppressionMatch
from tidings.vocabulary import Channel

_Convert = Callable[[Any], Any]

_SENDING = MessageState.SENDING.value
_QUEUED = MessageState.QUEUED.value
_FAILED = MessageState.FAILED.value
_CLAIMABLE = tuple(sorted(state.value for state in CLAIMABLE))

_EXPIRED = "SELECT id, lease_expiries FROM messages WHERE state = ? AND lease_until < ?"
_RECOVER = (
    "UPDATE messages SET state = ?, reason = coalesce(?, reason), "
    "last_error = coalesce(?, last_error), lease_until = NULL, "
    "lease_expiries = lease_expiries + 1, updated_at = ? WHERE id = ? AND state = ?"
)
_DUE = (
    "SELECT id, lease_expiries FROM messages "
    f"WHERE state IN ({', '.join('?' for _ in _CLAIMABLE)}) AND due_at <= ? "
    "ORDER BY due_at LIMIT ?"
)
_RECORD_TAIL = ", lease_until = NULL, updated_at = ? WHERE id = ? AND state = ?"
_RECORD_SENT = (
    "UPDATE messages SET state = 'sent', provider_message_id = ?, sent_at = ?, reason = NULL"
    + _RECORD_TAIL
)
_RECORD_RETRY = (
    "UPDATE messages SET state = 'queued', due_at = ?, reason = ?, last_error = ?" + _RECORD_TAIL
)
_RECORD_FAILED = "UPDATE messages SET state = 'failed', reason = ?, last_error = ?" + _RECORD_TAIL
_RECORD_EXCLUDED = (
    "UPDATE messages SET state = 'excluded', reason = ?, last_error = ?" + _RECORD_TAIL
)
_SUPPRESSIONS = (
    f"SELECT {', '.join(MATCH_COLUMNS)} FROM suppressions "
    "WHERE workspace_id = ? AND channel = ? AND kind = ? AND value IN "
)
_RECORD_POSTPONED = (
    "UPDATE messages SET state = 'queued', due_at = ?, attempts = attempts - 1" + _RECORD_TAIL
)
_RECORD_HELD = (
    "UPDATE messages SET state = 'deferred', due_at = ?, reason = ?, attempts = attempts - 1"
    + _RECORD_TAIL
)

_REFS = (
    f"SELECT {', '.join('m.' + name for name in REF_COLUMNS)}, e.kind "
    "FROM messages AS m JOIN executions AS e ON e.id = m.execution_id WHERE m.id IN "
)
_WRITTEN = "SELECT id, state, updated_at FROM messages WHERE id IN "


def _marks(count: int) -> str:
    return ", ".join("?" * count)


@lru_cache(maxsize=8)
def _converters(dialect: Dialect) -> dict[str, _Convert]:
    """SQLAlchemy's own conversions of the columns read and the times bound, so values read and
    stored are exactly those of the SQLAlchemy path."""

    def result(column: Any) -> _Convert:
        processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
        return processor if processor is not None else (lambda value: value)

    # Decoding JSON with the json module was a tenth of a message's CPU; the deserializer
    # SQLAlchemy uses is json.loads unless the engine was given another.
    plain = getattr(dialect, "_json_deserializer", None) in (None, json.loads)

    def per_message(column: Any) -> _Convert:
        return _json_value if plain else result(column)

    bind = bind_processor(messages.c.due_at.type, dialect)
    return {
        "context": per_message(messages.c.context),
        "profile_data": per_message(messages.c.profile_data),
        "attributes": per_message(profiles.c.attributes),
        "consent": per_message(profiles.c.consent),
        "rule_set_ids": result(campaigns.c.rule_set_ids),
        "frequency_caps": result(rule_sets.c.frequency_caps),
        "quiet_hours": result(rule_sets.c.quiet_hours),
        "content": result(campaign_versions.c.content),
        "settings": result(channel_configurations.c.settings),
        "secrets": result(channel_configurations.c.secrets),
        "time": bind if bind is not None else (lambda value: value),
    }


# Digits become "0", so that a run of 19 of them shows as _LONG_NUMBER.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


def _json_value(text: str | None) -> Any:
    """json.loads' answer, mostly from orjson, several times faster.

    orjson reads integers beyond 64 bits as floats where json keeps them exact (Tidings writes
    them with json, see db/engine.py), and refuses NaN and Infinity, which json reads: text with
    a run of 19 digits or more, or that orjson refuses, is read by json.
    """
    if text is None:
        return None
    try:
        data = text.encode()
    except UnicodeEncodeError:
        return json.loads(text)
    if _LONG_NUMBER not in data.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def claim(
    connection: sqlite3.Connection,
    dialect: Dialect,
    now: datetime,
    limit: int,
    lease: timedelta,
    unset_consent: str = "allow",
    max_lease_expiries: int = DEFAULT_MAX_LEASE_EXPIRIES,
) -> list[ClaimedMessage]:
    """queue.claim, in the caller's write transaction."""
    convert = _converters(dialect)
    at = convert["time"](now)
    expired = connection.execute(_EXPIRED, (_SENDING, at)).fetchall()
    if expired:
        _recover(connection, expired, at, now, max_lease_expiries)
    ids, alone = isolate_suspects(
        connection.execute(_DUE, (*_CLAIMABLE, at, limit)).fetchall(), max_lease_expiries
    )
    if not ids:
        return []
    marks = _marks(len(ids))
    connection.execute(
        "UPDATE messages SET state = ?, lease_until = ?, attempts = attempts + 1, "
        f"updated_at = ? WHERE id IN ({marks})",
        (_SENDING, convert["time"](now + lease), at, *ids),
    )
    columns = ", ".join(
        [f"m.{name}" for name in MESSAGE_COLUMNS] + [f"p.{name}" for name in PROFILE_COLUMNS]
    )
    rows = connection.execute(
        f"SELECT {columns} FROM messages AS m LEFT OUTER JOIN profiles AS p "
        f"ON p.id = m.profile_id WHERE m.id IN ({marks}) ORDER BY m.id",
        ids,
    ).fetchall()
    claimed, zones = _assemble(connection, convert, rows)
    for message in claimed:
        message.claimed_alone = alone
    rules = _rules(connection, convert, zones)
    counters = SqliteCounters(connection, convert["time"])
    return enforcement.enforce(claimed, rules, counters, now, unset_consent)


def _recover(
    connection: sqlite3.Connection,
    expired: list[Any],
    at: Any,
    now: datetime,
    max_expiries: int,
) -> None:
    """queue.recover_expired_leases on the bare connection (its docstring says why)."""
    crashed = [row[0] for row in expired if row[1] >= max_expiries]
    reason = ExclusionReason.WORKER_CRASHED.value
    connection.executemany(
        _RECOVER,
        [
            (_FAILED, reason, CRASHED_ERROR, at, message_id, _SENDING)
            if count >= max_expiries
            else (_QUEUED, None, None, at, message_id, _SENDING)
            for message_id, count in expired
        ],
    )
    if crashed:
        marks = f"({_marks(len(crashed))})"
        refs = {row[0]: row[1:] for row in connection.execute(_REFS + marks, crashed).fetchall()}
        failed = [(message_id, reason, CRASHED_ERROR) for message_id in crashed]
        announce_on_sqlite(connection, outcome_events(Outcomes(failed=failed), refs, now, None))


def _rules(
    connection: sqlite3.Connection, convert: dict[str, _Convert], zones: dict[str, str | None]
) -> dict[str, WorkspaceRules]:
    caps, quiet_hours = convert["frequency_caps"], convert["quiet_hours"]
    rows = [
        {
            "id": rule_set_id,
            "workspace_id": workspace_id,
            "is_default": is_default,
            "frequency_caps": caps(caps_text),
            "quiet_hours": quiet_hours(quiet_text),
        }
        for rule_set_id, workspace_id, is_default, caps_text, quiet_text in connection.execute(
            "SELECT id, workspace_id, is_default, frequency_caps, quiet_hours FROM rule_sets "
            f"WHERE workspace_id IN ({_marks(len(zones))})",
            list(zones),
        )
    ]
    return rules_by_workspace(zones, rows) if rows else {}


def _assemble(
    connection: sqlite3.Connection, convert: dict[str, _Convert], rows: Sequence[tuple[Any, ...]]
) -> tuple[list[ClaimedMessage], dict[str, str | None]]:
    context, profile_data = convert["context"], convert["profile_data"]
    attributes, consent = convert["attributes"], convert["consent"]
    decoded = [
        (
            *row[:6],
            context(row[6]),
            profile_data(row[7]),
            row[8],
            row[9],
            row[10],
            attributes(row[11]),
            consent(row[12]),
            row[13],
        )
        for row in rows
    ]
    version_ids = list({row[3] for row in rows})
    version_columns = ", ".join(
        [f"v.{name}" for name in VERSION_COLUMNS] + [f"c.{name}" for name in CAMPAIGN_COLUMNS]
    )
    content, rule_set_ids = convert["content"], convert["rule_set_ids"]
    versions = {
        row[0]: (row[0], row[1], content(row[2]), row[3], row[4], row[5], rule_set_ids(row[6]))
        for row in connection.execute(
            f"SELECT {version_columns} FROM campaign_versions AS v "
            "JOIN campaigns AS c ON c.id = v.campaign_id "
            f"WHERE v.id IN ({_marks(len(version_ids))})",
            version_ids,
        )
    }
    configuration_ids = list({version[4] for version in versions.values()})
    settings, secrets = convert["settings"], convert["secrets"]
    configurations = {
        configuration_id: channels.join_secrets(
            Channel(channel), settings(settings_text), secrets(secrets_text)
        )
        for configuration_id, channel, settings_text, secrets_text in connection.execute(
            "SELECT id, channel, settings, secrets FROM channel_configurations "
            f"WHERE id IN ({_marks(len(configuration_ids))})",
            configuration_ids,
        )
    }
    workspace_ids = list({row[1] for row in rows})
    workspace_rows = connection.execute(
        "SELECT id, unset_consent, timezone FROM workspaces "
        f"WHERE id IN ({_marks(len(workspace_ids))})",
        workspace_ids,
    ).fetchall()
    policies = {workspace_id: policy for workspace_id, policy, _ in workspace_rows}
    zones = {workspace_id: zone for workspace_id, _, zone in workspace_rows}

    def fetch(
        workspace_id: str, channel: str, kind: SuppressionKind, values: Sequence[str]
    ) -> list[SuppressionMatch]:
        return [
            SuppressionMatch(*row)
            for row in connection.execute(
                f"{_SUPPRESSIONS}({_marks(len(values))})",
                (workspace_id, channel, kind.value, *values),
            )
        ]

    claimed = assemble(
        decoded, versions, configurations, policies, find_suppressions(decoded, fetch)
    )
    return claimed, zones


def record(
    connection: sqlite3.Connection, dialect: Dialect, outcomes: Outcomes, now: datetime
) -> None:
    """queue.record, in the caller's write transaction."""
    time = _converters(dialect)["time"]
    at = time(now)
    tail = (at,)
    groups: list[tuple[str, list[tuple[Any, ...]]]] = [
        (_RECORD_SENT, [(p, at, *tail, i, _SENDING) for i, p in outcomes.sent]),
        (
            _RECORD_RETRY,
            [(time(d), r, e, *tail, i, _SENDING) for i, d, r, e in outcomes.retry],
        ),
        (_RECORD_FAILED, [(r, e, *tail, i, _SENDING) for i, r, e in outcomes.failed]),
        (_RECORD_EXCLUDED, [(r, d, *tail, i, _SENDING) for i, r, d in outcomes.excluded]),
        (_RECORD_POSTPONED, [(time(d), *tail, i, _SENDING) for i, d in outcomes.postponed]),
        (
            _RECORD_HELD,
            [(time(d), QUIET_HOURS_HELD, *tail, i, _SENDING) for i, d in outcomes.held],
        ),
    ]
    expected = applied = 0
    for sql, parameters in groups:
        if parameters:
            applied += connection.executemany(sql, parameters).rowcount
            expected += len(parameters)
    counters = SqliteCounters(connection, time)
    for key in sorted(outcomes.uncounted):
        counters.remove(key)
    ids = announced_ids(outcomes)
    if ids:
        marks = f"({_marks(len(ids))})"
        refs = {row[0]: row[1:] for row in connection.execute(_REFS + marks, ids).fetchall()}
        written = None
        if applied != expected:
            rows = connection.execute(_WRITTEN + marks, ids).fetchall()
            written = written_ids(outcomes, rows, at)
        announce_on_sqlite(connection, outcome_events(outcomes, refs, now, written))
