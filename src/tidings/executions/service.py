"""Triggers: validate, deduplicate, and commit an execution with its messages before the 202."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from email_validator import EmailNotValidError

from tidings.campaigns.models import campaign_versions
from tidings.campaigns.state import TRIGGERABLE, CampaignStatus
from tidings.content.schemas import MAX_CONTEXT_BYTES
from tidings.db import Database
from tidings.delivery.state import TERMINAL, MessageState
from tidings.errors import Conflict, ErrorCollector, InvalidInput, NotFound, TidingsError
from tidings.events import EventKind, MessageEvent, announce
from tidings.executions.models import executions, idempotency_keys, messages
from tidings.executions.schemas import ExecutionCreate, Recipient
from tidings.executions.state import ExecutionKind, ExecutionStatus, check_execution_move
from tidings.executions.store import SqlAlchemyStore, TriggerStore
from tidings.ids import new_id
from tidings.json_data import (
    MAX_CONTEXT_DEPTH,
    nesting_depth,
    plainly_storable,
    text_nests_within,
    unstorable,
)
from tidings.pagination import keyset_page
from tidings.profiles import service as profiles
from tidings.profiles.models import profile_identities
from tidings.profiles.models import profiles as profiles_table
from tidings.profiles.schemas import MAX_ATTRIBUTE_DEPTH
from tidings.vocabulary import EMAIL_NAMESPACE, PHONE_NAMESPACE, Category, Channel

IDEMPOTENCY_TTL = timedelta(hours=24)
MAX_SERIALIZED_GROWTH = 5
# A body with no more brackets than this nests within every document's depth limit.
_SHALLOWEST_BOUND = min(MAX_CONTEXT_DEPTH, MAX_ATTRIBUTE_DEPTH)
# The identity namespace whose value is the address on each channel.
ADDRESS_NAMESPACES = {Channel.EMAIL: EMAIL_NAMESPACE, Channel.SMS: PHONE_NAMESPACE}


@dataclass(frozen=True, slots=True)
class Triggered:
    response: dict[str, Any]
    # True when an earlier request with the same idempotency key produced this response.
    replayed: bool
    # True when this call queued messages that are due now (the worker may wake for them).
    due_now: bool = False


@dataclass(frozen=True, slots=True)
class TriggerJob:
    """A trigger request checked for everything that needs no database."""

    workspace_id: str
    body: ExecutionCreate
    key: str | None
    digest: str
    now: datetime
    # Came through AJO's high-throughput endpoint, which serves high-throughput campaigns only.
    high_throughput: bool = False


class _InFlight:
    """Idempotency keys being processed in this process: a concurrent duplicate gets a 409.

    Across processes, PostgreSQL's advisory lock does the same (see _lock_key); SQLite has one
    writer, so there a duplicate waits and then finds the stored response.
    """

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, job: TriggerJob) -> Iterator[None]:
        if job.key is None:
            yield
            return
        entry = (job.workspace_id, job.key)
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


# Why the messages of a cancelled execution were not sent (their reason, and their events').
CANCELLED_REASON = "execution_cancelled"


def request_hash(body: ExecutionCreate, high_throughput: bool = False) -> str:
    """SHA-256 of the body without its request_id, keys sorted: a resent request matches even
    when its client orders keys differently. The endpoint counts too: a key first used on
    AJO's unitary API is not replayed by its high-throughput one."""
    document = body.model_dump(mode="json", exclude={"request_id"})
    try:
        canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        # An integer past 64 bits, which orjson cannot write (the body takes it, as JSON
        # does): the standard library can, the same way for every resend of that body.
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    if high_throughput:
        canonical += b"|high-throughput"
    return hashlib.sha256(canonical).hexdigest()


def prepare(
    workspace_id: str,
    body: ExecutionCreate,
    now: datetime,
    idempotency_key: str | None = None,
    json_text: bytes | None = None,
    *,
    high_throughput: bool = False,
) -> TriggerJob:
    """Checks what needs no database; raises InvalidInput naming the fields.

    `json_text`, the body as received, lets the storability checks skip their walk over the
    contexts when the text shows there is nothing to find.
    """
    if idempotency_key and body.request_id and idempotency_key != body.request_id:
        raise InvalidInput.on("request_id", "differs from the Idempotency-Key header")
    _check_payload(
        body,
        documents_checked=_plainly_fine(json_text),
        depth_checked=json_text is not None and text_nests_within(json_text, _SHALLOWEST_BOUND),
    )
    key = body.request_id or idempotency_key
    return TriggerJob(
        workspace_id=workspace_id,
        body=body,
        key=key,
        digest=request_hash(body, high_throughput) if key is not None else "",
        now=now,
        high_throughput=high_throughput,
    )


def trigger(
    db: Database,
    workspace_id: str,
    body: ExecutionCreate,
    now: datetime,
    idempotency_key: str | None = None,
) -> Triggered:
    """Accepts an execution in a transaction of its own: on return, it is committed.

    The API goes through executions.acceptor instead, which commits concurrent requests
    together; both apply `accept_batch`.
    """
    job = prepare(workspace_id, body, now, idempotency_key)
    with IN_FLIGHT.hold(job), db.write() as conn:
        (outcome,) = accept_batch(SqlAlchemyStore(conn), [job])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _plainly_fine(json_text: bytes | None) -> bool:
    """Whether the body's text alone shows its contexts and profiles are storable and small
    enough: no context re-serialized from a body this small can exceed the limit (a number
    grows at most 4.5 times, as 9e15 becomes 9000000000000000.0; nothing else grows), and
    pydantic's parser refuses nesting deeper than the serializer's limit."""
    return (
        json_text is not None
        and len(json_text) * MAX_SERIALIZED_GROWTH <= MAX_CONTEXT_BYTES
        and plainly_storable(json_text)
    )


def _check_payload(
    body: ExecutionCreate, documents_checked: bool = False, depth_checked: bool = False
) -> None:
    errors = ErrorCollector()
    if body.recipients is not None and body.audience_id is not None:
        errors.add("audience_id", "is for audience executions, which take no recipients")
    # A recipient's profile becomes a new profile's attributes, so it nests no deeper than the
    # profile API allows.
    documents: list[tuple[str, dict[str, Any], int | None, int]] = [
        ("context", body.context, MAX_CONTEXT_BYTES, MAX_CONTEXT_DEPTH)
    ]
    for index, recipient in enumerate(body.recipients or []):
        if recipient.context:
            documents.append(
                (
                    f"recipients.{index}.context",
                    recipient.context,
                    MAX_CONTEXT_BYTES,
                    MAX_CONTEXT_DEPTH,
                )
            )
        if recipient.profile:
            documents.append(
                (f"recipients.{index}.profile", recipient.profile, None, MAX_ATTRIBUTE_DEPTH)
            )
    if not depth_checked:
        for field, document, _, max_depth in documents:
            if nesting_depth(document, max_depth + 1) > max_depth:
                errors.add(field, f"nests deeper than {max_depth} levels")
    if documents_checked or errors.errors:
        errors.raise_if_any("the execution request is invalid")
        return
    for field, document, max_bytes, _ in documents:
        problem = unstorable(document, field)
        if problem is not None:
            errors.errors.append(problem)
            continue
        try:
            size = len(orjson.dumps(document))
        except orjson.JSONEncodeError:
            errors.add(field, "nests too deeply")
            continue
        if max_bytes is not None and size > max_bytes:
            errors.add(field, f"is larger than {max_bytes} bytes as JSON")
    errors.raise_if_any("the execution request is invalid")


# ---------------------------------------------------------------- accepting, in batches
#
# A batch is the requests one transaction commits together. Each request's checks against
# the database end in its own outcome (an error for that caller alone); every read is one
# statement for the whole batch, and every insert one executemany.

Outcome = Triggered | TidingsError
# (workspace_id, namespace, identity value)
_IdentityKey = tuple[str, str, str]


@dataclass(slots=True)
class _Resolved:
    namespace: str
    value: str
    address: str | None
    recipient: Recipient
    index: int


@dataclass(slots=True)
class _Plan:
    job: TriggerJob
    campaign: Mapping[str, Any]
    channel: Channel
    recipients: list[_Resolved]
    # Set for an audience execution (no recipients in the call).
    audience_id: str | None = None


def accept_batch(store: TriggerStore, jobs: Sequence[TriggerJob]) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(jobs)
    _replay_or_lock(store, jobs, outcomes)
    wanted = {
        (job.workspace_id, job.body.campaign_id)
        for job, outcome in zip(jobs, outcomes, strict=True)
        if outcome is None
    }
    live = _live_campaigns(store, wanted)
    plans: dict[int, _Plan] = {}
    for index, job in enumerate(jobs):
        if outcomes[index] is None:
            try:
                plans[index] = _plan(job, live.get((job.workspace_id, job.body.campaign_id)))
            except TidingsError as exc:
                outcomes[index] = exc
    for index in _missing_audiences(store, plans):
        outcomes[index] = InvalidInput.on(
            "audience_id", "no such audience in this workspace (the call's or the campaign's)"
        )
        del plans[index]
    profile_ids = _profile_ids(store, plans.values())
    created: dict[_IdentityKey, dict[str, Any]] = {}
    for index, plan in list(plans.items()):
        try:
            _create_unknown(plan, profile_ids, created)
        except TidingsError as exc:
            outcomes[index] = exc
            del plans[index]
    addresses = _stored_addresses(store, plans.values(), profile_ids)
    _address_stored_push_tokens(store, plans.values(), profile_ids)

    execution_rows: list[dict[str, Any]] = []
    message_rows: list[dict[str, Any]] = []
    key_rows: list[dict[str, Any]] = []
    for index, plan in plans.items():
        job = plan.job
        execution_id = new_id()
        due_at = max(job.body.execute_at or job.now, job.now)
        audience = plan.audience_id is not None
        status = ExecutionStatus.SCHEDULED if audience else ExecutionStatus.ACCEPTED
        execution_rows.append(
            {
                "id": execution_id,
                "workspace_id": job.workspace_id,
                "campaign_id": plan.campaign["id"],
                "version_id": plan.campaign["version_id"],
                "kind": (ExecutionKind.AUDIENCE if audience else ExecutionKind.UNITARY).value,
                "status": status.value,
                "request_id": job.key,
                "recipient_count": len(plan.recipients),
                "execute_at": due_at if audience else job.body.execute_at,
                "created_at": job.now,
                "audience_id": plan.audience_id,
                "context": job.body.context if audience else None,
                "fanout_cursor": None,
                "fired_at": None,
                "finished_at": None,
                "failure": None,
            }
        )
        for resolved in plan.recipients:
            profile_id = (
                None
                if resolved.recipient.external
                else profile_ids[(job.workspace_id, resolved.namespace, resolved.value)]
            )
            message_rows.append(
                _message_row(plan, execution_id, resolved, profile_id, addresses, due_at)
            )
        response = {
            "execution_id": execution_id,
            "request_id": job.key,
            "accepted": len(plan.recipients),
            "status": status.value,
        }
        if job.key is not None:
            key_rows.append(
                {
                    "workspace_id": job.workspace_id,
                    "key": job.key,
                    "request_hash": job.digest,
                    "response": response,
                    "created_at": job.now,
                    "expires_at": job.now + IDEMPOTENCY_TTL,
                }
            )
        outcomes[index] = Triggered(response, replayed=False, due_now=due_at <= job.now)

    if created:
        store.insert(profiles_table, [row["profile"] for row in created.values()])
        store.insert(profile_identities, [row["identity"] for row in created.values()])
    store.insert(executions, execution_rows)
    store.insert(messages, message_rows)
    store.announce(
        [
            MessageEvent(
                kind=EventKind.TARGETED,
                message_id=row["id"],
                workspace_id=row["workspace_id"],
                campaign_id=row["campaign_id"],
                version_id=row["version_id"],
                execution_id=row["execution_id"],
                channel=row["channel"],
                occurred_at=row["created_at"],
                # Messages created here are a unitary execution's (an audience's are queued
                # by the fan-out).
                audience=False,
            )
            for row in message_rows
        ]
    )
    if key_rows:
        for workspace_id, keys in _grouped((r["workspace_id"], r["key"]) for r in key_rows):
            # An expired row of the same key may still be there: the new answer replaces it.
            store.forget_keys(workspace_id, keys)
        store.insert(idempotency_keys, key_rows)
    return [outcome for outcome in outcomes if outcome is not None]


def _grouped(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = {}
    for group, value in pairs:
        groups.setdefault(group, []).append(value)
    return list(groups.items())


def _replay_or_lock(
    store: TriggerStore, jobs: Sequence[TriggerJob], outcomes: list[Outcome | None]
) -> None:
    """Answers requests whose idempotency key has a stored response; locks the others' keys."""
    keyed = [(index, job) for index, job in enumerate(jobs) if job.key is not None]
    if not keyed:
        return
    for index, job in keyed:
        if not store.lock_key(job.workspace_id, job.key or ""):
            outcomes[index] = Conflict(
                "a request with this idempotency key is in progress; retry later"
            )
    stored: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    now = min(job.now for _, job in keyed)
    for workspace_id, keys in _grouped((job.workspace_id, job.key or "") for _, job in keyed):
        for key, digest, response in store.stored_responses(workspace_id, keys, now):
            stored[(workspace_id, key)] = (digest, response)
    for index, job in keyed:
        hit = stored.get((job.workspace_id, job.key or ""))
        if outcomes[index] is not None or hit is None:
            continue
        digest, response = hit
        if digest != job.digest:
            outcomes[index] = InvalidInput.on(
                "request_id", "was used before with a different body; use a new idempotency key"
            )
        else:
            outcomes[index] = Triggered(response, replayed=True)


class _LiveVersions:
    """What triggers need of live versions (audience settings, schedule window), by version id.

    A version's row never changes once it has gone live (edits open a new draft version), so
    it is read once per process; which version is live, and whether the campaign still is, is
    read from the campaign row in every batch.
    """

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._versions: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, store: TriggerStore, version_ids: set[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            found = {vid: self._versions[vid] for vid in version_ids if vid in self._versions}
        missing = version_ids - found.keys()
        if missing:
            loaded = {row["id"]: row for row in store.live_versions(list(missing))}
            with self._lock:
                if len(self._versions) + len(loaded) > self.MAX_ENTRIES:
                    self._versions.clear()
                self._versions.update(loaded)
            found.update(loaded)
        return found


LIVE_VERSIONS = _LiveVersions()


def _live_campaigns(
    store: TriggerStore, wanted: set[tuple[str, str]]
) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The campaigns the batch names, each with the version live now."""
    if not wanted:
        return {}
    rows = store.campaign_states(list({campaign_id for _, campaign_id in wanted}))
    states = {pair: row for row in rows if (pair := (row["workspace_id"], row["id"])) in wanted}
    versions = LIVE_VERSIONS.get(
        store, {row["live_version_id"] for row in states.values() if row["live_version_id"]}
    )
    live: dict[tuple[str, str], Mapping[str, Any]] = {}
    for pair, row in states.items():
        version = versions.get(row["live_version_id"] or "")
        live[pair] = {
            **row,
            # A campaign that never went live has no live version: `status` refuses it.
            "version_id": row["live_version_id"],
            "audience": version["audience"] if version else {},
            "start_at": version["start_at"] if version else None,
            "end_at": version["end_at"] if version else None,
            "channel_configuration_id": version["channel_configuration_id"] if version else None,
        }
    return live


def _plan(job: TriggerJob, campaign: Mapping[str, Any] | None) -> _Plan:
    if campaign is None:
        raise InvalidInput.on("campaign_id", "no such campaign in this workspace")
    status = CampaignStatus(campaign["status"])
    if status not in TRIGGERABLE:
        raise InvalidInput.on("campaign_id", f"the campaign is {status}, not live")
    if campaign["start_at"] and job.now < campaign["start_at"]:
        raise InvalidInput.on("campaign_id", "the campaign's schedule has not started")
    if campaign["end_at"] and job.now >= campaign["end_at"]:
        raise InvalidInput.on("campaign_id", "the campaign's schedule has ended")
    channel = Channel(campaign["channel"])
    _check_throughput_mode(job, campaign)
    if job.body.recipients is None:
        return _Plan(job, campaign, channel, [], _audience_of(job, campaign))
    namespace = campaign["audience"]["identity_namespace"]
    return _Plan(job, campaign, channel, _resolve_recipients(job.body, channel, namespace))


def _check_throughput_mode(job: TriggerJob, campaign: Mapping[str, Any]) -> None:
    """High-throughput campaigns personalize from the call alone (review holds their content
    to it): they take external recipients only, and only they take the high-throughput API."""
    high_throughput = bool(campaign["audience"].get("high_throughput"))
    if job.high_throughput and not high_throughput:
        raise InvalidInput.on(
            "campaign_id", "is not a high-throughput campaign; use the unitary API"
        )
    if high_throughput:
        errors = ErrorCollector()
        for index, recipient in enumerate(job.body.recipients or []):
            if not recipient.external:
                errors.add(
                    f"recipients.{index}.external",
                    "a high-throughput campaign takes external recipients only",
                )
        errors.raise_if_any("some recipients are not external")


def _audience_of(job: TriggerJob, campaign: Mapping[str, Any]) -> str:
    """The audience an audience execution sends to, checked against the campaign."""
    if Category(campaign["category"]) is not Category.MARKETING:
        raise InvalidInput.on(
            "recipients",
            "transactional campaigns send to the recipients of the call; "
            "audience executions are for marketing campaigns",
        )
    audience_id = job.body.audience_id or campaign["audience"].get("audience_id")
    if not audience_id:
        raise InvalidInput.on(
            "audience_id", "the campaign has no audience: give audience_id or recipients"
        )
    execute_at = job.body.execute_at
    if execute_at is not None and campaign["end_at"] and execute_at >= campaign["end_at"]:
        raise InvalidInput.on("execute_at", "is after the end of the campaign's schedule")
    return str(audience_id)


def _missing_audiences(store: TriggerStore, plans: Mapping[int, _Plan]) -> list[int]:
    """The requests of the batch whose audience does not exist in their workspace."""
    wanted = {plan.audience_id for plan in plans.values() if plan.audience_id is not None}
    if not wanted:
        return []
    found = store.existing_audiences(list(wanted))
    return [
        index
        for index, plan in plans.items()
        if plan.audience_id is not None and (plan.job.workspace_id, plan.audience_id) not in found
    ]


def _stored(plan: _Plan) -> list[_Resolved]:
    """The recipients that have (or get) a stored profile."""
    return [r for r in plan.recipients if not r.recipient.external]


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
        resolved.append(_Resolved(namespace, value, address, recipient, index))
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
            return profiles.normalize_address(data.email)
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


def _profile_ids(store: TriggerStore, plans: Iterable[_Plan]) -> dict[_IdentityKey, str]:
    """Stored profiles by identity, for every recipient of the batch: a query per namespace."""
    wanted: dict[tuple[str, str], set[str]] = {}
    for plan in plans:
        for recipient in _stored(plan):
            wanted.setdefault((plan.job.workspace_id, recipient.namespace), set()).add(
                recipient.value
            )
    found: dict[_IdentityKey, str] = {}
    for (workspace_id, namespace), values in wanted.items():
        for value, profile_id in store.profile_ids(workspace_id, namespace, list(values)):
            found[(workspace_id, namespace, value)] = profile_id
    return found


def _create_unknown(
    plan: _Plan,
    profile_ids: dict[_IdentityKey, str],
    created: dict[_IdentityKey, dict[str, Any]],
) -> None:
    """Plans a profile for each unknown recipient, or refuses them all when the campaign does
    not create profiles. Two requests of one batch naming the same new identity share it."""
    workspace_id = plan.job.workspace_id
    unknown = [r for r in _stored(plan) if (workspace_id, r.namespace, r.value) not in profile_ids]
    if not unknown:
        return
    if not plan.campaign["audience"].get("create_new_profiles"):
        errors = ErrorCollector()
        for recipient in unknown:
            errors.add(
                f"recipients.{recipient.index}.identity.id",
                "no profile has this identity, and the campaign does not create profiles",
            )
        errors.raise_if_any("some recipients are unknown")
    now = plan.job.now
    for recipient in unknown:
        identity = (workspace_id, recipient.namespace, recipient.value)
        profile_id = new_id()
        profile_ids[identity] = profile_id
        created[identity] = {
            "profile": {
                "id": profile_id,
                "workspace_id": workspace_id,
                "attributes": recipient.recipient.profile or {},
                "consent": {},
                "timezone": None,
                "locale": None,
                "created_at": now,
                "updated_at": now,
            },
            "identity": {
                "workspace_id": workspace_id,
                "namespace": recipient.namespace,
                "value": recipient.value,
                "profile_id": profile_id,
            },
        }


def _stored_addresses(
    store: TriggerStore, plans: Iterable[_Plan], profile_ids: Mapping[_IdentityKey, str]
) -> dict[str, str]:
    """Addresses from the profiles' identities, for recipients the call gave none for."""
    wanted: dict[str, list[str]] = {}
    for plan in plans:
        namespace = ADDRESS_NAMESPACES.get(plan.channel)
        if namespace is None:
            continue
        for recipient in _stored(plan):
            if recipient.address is None:
                identity = (plan.job.workspace_id, recipient.namespace, recipient.value)
                wanted.setdefault(namespace, []).append(profile_ids[identity])
    found: dict[str, str] = {}
    for namespace, ids in wanted.items():
        found.update(store.addresses(ids, namespace))
    return found


def _address_stored_push_tokens(
    store: TriggerStore, plans: Iterable[_Plan], profile_ids: Mapping[_IdentityKey, str]
) -> None:
    """Addresses push recipients the call gave no token for to their profile's newest token
    for the app of the campaign's configuration (of any app when it names none)."""
    waiting: list[tuple[_Plan, list[_Resolved]]] = []
    for plan in plans:
        if plan.channel is Channel.PUSH:
            untokened = [r for r in _stored(plan) if r.address is None]
            if untokened:
                waiting.append((plan, untokened))
    if not waiting:
        return
    configurations = sorted(
        {cid for plan, _ in waiting if (cid := plan.campaign["channel_configuration_id"])}
    )
    app_ids = store.push_app_ids(configurations) if configurations else {}
    wanted = {
        profile_ids[(plan.job.workspace_id, r.namespace, r.value)]
        for plan, untokened in waiting
        for r in untokened
    }
    newest: dict[tuple[str, str | None], str] = {}
    for profile_id, app_id, token in store.push_tokens(sorted(wanted)):
        newest.setdefault((profile_id, app_id), token)
        newest.setdefault((profile_id, None), token)
    for plan, untokened in waiting:
        app = app_ids.get(plan.campaign["channel_configuration_id"] or "")
        for r in untokened:
            profile_id = profile_ids[(plan.job.workspace_id, r.namespace, r.value)]
            r.address = newest.get((profile_id, app))


def _message_row(
    plan: _Plan,
    execution_id: str,
    resolved: _Resolved,
    profile_id: str | None,
    addresses: Mapping[str, str],
    due_at: datetime,
) -> dict[str, Any]:
    job = plan.job
    return {
        "id": new_id(),
        "workspace_id": job.workspace_id,
        "execution_id": execution_id,
        "campaign_id": plan.campaign["id"],
        "version_id": plan.campaign["version_id"],
        "channel": plan.channel.value,
        "state": MessageState.QUEUED.value,
        "recipient_namespace": resolved.namespace,
        "recipient_id": resolved.value,
        "profile_id": profile_id,
        "address": resolved.address or addresses.get(profile_id or ""),
        "context": {**job.body.context, **(resolved.recipient.context or {})},
        "profile_data": resolved.recipient.profile,
        "due_at": due_at,
        "attempts": 0,
        "lease_until": None,
        "reason": None,
        "last_error": None,
        "provider_message_id": None,
        "created_at": job.now,
        "updated_at": job.now,
        "sent_at": None,
    }


# ---------------------------------------------------------------- reading


def _load_execution(
    conn: sa.Connection, workspace_id: str, execution_id: str, *, for_update: bool = False
) -> dict[str, Any]:
    query = (
        sa.select(executions, campaign_versions.c.number.label("version"))
        .join(campaign_versions, campaign_versions.c.id == executions.c.version_id)
        .where(executions.c.id == execution_id, executions.c.workspace_id == workspace_id)
    )
    if for_update:
        # A fan-out page holds this row while it queues messages: wait for it, then see
        # what it left (PostgreSQL; SQLite's single writer serializes them anyway).
        query = query.with_for_update(of=executions)
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound("no such execution in this workspace")
    return dict(row)


def _counts(conn: sa.Connection, execution_id: str) -> dict[str, int]:
    return {
        row.state: row.total
        for row in conn.execute(
            sa.select(messages.c.state, sa.func.count().label("total"))
            .where(messages.c.execution_id == execution_id)
            .group_by(messages.c.state)
        )
    }


def reported_status(status: ExecutionStatus, counts: Mapping[str, int]) -> str:
    """What a caller sees: the stored status, or for an accepted execution whether every
    message has reached a final state."""
    if status is ExecutionStatus.FANNING_OUT:
        return "running"
    if status is not ExecutionStatus.ACCEPTED:
        return status.value
    finished = all(MessageState(state) in TERMINAL for state in counts)
    return "completed" if finished else "running"


def _view(execution: Mapping[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": execution["id"],
        "campaign_id": execution["campaign_id"],
        "version": execution["version"],
        "kind": execution["kind"],
        "status": reported_status(ExecutionStatus(execution["status"]), counts),
        "request_id": execution["request_id"],
        "audience_id": execution["audience_id"],
        "recipients": execution["recipient_count"],
        "counts": counts,
        "execute_at": execution["execute_at"],
        "fired_at": execution["fired_at"],
        "finished_at": execution["finished_at"],
        "failure": execution["failure"],
        "created_at": execution["created_at"],
    }


def get(db: Database, workspace_id: str, execution_id: str) -> dict[str, Any]:
    with db.read() as conn:
        execution = _load_execution(conn, workspace_id, execution_id)
        return _view(execution, _counts(conn, execution_id))


def cancel(db: Database, workspace_id: str, execution_id: str, now: datetime) -> dict[str, Any]:
    """Cancels an execution that has not fired: a scheduled audience execution, or a unitary
    one whose messages all still wait for their execute_at. Conflict once anything was sent."""
    with db.write() as conn:
        execution = _load_execution(conn, workspace_id, execution_id, for_update=True)
        status = ExecutionStatus(execution["status"])
        if status is ExecutionStatus.CANCELLED:
            return _view(execution, _counts(conn, execution_id))
        fired = (
            status is not ExecutionStatus.SCHEDULED
            if execution["kind"] == ExecutionKind.AUDIENCE
            else execution["execute_at"] is None or execution["execute_at"] <= now
        )
        if fired:
            raise Conflict("the execution has already fired; only a scheduled one can be cancelled")
        check_execution_move(status, ExecutionStatus.CANCELLED)
        # Only queued messages can be cancelled; claiming is what fires them, and a claim
        # takes the same write lock (or row locks), so none moves while this runs.
        pending = [MessageState.QUEUED.value, MessageState.DEFERRED.value]
        cancelled = conn.execute(
            sa.select(
                messages.c.id,
                messages.c.campaign_id,
                messages.c.version_id,
                messages.c.channel,
                messages.c.state,
                messages.c.is_proof,
            ).where(messages.c.execution_id == execution_id, messages.c.state.in_(pending))
        ).all()
        conn.execute(
            messages.update()
            .where(messages.c.execution_id == execution_id, messages.c.state.in_(pending))
            .values(state=MessageState.CANCELLED.value, reason=CANCELLED_REASON, updated_at=now)
        )
        announce(
            conn,
            [
                MessageEvent(
                    kind=EventKind.CANCELLED,
                    message_id=row.id,
                    workspace_id=workspace_id,
                    campaign_id=row.campaign_id,
                    version_id=row.version_id,
                    execution_id=execution_id,
                    channel=row.channel,
                    occurred_at=now,
                    reason=CANCELLED_REASON,
                    previous_state=row.state,
                    is_proof=bool(row.is_proof),
                    audience=execution["kind"] == ExecutionKind.AUDIENCE,
                )
                for row in cancelled
            ],
        )
        conn.execute(
            executions.update()
            .where(executions.c.id == execution_id, executions.c.status == status.value)
            .values(status=ExecutionStatus.CANCELLED.value, finished_at=now)
        )
        execution = _load_execution(conn, workspace_id, execution_id)
        return _view(execution, _counts(conn, execution_id))


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


def campaign_messages(
    db: Database, workspace_id: str, campaign_id: str, limit: int
) -> tuple[dict[str, int], dict[str, int], list[dict[str, Any]]]:
    """For the console's campaign page: message counts by state and by reason (proofs left
    out), and the newest `limit` messages, proofs included and marked."""
    # Through the campaign's executions: messages are indexed by execution, not by campaign.
    of_campaign = sa.select(executions.c.id).where(
        executions.c.workspace_id == workspace_id, executions.c.campaign_id == campaign_id
    )
    scope = messages.c.execution_id.in_(of_campaign)
    counted = scope & messages.c.is_proof.is_(False)
    with db.read() as conn:
        by_state = {
            row[0]: int(row[1])
            for row in conn.execute(
                sa.select(messages.c.state, sa.func.count())
                .where(counted)
                .group_by(messages.c.state)
            )
        }
        by_reason = {
            row[0]: int(row[1])
            for row in conn.execute(
                sa.select(messages.c.reason, sa.func.count())
                .where(counted & messages.c.reason.is_not(None))
                .group_by(messages.c.reason)
            )
        }
        latest = conn.execute(
            sa.select(
                messages.c.id,
                messages.c.execution_id,
                messages.c.state,
                messages.c.recipient_namespace,
                messages.c.recipient_id,
                messages.c.reason,
                messages.c.attempts,
                messages.c.is_proof,
                messages.c.created_at,
                messages.c.updated_at,
            )
            .where(scope)
            .order_by(messages.c.created_at.desc(), messages.c.id.desc())
            .limit(limit)
        ).mappings()
        return by_state, by_reason, [dict(row) for row in latest]
