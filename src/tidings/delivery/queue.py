"""The message table as a queue: claim due messages with a lease, record outcomes in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tidings.campaigns.models import campaign_versions, campaigns
from tidings.channels import service as channels
from tidings.channels.models import channel_configurations
from tidings.db import Database
from tidings.delivery.state import CLAIMABLE, QUIET_HOURS_HELD, ExclusionReason, MessageState
from tidings.events import EventKind, MessageEvent, announce
from tidings.executions.models import executions, messages
from tidings.profiles.models import profiles
from tidings.rules import enforcement
from tidings.rules.counters import CounterKey, counters_for
from tidings.rules.enforcement import Verdict
from tidings.rules.models import rule_sets
from tidings.rules.policy import WorkspaceRules, workspace_rules
from tidings.suppressions import service as suppressions
from tidings.suppressions.models import suppressions as suppression_table
from tidings.suppressions.schemas import SuppressionChannel, SuppressionKind
from tidings.suppressions.service import SuppressionMatch
from tidings.vocabulary import Category, Channel
from tidings.workspaces.models import workspaces


@dataclass(slots=True)
class ClaimedMessage:
    """Everything a worker needs to render and send one message, read in the claim.

    Not frozen: the claim's rules fill `verdict` and `counted` in place (dataclasses.replace
    of a message cost ~30 µs, a tenth of the rest of its delivery).
    """

    id: str
    workspace_id: str
    campaign_id: str
    campaign_name: str
    version_id: str
    channel: Channel
    content: dict[str, Any] | None
    category: Category
    # The recipient's marketing consent on this channel: in, out or unset.
    consent: str
    rate_per_second: int | None
    settings: dict[str, Any] | None
    address: str | None
    context: dict[str, Any]
    profile: dict[str, Any]
    attempts: int
    # The workspace's policy for unset consent ("allow", "deny"; None: the server's setting).
    unset_consent: str | None = None
    # The suppression deciding whether the address may be sent to, read in the claim.
    suppression: SuppressionMatch | None = None
    profile_id: str | None = None
    # The profile's IANA time zone, for quiet hours.
    timezone: str | None = None
    # The campaign's business rule sets (beside the workspace's defaults).
    rule_set_ids: Sequence[str] | None = None
    # What the rules decided in the claim (not sent: excluded or held), None: send it.
    verdict: Verdict | None = None
    # The frequency counters the claim moved for it, given back if it is not sent.
    counted: tuple[CounterKey, ...] = ()
    # A proof for a tester: consent, quiet hours and caps do not apply (suppressions do).
    is_proof: bool = False
    # Claimed alone as a suspect (isolate_suspects): the worker claims nothing else while it
    # is on the wire, and claims again as soon as it is done instead of waiting for a poll.
    claimed_alone: bool = False


@dataclass(slots=True)
class Outcomes:
    """What happened to a batch, grouped so each group is one UPDATE."""

    sent: list[tuple[str, str | None]] = field(default_factory=list)  # (id, provider id)
    retry: list[tuple[str, datetime, str, str]] = field(default_factory=list)  # due, reason, error
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # id, reason, error
    excluded: list[tuple[str, str, str | None]] = field(default_factory=list)  # id, reason, detail
    # Claimed but held back (rate limit): due again later, the attempt not counted.
    postponed: list[tuple[str, datetime]] = field(default_factory=list)
    # Held by quiet hours: deferred until they end, the attempt not counted.
    held: list[tuple[str, datetime]] = field(default_factory=list)
    # Frequency counters of messages claimed but not sent: given back.
    uncounted: list[CounterKey] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(
            len(group)
            for group in (
                self.sent,
                self.retry,
                self.failed,
                self.excluded,
                self.postponed,
                self.held,
            )
        )


def renew_leases(db: Database, message_ids: Sequence[str], until: datetime) -> None:
    """Extends the lease of claimed messages still being sent, so that a batch slower than its
    lease (a relay stalling on every command) is not claimed and sent again by another worker
    while this one is still at it."""
    with db.write() as conn:
        conn.execute(
            messages.update()
            .where(
                messages.c.id.in_(list(message_ids)),
                messages.c.state == MessageState.SENDING.value,
            )
            .values(lease_until=until)
        )


# Lease expiries after which a message fails as worker_crashed
# (TIDINGS_DELIVERY_MAX_LEASE_EXPIRIES).
DEFAULT_MAX_LEASE_EXPIRIES = 5
CRASHED_ERROR = "the workers that took this message died before recording it"


# Lease expiries from which a message is claimed alone (isolate_suspects).
SUSPECT_EXPIRIES = 2


def isolate_suspects(
    due: Sequence[Sequence[Any]], max_expiries: int = DEFAULT_MAX_LEASE_EXPIRIES
) -> tuple[list[str], bool]:
    """The ids to claim of the due (id, lease_expiries) rows, and whether one was taken alone:
    all of them, or only the first message whose lease ran out twice already (once, where the
    limit is 1), alone. If it is what kills its workers, it then kills the next one without
    taking its batch-mates down again (they would fail as worker_crashed with it). One expiry
    is common (a deploy, a worker killed by a supervisor) and leaves batches whole."""
    threshold = min(SUSPECT_EXPIRIES, max_expiries)
    for message_id, expiries in due:
        if expiries >= threshold:
            return [message_id], True
    return [row[0] for row in due], False


def _refs_of(conn: sa.Connection, ids: Sequence[str]) -> dict[str, Sequence[Any]]:
    """What the events of these messages name (REF_COLUMNS and the execution's kind), by id."""
    return {
        row[0]: row[1:]
        for row in conn.execute(
            sa.select(*(messages.c[name] for name in REF_COLUMNS), executions.c.kind)
            .join(executions, executions.c.id == messages.c.execution_id)
            .where(messages.c.id.in_(ids))
        )
    }


def recover_expired_leases(
    conn: sa.Connection, now: datetime, max_expiries: int = DEFAULT_MAX_LEASE_EXPIRIES
) -> int:
    """`sending` rows whose worker died go back to the queue (they may have been sent).

    A message whose lease already ran out `max_expiries` times fails instead (worker_crashed):
    it is likely what kills its workers (a template that blows up on its data), and handing it
    to the next worker would only kill that one too. Rows another claim is recovering are
    skipped (SKIP LOCKED), so each expiry is counted and announced once.
    """
    sending = MessageState.SENDING.value
    expired = conn.execute(
        sa.select(messages.c.id, messages.c.lease_expiries)
        .where(messages.c.state == sending, messages.c.lease_until < now)
        .with_for_update(skip_locked=True)
    ).all()
    if not expired:
        return 0
    requeued = [row.id for row in expired if row.lease_expiries < max_expiries]
    crashed = [row.id for row in expired if row.lease_expiries >= max_expiries]
    for ids, values in (
        (requeued, {"state": MessageState.QUEUED.value}),
        (
            crashed,
            {
                "state": MessageState.FAILED.value,
                "reason": ExclusionReason.WORKER_CRASHED.value,
                "last_error": CRASHED_ERROR,
            },
        ),
    ):
        if ids:
            conn.execute(
                messages.update()
                .where(messages.c.id.in_(ids), messages.c.state == sending)
                .values(
                    **values,
                    lease_until=None,
                    lease_expiries=messages.c.lease_expiries + 1,
                    updated_at=now,
                )
            )
    if crashed:
        refs = _refs_of(conn, crashed)
        failed = [(i, ExclusionReason.WORKER_CRASHED.value, CRASHED_ERROR) for i in crashed]
        announce(conn, outcome_events(Outcomes(failed=failed), refs, now, None))
    return len(expired)


def claim(
    db: Database,
    now: datetime,
    limit: int,
    lease: timedelta,
    unset_consent: str = "allow",
    max_lease_expiries: int = DEFAULT_MAX_LEASE_EXPIRIES,
) -> list[ClaimedMessage]:
    """Takes up to `limit` due messages for this worker until `now + lease`, with the verdict
    of the business rules on each (rules/enforcement.py).

    On PostgreSQL, SKIP LOCKED lets any number of workers claim side by side without waiting
    for each other; SQLite has one writer, so its claims are serialized anyway. The frequency
    counters are moved in this same transaction, so concurrent claims take turns on them.
    """
    with db.write() as conn:
        recover_expired_leases(conn, now, max_lease_expiries)
        due = (
            sa.select(messages.c.id, messages.c.lease_expiries)
            .where(
                messages.c.state.in_([state.value for state in CLAIMABLE]),
                messages.c.due_at <= now,
            )
            .order_by(messages.c.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids, alone = isolate_suspects(conn.execute(due).all(), max_lease_expiries)
        if not ids:
            return []
        conn.execute(
            messages.update()
            .where(messages.c.id.in_(ids))
            .values(
                state=MessageState.SENDING.value,
                lease_until=now + lease,
                attempts=messages.c.attempts + 1,
                updated_at=now,
            )
        )
        claimed, zones = _load_claimed(conn, ids)
        for message in claimed:
            message.claimed_alone = alone
        rules = _load_rules(conn, zones)
        return enforcement.enforce(claimed, rules, counters_for(conn), now, unset_consent)


def _load_rules(conn: sa.Connection, zones: Mapping[str, str | None]) -> dict[str, WorkspaceRules]:
    rows = (
        conn.execute(sa.select(rule_sets).where(rule_sets.c.workspace_id.in_(list(zones))))
        .mappings()
        .all()
    )
    return rules_by_workspace(zones, rows)


def rules_by_workspace(
    zones: Mapping[str, str | None], rows: Iterable[Mapping[Any, Any]]
) -> dict[str, WorkspaceRules]:
    """The rules of the workspaces that have rule sets, from their zones (by workspace id) and
    their rule_sets rows (JSON decoded)."""
    by_workspace: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_workspace.setdefault(row["workspace_id"], []).append(row)
    return {
        workspace_id: workspace_rules(zones.get(workspace_id), workspace_rows)
        for workspace_id, workspace_rows in by_workspace.items()
    }


def _load_claimed(
    conn: sa.Connection, ids: Sequence[str]
) -> tuple[list[ClaimedMessage], dict[str, str | None]]:
    rows = conn.execute(
        sa.select(
            *(messages.c[name] for name in MESSAGE_COLUMNS),
            *(profiles.c[name] for name in PROFILE_COLUMNS),
        )
        .outerjoin(profiles, profiles.c.id == messages.c.profile_id)
        .where(messages.c.id.in_(ids))
        .order_by(messages.c.id)
    ).all()
    # A batch's messages share a few versions: their content (kilobytes of JSON) and settings
    # are read and decoded once per version, not once per message.
    versions = {
        row.id: row
        for row in conn.execute(
            sa.select(
                *(campaign_versions.c[name] for name in VERSION_COLUMNS),
                *(campaigns.c[name] for name in CAMPAIGN_COLUMNS),
            )
            .join(campaigns, campaigns.c.id == campaign_versions.c.campaign_id)
            .where(campaign_versions.c.id.in_({row.version_id for row in rows}))
        )
    }
    configuration_ids = {version.channel_configuration_id for version in versions.values()}
    configurations = {
        row.id: channels.join_secrets(Channel(row.channel), row.settings, row.secrets)
        for row in conn.execute(
            sa.select(channel_configurations).where(
                channel_configurations.c.id.in_(configuration_ids)
            )
        )
    }
    plain_rows = [tuple(row) for row in rows]
    workspace_rows = conn.execute(
        sa.select(workspaces.c.id, workspaces.c.unset_consent, workspaces.c.timezone).where(
            workspaces.c.id.in_({row[1] for row in plain_rows})
        )
    ).all()
    policies = {workspace_id: policy for workspace_id, policy, _ in workspace_rows}
    zones = {workspace_id: zone for workspace_id, _, zone in workspace_rows}
    columns = [suppression_table.c[name] for name in suppressions.MATCH_COLUMNS]

    def fetch(
        workspace_id: str, channel: str, kind: SuppressionKind, values: Sequence[str]
    ) -> list[SuppressionMatch]:
        table = suppression_table
        return [
            SuppressionMatch(*row)
            for row in conn.execute(
                sa.select(*columns).where(
                    table.c.workspace_id == workspace_id,
                    table.c.channel == channel,
                    table.c.kind == kind.value,
                    table.c.value.in_(values),
                )
            )
        ]

    claimed = assemble(
        plain_rows,
        {version_id: tuple(version) for version_id, version in versions.items()},
        configurations,
        policies,
        find_suppressions(plain_rows, fetch),
    )
    return claimed, zones


# Reads one workspace's suppressions of a kind on a channel among some values.
FetchSuppressions = Callable[[str, str, SuppressionKind, Sequence[str]], Iterable[SuppressionMatch]]
_SUPPRESSIBLE = frozenset(channel.value for channel in SuppressionChannel)


def find_suppressions(
    rows: Sequence[tuple[Any, ...]], fetch: FetchSuppressions
) -> dict[tuple[str, str, str], SuppressionMatch]:
    """The deciding suppression of each suppressed (workspace, channel, address) among the
    rows (MESSAGE_COLUMNS): one or two queries per workspace and channel of the batch."""
    groups: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        workspace_id, channel, address = row[1], row[4], row[5]
        if address and channel in _SUPPRESSIBLE:
            groups.setdefault((workspace_id, channel), set()).add(address)
    found: dict[tuple[str, str, str], SuppressionMatch] = {}
    for (workspace_id, channel), addresses in groups.items():

        def entries(
            kind: SuppressionKind,
            values: Sequence[str],
            workspace_id: str = workspace_id,
            channel: str = channel,
        ) -> Iterable[SuppressionMatch]:
            return fetch(workspace_id, channel, kind, values)

        matches = suppressions.match_addresses(entries, channel, addresses)
        found.update({(workspace_id, channel, a): match for a, match in matches.items()})
    return found


# Columns of a claimed message's row (then its profile's), and of its version's (then its
# campaign's), in order, for both implementations.
MESSAGE_COLUMNS = (
    "id",
    "workspace_id",
    "campaign_id",
    "version_id",
    "channel",
    "address",
    "context",
    "profile_data",
    "attempts",
    "profile_id",
    "is_proof",
)
PROFILE_COLUMNS = ("attributes", "consent", "timezone")
VERSION_COLUMNS = ("id", "name", "content", "rate_per_second", "channel_configuration_id")
CAMPAIGN_COLUMNS = ("category", "rule_set_ids")


_CHANNELS = {channel.value: channel for channel in Channel}


def assemble(
    rows: Sequence[tuple[Any, ...]],
    versions: Mapping[str, tuple[Any, ...]],
    configurations: Mapping[str, dict[str, Any]],
    policies: Mapping[str, str | None],
    suppressed: Mapping[tuple[str, str, str], SuppressionMatch],
) -> list[ClaimedMessage]:
    """ClaimedMessages from the rows read (MESSAGE_COLUMNS + PROFILE_COLUMNS), their versions'
    rows (VERSION_COLUMNS + CAMPAIGN_COLUMNS, by id) and configurations' settings (by id),
    already decoded, the
    workspaces' policies for unset consent (by id) and the suppressions found (by workspace,
    channel and address, see find_suppressions)."""
    claimed = []
    # Enum lookups by value cost more than the rest of a row: done once per version here.
    categories = {version_id: Category(version[5]) for version_id, version in versions.items()}
    for (
        message_id,
        workspace_id,
        campaign_id,
        version_id,
        channel_name,
        address,
        context,
        profile_data,
        attempts,
        profile_id,
        is_proof,
        attributes,
        consent,
        timezone,
    ) in rows:
        version = versions.get(version_id)
        if version is None:
            # The join this replaces skipped such rows too; a version is never deleted.
            continue
        _, name, content, rate_per_second, configuration_id, _, rule_set_ids = version
        channel = _CHANNELS.get(channel_name) or Channel(channel_name)
        claimed.append(
            ClaimedMessage(
                id=message_id,
                workspace_id=workspace_id,
                campaign_id=campaign_id,
                campaign_name=name,
                version_id=version_id,
                channel=channel,
                content=content,
                category=categories[version_id],
                consent=(consent or {}).get(channel, {}).get("status", "unset"),
                rate_per_second=rate_per_second,
                settings=configurations.get(configuration_id),
                address=address,
                context=context,
                # The call's profile data wins over what is stored, for this message only.
                profile={**(attributes or {}), **(profile_data or {})},
                attempts=attempts,
                unset_consent=policies.get(workspace_id),
                suppression=suppressed.get((workspace_id, channel_name, address))
                if suppressed and address
                else None,
                profile_id=profile_id,
                timezone=timezone,
                rule_set_ids=rule_set_ids,
                # SQLite's driver reads a boolean as 0 or 1.
                is_proof=bool(is_proof),
            )
        )
    return claimed


def record(db: Database, outcomes: Outcomes, now: datetime) -> None:
    """Writes a batch's outcomes, one UPDATE per kind, touching only rows still claimed."""
    param = sa.bindparam
    updates: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
        (
            # A reason says why a message is not sent (yet): one sent has none.
            {
                "state": MessageState.SENT.value,
                "provider_message_id": param("p"),
                "sent_at": now,
                "reason": None,
            },
            [{"message_id": i, "p": p} for i, p in outcomes.sent],
        ),
        (
            {
                "state": MessageState.QUEUED.value,
                "due_at": param("due"),
                "reason": param("why"),
                "last_error": param("error"),
            },
            [{"message_id": i, "due": d, "why": r, "error": e} for i, d, r, e in outcomes.retry],
        ),
        (
            {"state": MessageState.FAILED.value, "reason": param("why"), "last_error": param("e")},
            [{"message_id": i, "why": r, "e": e} for i, r, e in outcomes.failed],
        ),
        (
            {
                "state": MessageState.EXCLUDED.value,
                "reason": param("why"),
                "last_error": param("detail"),
            },
            [{"message_id": i, "why": r, "detail": d} for i, r, d in outcomes.excluded],
        ),
        (
            # Held back by the rate limit: the attempt the claim counted is given back.
            {
                "state": MessageState.QUEUED.value,
                "due_at": param("due"),
                "attempts": messages.c.attempts - 1,
            },
            [{"message_id": i, "due": d} for i, d in outcomes.postponed],
        ),
        (
            # Held by quiet hours: deferred, the attempt given back.
            {
                "state": MessageState.DEFERRED.value,
                "due_at": param("due"),
                "reason": QUIET_HOURS_HELD,
                "attempts": messages.c.attempts - 1,
            },
            [{"message_id": i, "due": d} for i, d in outcomes.held],
        ),
    ]
    with db.write() as conn:
        expected = applied = 0
        for values, rows in updates:
            if rows:
                result = conn.execute(
                    messages.update()
                    .where(
                        messages.c.id == param("message_id"),
                        messages.c.state == MessageState.SENDING.value,
                    )
                    .values(**values, lease_until=None, updated_at=now),
                    rows,
                )
                expected += len(rows)
                applied += result.rowcount
        # Counters last, in key order: a claim may hold a lock on one of these messages' rows
        # (SKIP LOCKED's recheck) while it waits for counters, so a record must not hold
        # counters while it waits for messages. Report counters come after frequency ones.
        counters = counters_for(conn)
        for key in sorted(outcomes.uncounted):
            counters.remove(key)
        ids = announced_ids(outcomes)
        if ids:
            refs = _refs_of(conn, ids)
            written = None
            if applied != expected:
                written = written_ids(
                    outcomes,
                    conn.execute(
                        sa.select(messages.c.id, messages.c.state, messages.c.updated_at).where(
                            messages.c.id.in_(ids)
                        )
                    ),
                    now,
                )
            announce(conn, outcome_events(outcomes, refs, now, written))


# A recorded message's columns its events need, then its execution's kind.
REF_COLUMNS = (
    "id",
    "workspace_id",
    "campaign_id",
    "version_id",
    "execution_id",
    "channel",
    "is_proof",
)


def announced_ids(outcomes: Outcomes) -> list[str]:
    """The messages of a batch whose outcome is an event (postponed and held ones wait on)."""
    return [
        *(i for i, _ in outcomes.sent),
        *(i for i, *_ in outcomes.retry),
        *(i for i, *_ in outcomes.failed),
        *(i for i, *_ in outcomes.excluded),
    ]


def _groups(outcomes: Outcomes) -> tuple[tuple[EventKind, str, list[tuple[str, str | None]]], ...]:
    """(event kind, the state it leaves the message in, [(message id, reason)])."""
    return (
        (EventKind.SENT, MessageState.SENT.value, [(i, None) for i, _ in outcomes.sent]),
        (EventKind.RETRIED, MessageState.QUEUED.value, [(i, r) for i, _, r, _ in outcomes.retry]),
        (EventKind.FAILED, MessageState.FAILED.value, [(i, r) for i, r, _ in outcomes.failed]),
        (
            EventKind.EXCLUDED,
            MessageState.EXCLUDED.value,
            [(i, r) for i, r, _ in outcomes.excluded],
        ),
    )


def written_ids(outcomes: Outcomes, rows: Iterable[Sequence[Any]], stamp: Any) -> set[str]:
    """When a record's UPDATEs touched fewer rows than they were given (a lease expired and the
    message went back to the queue, or to another worker), the messages this record wrote:
    `rows` are (id, state, updated_at) after the UPDATEs; those in their outcome's state whose
    updated_at is this record's (`stamp`, as the rows hold it) are this record's."""
    target = {
        message_id: state for _, state, members in _groups(outcomes) for message_id, _ in members
    }
    return {
        message_id
        for message_id, state, updated_at in rows
        if target.get(message_id) == state and updated_at == stamp
    }


def outcome_events(
    outcomes: Outcomes,
    refs: Mapping[str, Sequence[Any]],
    now: datetime,
    written: set[str] | None,
) -> list[MessageEvent]:
    """The events of a recorded batch. `refs`: the messages' REF_COLUMNS after the id, then
    their execution's kind; `written`: the messages this record wrote (written_ids), None when
    it wrote all it was given (the common case, told by the UPDATEs' row counts)."""
    events = []
    sending = MessageState.SENDING.value
    for kind, _, members in _groups(outcomes):
        for message_id, reason in members:
            ref = refs.get(message_id)
            if ref is None or (written is not None and message_id not in written):
                continue
            (
                workspace_id,
                campaign_id,
                version_id,
                execution_id,
                channel,
                is_proof,
                execution_kind,
            ) = ref
            events.append(
                MessageEvent(
                    kind=kind,
                    message_id=message_id,
                    workspace_id=workspace_id,
                    campaign_id=campaign_id,
                    version_id=version_id,
                    execution_id=execution_id,
                    channel=channel,
                    occurred_at=now,
                    reason=reason,
                    previous_state=sending,
                    is_proof=bool(is_proof),
                    audience=execution_kind == "audience",
                )
            )
    return events
