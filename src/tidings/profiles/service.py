"""Profiles: upsert by identity, read, push tokens, merge, erasure (right to be forgotten)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import available_timezones

import sqlalchemy as sa
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from sqlalchemy.dialects import postgresql, sqlite

from tidings.audiences.models import audience_members
from tidings.clock import utcnow
from tidings.db import Database
from tidings.db.upsert import insert_ignoring_conflicts
from tidings.delivery.state import MessageState
from tidings.errors import Conflict, ErrorCollector, InvalidInput, NotFound
from tidings.events import EventKind, MessageEvent, announce
from tidings.executions.models import messages
from tidings.ids import new_id
from tidings.json_data import nesting_depth, unstorable
from tidings.profiles import consent_history
from tidings.profiles.models import (
    profile_attribute_paths,
    profile_erasures,
    profile_identities,
    profile_merges,
    profile_push_tokens,
    profiles,
)
from tidings.profiles.schemas import (
    MAX_ATTRIBUTE_BYTES,
    MAX_ATTRIBUTE_DEPTH,
    ConsentStatus,
    Identity,
    ProfileUpsert,
    PushTokenIn,
)
from tidings.rules import counters
from tidings.suppressions.models import suppression_soft_bounces
from tidings.suppressions.schemas import SuppressionChannel
from tidings.vocabulary import E164_PATTERN, EMAIL_NAMESPACE, PHONE_NAMESPACE, Channel
from tidings.webhooks import service as webhooks

MAX_TRACKED_PATHS = 1000
MAX_PATH_CHARS = 512
# Values per IN (...) list: well under SQLite's limit on bound parameters.
IN_CHUNK = 500
IDENTITIES_OF_SEVERAL_PROFILES = "these identities belong to different profiles; merge them first"
CONCURRENT_CHANGE = "a concurrent request changed these identities; retry"
PHONE_SEPARATORS = re.compile(r"[\s().\-]")
_TIMEZONES = frozenset(available_timezones())


# Plain ASCII addresses (almost all of them), checked by the rules email_validator applies to
# such addresses: dot-atoms, labels of 1-63 letters, digits and inner hyphens, a TLD that
# starts and ends with a letter. Anything else (Unicode, punycode, quoting, special-use
# names) goes through email_validator itself; a test holds the two to the same answers.
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_EMAIL = re.compile(
    rf"{_ATEXT}(?:\.{_ATEXT})*@(?:{_LABEL}\.)+[a-z](?:[a-z0-9-]{{0,61}}[a-z])?", re.ASCII
)
_SPECIAL_USE = tuple(SPECIAL_USE_DOMAIN_NAMES)


def _plain_email(value: str) -> str | None:
    """email_validator's normalized form (the domain lower-cased) of a plain address, or None
    when the address is not plain (which does not make it invalid)."""
    if len(value) > 254 or not _PLAIN_EMAIL.fullmatch(value.lower()):
        return None
    local, _, domain = value.partition("@")
    domain = domain.lower()
    if len(local) > 64 or "--" in domain:
        return None
    if any(domain == name or domain.endswith("." + name) for name in _SPECIAL_USE):
        return None
    return f"{local}@{domain}"


def normalize_address(value: str) -> str:
    """An email address as email_validator normalizes it; raises EmailNotValidError."""
    return _plain_email(value) or validate_email(value, check_deliverability=False).normalized


def normalize_email(value: str) -> str:
    """An email identity: the normalized address, lower-cased."""
    return normalize_address(value).lower()


def normalize_identity(namespace: str, value: str, field: str = "id") -> str:
    """The canonical form of an identity value, or InvalidInput naming `field`."""
    value = value.strip()
    if namespace == EMAIL_NAMESPACE:
        try:
            return normalize_email(value)
        except EmailNotValidError as exc:
            raise InvalidInput.on(field, f"is not a valid email address ({exc})") from None
    if namespace == PHONE_NAMESPACE:
        # People write "+44 (0)7700 900123" or "+1 (415) 555-0100": keep the digits, without
        # the national trunk prefix "(0)" that international numbers must not carry.
        value = PHONE_SEPARATORS.sub("", value.replace("(0)", ""))
        if not E164_PATTERN.match(value):
            raise InvalidInput.on(field, "must be an E.164 phone number such as +14155550100")
    if not value:
        raise InvalidInput.on(field, "must not be blank")
    return value


def attribute_paths(attributes: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Every dotted path of nested objects (lists are leaves), parents included."""
    for key, value in attributes.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, Mapping):
            yield from attribute_paths(value, path + ".")


@dataclass(frozen=True, slots=True)
class UpsertResult:
    profile: dict[str, Any]
    created: bool


def _wanted_identities(
    namespace: str, identity_value: str, body: ProfileUpsert
) -> set[tuple[str, str]]:
    """The identities a PUT names, normalized; every problem of the body reported at once."""
    named = [(namespace, identity_value, "id"), *body_identities(body)]
    return check_upsert(named, body)


def body_identities(body: ProfileUpsert) -> list[tuple[str, str, str]]:
    """(namespace, value, field) of each entry of `identities`."""
    return [
        (identity.namespace, identity.id, f"identities.{index}.id")
        for index, identity in enumerate(body.identities)
    ]


def check_upsert(
    named: Iterable[tuple[str, str, str]],
    body: ProfileUpsert,
    *,
    attributes_checked: bool = False,
) -> set[tuple[str, str]]:
    """The identities `named` (namespace, value, field), normalized, after checking them and
    the rest of the body; InvalidInput lists every problem at once. `attributes_checked`:
    the caller vouches that the attributes are storable, small and shallow enough."""
    errors = ErrorCollector()
    wanted: set[tuple[str, str]] = set()
    for identity_namespace, value, field in named:
        try:
            wanted.add((identity_namespace, normalize_identity(identity_namespace, value, field)))
        except InvalidInput as exc:
            errors.errors.extend(exc.errors)
    if body.timezone is not None and body.timezone not in _TIMEZONES:
        errors.add("timezone", "is not an IANA time zone such as Europe/Paris")
    if not attributes_checked:
        problem = unstorable(body.attributes, "attributes")
        if problem is not None:
            errors.errors.append(problem)
        elif len(json.dumps(body.attributes)) > MAX_ATTRIBUTE_BYTES:
            errors.add("attributes", f"are larger than {MAX_ATTRIBUTE_BYTES} bytes as JSON")
        if nesting_depth(body.attributes, MAX_ATTRIBUTE_DEPTH + 1) > MAX_ATTRIBUTE_DEPTH:
            errors.add("attributes", f"nest deeper than {MAX_ATTRIBUTE_DEPTH} levels")
    errors.raise_if_any("the profile is invalid")
    return wanted


def upsert(
    db: Database,
    workspace_id: str,
    namespace: str,
    identity_value: str,
    body: ProfileUpsert,
    *,
    merge: bool = False,
    detail: str | None = None,
) -> UpsertResult:
    """Creates or updates the profile the identities name.

    PUT (merge=False) replaces attributes, time zone and locale; PATCH (merge=True) changes
    only the attributes given (a null removes one) and the fields sent. Both merge identities
    and consent; the consent history notes each change (source `api`, with `detail`).
    """
    wanted = _wanted_identities(namespace, identity_value, body)
    # Two first PUTs for the same new identity race to insert it; the loser retries once and
    # then finds the winner's profile.
    for attempt in range(2):
        try:
            with db.write() as conn:
                return _upsert_within(conn, workspace_id, wanted, body, merge, detail)
        except sa.exc.IntegrityError:
            if attempt:
                raise Conflict(CONCURRENT_CHANGE) from None
    raise AssertionError("unreachable")


def merge_attributes(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys of `changes` replace those of `current`; a null removes the key."""
    merged = {**current, **changes}
    return {key: value for key, value in merged.items() if value is not None}


def changed_values(
    current: Mapping[str, Any] | None,
    body: ProfileUpsert,
    now: datetime,
    *,
    merge: bool,
    source: str = "api",
) -> dict[str, Any]:
    """The columns an upsert writes: attributes, consent, time zone, locale, updated_at.

    PUT (merge=False) replaces attributes, time zone and locale; PATCH (merge=True) changes
    only the attributes given (a null removes one) and the fields sent. Both merge consent,
    recording a change with its time and `source`.
    """
    values = {
        "attributes": body.attributes,
        "consent": merge_consent(current["consent"] if current else {}, body, now, source),
        "timezone": body.timezone,
        "locale": body.locale,
        "updated_at": now,
    }
    if merge and current is not None:
        values["attributes"] = merge_attributes(current["attributes"], body.attributes)
        for name in ("timezone", "locale"):
            if name not in body.model_fields_set:
                values[name] = current[name]
    return values


def _upsert_within(
    conn: sa.Connection,
    workspace_id: str,
    wanted: set[tuple[str, str]],
    body: ProfileUpsert,
    merge: bool,
    detail: str | None = None,
) -> UpsertResult:
    now = utcnow()
    owners = owners_of(conn, workspace_id, wanted)
    owner_ids = set(owners.values())
    if len(owner_ids) > 1:
        raise Conflict(IDENTITIES_OF_SEVERAL_PROFILES)
    # Locked: consent is merged in Python, and two concurrent PUTs must not lose a change.
    current = _load_row(conn, workspace_id, owner_ids.pop(), for_update=True) if owner_ids else None
    values = changed_values(current, body, now, merge=merge)
    if current is None:
        profile_id = new_id()
        conn.execute(
            profiles.insert().values(
                id=profile_id, workspace_id=workspace_id, created_at=now, **values
            )
        )
    else:
        profile_id = current["id"]
        conn.execute(profiles.update().where(profiles.c.id == profile_id).values(**values))
    if body.consent:
        before = current["consent"] if current else {}
        consent_history.record(
            conn,
            consent_history.changes(
                workspace_id, profile_id, before, values["consent"], "api", now, detail
            ),
        )
    new_identities = [
        {"workspace_id": workspace_id, "namespace": ns, "value": value, "profile_id": profile_id}
        for ns, value in sorted(wanted)
        if (ns, value) not in owners
    ]
    if new_identities:
        conn.execute(profile_identities.insert(), new_identities)
    save_push_tokens(conn, workspace_id, profile_id, body.push_tokens, now)
    remember_paths(conn, workspace_id, attribute_paths_of(body.attributes), now)
    profile = _load(conn, workspace_id, profile_id)
    assert profile is not None
    return UpsertResult(profile=profile, created=current is None)


def owners_of(
    conn: sa.Connection, workspace_id: str, identities: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The profile id of each identity a profile of the workspace has: one query per
    namespace and chunk of values (the identities' primary key)."""
    by_namespace: dict[str, list[str]] = {}
    for namespace, value in identities:
        by_namespace.setdefault(namespace, []).append(value)
    owners: dict[tuple[str, str], str] = {}
    query = _OWNERS_PG if conn.dialect.name == "postgresql" else _OWNERS
    for namespace, values in by_namespace.items():
        for start in range(0, len(values), IN_CHUNK):
            rows = conn.execute(
                query,
                {
                    "workspace_id": workspace_id,
                    "namespace": namespace,
                    "values": values[start : start + IN_CHUNK],
                },
            ).all()
            owners.update({(namespace, row.value): row.profile_id for row in rows})
    return owners


_OWNERS = sa.select(profile_identities.c.value, profile_identities.c.profile_id).where(
    profile_identities.c.workspace_id == sa.bindparam("workspace_id"),
    profile_identities.c.namespace == sa.bindparam("namespace"),
    profile_identities.c.value.in_(sa.bindparam("values", expanding=True)),
)
# On PostgreSQL, a join with the array unnested: once psycopg prepares the IN (...) form,
# PostgreSQL's generic plan for it used the primary key for workspace and namespace only and
# filtered the values, scanning every identity of the namespace (an import slowed down as
# the table grew). The join's generic plan looks each value up in the index.
_OWNERS_PG = sa.text(
    "SELECT i.value, i.profile_id FROM profile_identities AS i "
    "JOIN unnest(CAST(:values AS VARCHAR[])) AS wanted(value) ON i.value = wanted.value "
    "WHERE i.workspace_id = :workspace_id AND i.namespace = :namespace"
)


def load_rows_for_update(
    conn: sa.Connection, workspace_id: str, profile_ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Profile rows by id, locked (in id order, so concurrent batches do not deadlock)."""
    ids = sorted(set(profile_ids))
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), IN_CHUNK):
        query = (
            sa.select(profiles)
            .where(
                profiles.c.workspace_id == workspace_id,
                profiles.c.id.in_(ids[start : start + IN_CHUNK]),
            )
            .order_by(profiles.c.id)
            .with_for_update()
        )
        found.update({row["id"]: dict(row) for row in conn.execute(query).mappings()})
    return found


def merge_consent(
    current: Mapping[str, Any], body: ProfileUpsert, now: datetime, source: str = "api"
) -> dict[str, Any]:
    """`current` consent with the body's changes, each recorded with its time and source."""
    consent = dict(current)
    for channel, status in body.consent.items():
        previous = consent.get(channel.value, {}).get("status", ConsentStatus.UNSET.value)
        if previous != status.value:
            consent[channel.value] = {
                "status": status.value,
                "updated_at": now.isoformat(),
                "source": source,
            }
    return consent


def attribute_paths_of(attributes: Mapping[str, Any]) -> list[str]:
    """The paths of `attributes` worth remembering: at most MAX_TRACKED_PATHS, none too long."""
    paths: list[str] = []
    for path in attribute_paths(attributes):
        if len(paths) >= MAX_TRACKED_PATHS:
            break
        if len(path) <= MAX_PATH_CHARS:
            paths.append(path)
    return paths


def remember_paths(
    conn: sa.Connection, workspace_id: str, paths: Iterable[str], now: datetime
) -> None:
    """Records attribute paths of the workspace (those already known are left as they are)."""
    rows = [{"workspace_id": workspace_id, "path": path, "first_seen_at": now} for path in paths]
    for start in range(0, len(rows), IN_CHUNK):
        insert_ignoring_conflicts(conn, profile_attribute_paths, rows[start : start + IN_CHUNK])


def known_attribute_paths(conn: sa.Connection, workspace_id: str, paths: set[str]) -> set[str]:
    if not paths:
        return set()
    rows = conn.execute(
        sa.select(profile_attribute_paths.c.path).where(
            profile_attribute_paths.c.workspace_id == workspace_id,
            profile_attribute_paths.c.path.in_(sorted(paths)),
        )
    ).scalars()
    return set(rows)


def _load_row(
    conn: sa.Connection, workspace_id: str, profile_id: str, *, for_update: bool = False
) -> dict[str, Any] | None:
    query = sa.select(profiles).where(
        profiles.c.id == profile_id, profiles.c.workspace_id == workspace_id
    )
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def _load(conn: sa.Connection, workspace_id: str, profile_id: str) -> dict[str, Any] | None:
    row = _load_row(conn, workspace_id, profile_id)
    if row is None:
        return None
    identities = conn.execute(
        sa.select(profile_identities.c.namespace, profile_identities.c.value)
        .where(profile_identities.c.profile_id == profile_id)
        .order_by(profile_identities.c.namespace, profile_identities.c.value)
    ).all()
    row["identities"] = [Identity(namespace=i.namespace, id=i.value) for i in identities]
    row["consent"] = {
        channel.value: row["consent"].get(channel.value, {"status": ConsentStatus.UNSET.value})
        for channel in Channel
    }
    return row


def find_profile_id(
    conn: sa.Connection, workspace_id: str, namespace: str, value: str
) -> str | None:
    found: str | None = conn.execute(
        sa.select(profile_identities.c.profile_id).where(
            profile_identities.c.workspace_id == workspace_id,
            profile_identities.c.namespace == namespace,
            profile_identities.c.value == value,
        )
    ).scalar_one_or_none()
    return found


def get(db: Database, workspace_id: str, namespace: str, value: str) -> dict[str, Any]:
    value = normalize_identity(namespace, value)
    with db.read() as conn:
        profile_id = find_profile_id(conn, workspace_id, namespace, value)
        profile = _load(conn, workspace_id, profile_id) if profile_id else None
    if profile is None:
        raise NotFound(f"no profile with {namespace} identity '{value}'")
    return profile


def _profile_id_or_404(conn: sa.Connection, workspace_id: str, namespace: str, value: str) -> str:
    profile_id = find_profile_id(conn, workspace_id, namespace, value)
    if profile_id is None:
        raise NotFound(f"no profile with {namespace} identity '{value}'")
    return profile_id


# ---------------------------------------------------------------- push tokens


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def save_push_tokens(
    conn: sa.Connection,
    workspace_id: str,
    profile_id: str,
    tokens: Iterable[PushTokenIn],
    now: datetime,
) -> set[tuple[str, str]]:
    """Registers tokens for the profile, moving any that another profile had (the device
    changed hands); returns the (app id, token hash) of those new to this profile."""
    rows = {
        (token.app_id, _token_hash(token.token)): {
            "workspace_id": workspace_id,
            "app_id": token.app_id,
            "token_hash": _token_hash(token.token),
            "profile_id": profile_id,
            "platform": token.platform.value,
            "token": token.token,
            "created_at": now,
            "last_seen_at": now,
        }
        for token in tokens
    }
    if not rows:
        return set()
    held = {
        (row.app_id, row.token_hash)
        for row in conn.execute(
            sa.select(profile_push_tokens.c.app_id, profile_push_tokens.c.token_hash).where(
                profile_push_tokens.c.profile_id == profile_id,
                profile_push_tokens.c.token_hash.in_([key[1] for key in rows]),
            )
        )
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(profile_push_tokens)
    moved = profile_push_tokens.c.profile_id != insert.excluded.profile_id
    upsert = insert.on_conflict_do_update(
        index_elements=["workspace_id", "app_id", "token_hash"],
        set_={
            "profile_id": insert.excluded.profile_id,
            "platform": insert.excluded.platform,
            "last_seen_at": insert.excluded.last_seen_at,
            # A token that moves starts a new registration; one seen again keeps its first.
            "created_at": sa.case(
                (moved, insert.excluded.created_at), else_=profile_push_tokens.c.created_at
            ),
        },
    )
    conn.execute(upsert, list(rows.values()))
    return set(rows) - held


def _push_token_view(row: sa.RowMapping) -> dict[str, Any]:
    return {
        name: row[name] for name in ("app_id", "platform", "token", "created_at", "last_seen_at")
    }


def register_push_token(
    db: Database, workspace_id: str, namespace: str, value: str, token: PushTokenIn
) -> tuple[dict[str, Any], bool]:
    """The token as registered for the profile, and whether it is new to the profile."""
    value = normalize_identity(namespace, value)
    with db.write() as conn:
        profile_id = _profile_id_or_404(conn, workspace_id, namespace, value)
        created = save_push_tokens(conn, workspace_id, profile_id, [token], utcnow())
        row = (
            conn.execute(
                sa.select(profile_push_tokens).where(
                    profile_push_tokens.c.workspace_id == workspace_id,
                    profile_push_tokens.c.app_id == token.app_id,
                    profile_push_tokens.c.token_hash == _token_hash(token.token),
                )
            )
            .mappings()
            .one()
        )
    return _push_token_view(row), bool(created)


def list_push_tokens(
    db: Database, workspace_id: str, namespace: str, value: str
) -> list[dict[str, Any]]:
    """The profile's tokens, the most recently seen first."""
    value = normalize_identity(namespace, value)
    with db.read() as conn:
        profile_id = _profile_id_or_404(conn, workspace_id, namespace, value)
        rows = conn.execute(
            sa.select(profile_push_tokens)
            .where(profile_push_tokens.c.profile_id == profile_id)
            .order_by(*_NEWEST_FIRST)
        ).mappings()
        return [_push_token_view(row) for row in rows]


def remove_push_token(
    db: Database,
    workspace_id: str,
    namespace: str,
    value: str,
    token: str,
    app_id: str | None = None,
) -> None:
    """Removes the token from the profile: of `app_id`, or of every app when it is None."""
    value = normalize_identity(namespace, value)
    with db.write() as conn:
        profile_id = _profile_id_or_404(conn, workspace_id, namespace, value)
        query = profile_push_tokens.delete().where(
            profile_push_tokens.c.profile_id == profile_id,
            profile_push_tokens.c.token_hash == _token_hash(token),
        )
        if app_id is not None:
            query = query.where(profile_push_tokens.c.app_id == app_id)
        if conn.execute(query).rowcount == 0:
            raise NotFound("the profile has no such push token")


_NEWEST_FIRST = (profile_push_tokens.c.last_seen_at.desc(), profile_push_tokens.c.created_at.desc())


def push_tokens_for(
    conn: sa.Connection, workspace_id: str, profile_ids: Iterable[str], app_id: str | None
) -> dict[str, list[str]]:
    """The push tokens of each profile that has any, for `app_id` (any app when None), the
    most recently seen first: what delivery addresses push messages to."""
    ids = sorted(set(profile_ids))
    found: dict[str, list[str]] = {}
    for start in range(0, len(ids), IN_CHUNK):
        query = (
            sa.select(profile_push_tokens.c.profile_id, profile_push_tokens.c.token)
            .where(
                profile_push_tokens.c.workspace_id == workspace_id,
                profile_push_tokens.c.profile_id.in_(ids[start : start + IN_CHUNK]),
            )
            .order_by(*_NEWEST_FIRST)
        )
        if app_id is not None:
            query = query.where(profile_push_tokens.c.app_id == app_id)
        for row in conn.execute(query):
            found.setdefault(row.profile_id, []).append(row.token)
    return found


# ---------------------------------------------------------------- merging two profiles

PENDING_STATES = (MessageState.QUEUED.value, MessageState.DEFERRED.value)
# Messages that may still be claimed and rendered: pending ones, and those in flight, which go
# back to `queued` on a retry or an expired lease.
UNSENT_STATES = (*PENDING_STATES, MessageState.SENDING.value)


def merged_attributes(winner: Mapping[str, Any], loser: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: objects on both sides merge key by key; otherwise the winner's value stays,
    unless it is null, which the loser's value fills."""
    merged = dict(winner)
    for key, value in loser.items():
        current = merged.get(key)
        if current is None:
            merged[key] = value
        elif isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merged_attributes(current, value)
    return merged


def _changed_at(entry: Mapping[str, Any]) -> datetime | None:
    stamp = entry.get("updated_at")
    return datetime.fromisoformat(stamp) if isinstance(stamp, str) else None


def merged_consent(target: Mapping[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    """Per channel, the entry changed most recently; the target's on a tie, or when neither
    says when it changed."""
    merged = dict(target)
    for channel, entry in source.items():
        current = merged.get(channel)
        if current is None:
            merged[channel] = entry
            continue
        theirs, ours = _changed_at(entry), _changed_at(current)
        if theirs is not None and (ours is None or theirs > ours):
            merged[channel] = entry
    return merged


# The consent history's source for the channels a merge changed.
MERGE_SOURCE = "merge"


def merge(db: Database, workspace_id: str, into: Identity, source: Identity) -> dict[str, Any]:
    """Merges the profile `source` names into the one `into` names, in one transaction, and
    returns the merged profile. The source's identities, push tokens, audience memberships
    and pending messages move over; attributes deep-merge and consent takes the most recent
    change per channel (see merged_attributes, merged_consent); the source is deleted and
    the merge recorded."""
    errors = ErrorCollector()
    values: dict[str, str] = {}
    for field, identity in (("into", into), ("from", source)):
        try:
            values[field] = normalize_identity(identity.namespace, identity.id, f"{field}.id")
        except InvalidInput as exc:
            errors.errors.extend(exc.errors)
    errors.raise_if_any("the merge is invalid")
    now = utcnow()
    with db.write() as conn:
        into_id = _profile_id_or_404(conn, workspace_id, into.namespace, values["into"])
        from_id = _profile_id_or_404(conn, workspace_id, source.namespace, values["from"])
        if into_id == from_id:
            raise InvalidInput.on("from", "names the same profile as into")
        rows = load_rows_for_update(conn, workspace_id, [into_id, from_id])
        if len(rows) < 2:
            raise Conflict(CONCURRENT_CHANGE)
        target, merged_away = rows[into_id], rows[from_id]
        attributes = merged_attributes(target["attributes"], merged_away["attributes"])
        if len(json.dumps(attributes)) > MAX_ATTRIBUTE_BYTES:
            raise InvalidInput.on(
                "from", f"the merged attributes would be larger than {MAX_ATTRIBUTE_BYTES} bytes"
            )
        _move_to(conn, workspace_id, from_id, into_id)
        consent = merged_consent(target["consent"], merged_away["consent"])
        # The history of the profile merged away comes along, then the merge's own changes.
        consent_history.move(conn, workspace_id, from_id, into_id)
        consent_history.record(
            conn,
            consent_history.changes(
                workspace_id,
                into_id,
                target["consent"],
                consent,
                MERGE_SOURCE,
                now,
                f"profile:{from_id}",
            ),
        )
        conn.execute(
            profiles.update()
            .where(profiles.c.id == into_id)
            .values(
                attributes=attributes,
                consent=consent,
                timezone=target["timezone"] or merged_away["timezone"],
                locale=target["locale"] or merged_away["locale"],
                updated_at=now,
            )
        )
        conn.execute(
            profile_merges.insert().values(
                workspace_id=workspace_id,
                from_profile_id=from_id,
                into_profile_id=into_id,
                merged_at=now,
            )
        )
        conn.execute(profiles.delete().where(profiles.c.id == from_id))
        profile = _load(conn, workspace_id, into_id)
    assert profile is not None
    return profile


def _move_to(conn: sa.Connection, workspace_id: str, from_id: str, into_id: str) -> None:
    """Points what belongs to the person at the profile that remains. Identity values are
    unique in a workspace, so every identity of the source moves and none is lost; push tokens
    likewise. Memberships the target already has stay as they are."""
    conn.execute(
        profile_identities.update()
        .where(profile_identities.c.profile_id == from_id)
        .values(profile_id=into_id)
    )
    conn.execute(
        profile_push_tokens.update()
        .where(profile_push_tokens.c.profile_id == from_id)
        .values(profile_id=into_id)
    )
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(audience_members)
        .from_select(
            ["audience_id", "profile_id", "added_at"],
            sa.select(
                audience_members.c.audience_id,
                sa.literal(into_id, profile_identities.c.profile_id.type),
                audience_members.c.added_at,
            ).where(audience_members.c.profile_id == from_id),
        )
        .on_conflict_do_nothing()
    )
    conn.execute(audience_members.delete().where(audience_members.c.profile_id == from_id))
    counters.move_counts(conn, workspace_id, from_id, into_id)
    # Messages not yet sent render with the merged profile, those in flight included (a retry
    # would otherwise look up a profile that no longer exists); the history keeps the source's
    # id (an erasure follows profile_merges to it).
    conn.execute(
        messages.update()
        .where(
            messages.c.state.in_(UNSENT_STATES),
            messages.c.workspace_id == workspace_id,
            messages.c.profile_id == from_id,
        )
        .values(profile_id=into_id)
    )


# ---------------------------------------------------------------- erasure

ERASED_RECIPIENT = "erased"
ERASED_REASON = "profile_erased"


def _merged_into(conn: sa.Connection, workspace_id: str, profile_id: str) -> set[str]:
    """The profile and every profile merged into it, directly or through others."""
    found = {profile_id}
    frontier = [profile_id]
    while frontier:
        merged = conn.execute(
            sa.select(profile_merges.c.from_profile_id).where(
                profile_merges.c.workspace_id == workspace_id,
                profile_merges.c.into_profile_id.in_(frontier),
            )
        ).scalars()
        frontier = [merged_id for merged_id in merged if merged_id not in found]
        found.update(frontier)
    return found


def erase(db: Database, workspace_id: str, namespace: str, value: str) -> str:
    """Erases the person a profile is (right to be forgotten) and returns the id of the
    anonymous erasure record.

    Deleted: the profile, its identities, push tokens, audience memberships, merge records
    and consent history (its own and that of the profiles merged into it).
    In the messages of the profile (and of profiles merged into it, and those sent to one of
    its identities without a profile): address, context, profile data and last error are
    cleared, the recipient becomes "erased"; state, reason, channel, campaign, execution and
    times stay, so counts still add up. Pending messages are cancelled (`profile_erased`).
    Soft bounces counted for its identities (below the suppression threshold) go too.
    The suppression list is kept: it protects the address from being mailed again.
    """
    value = normalize_identity(namespace, value)
    now = utcnow()
    with db.write() as conn:
        profile_id = _profile_id_or_404(conn, workspace_id, namespace, value)
        # Locked: a merge or an upsert of the profile waits for the erasure, then finds no row.
        if not load_rows_for_update(conn, workspace_id, [profile_id]):
            raise Conflict(CONCURRENT_CHANGE)
        profile_ids = sorted(_merged_into(conn, workspace_id, profile_id))
        identities = _identities_of(conn, profile_id)
        message_count = _erase_messages(conn, workspace_id, profile_ids, identities, now)
        counters.forget_recipients(
            conn,
            workspace_id,
            [*profile_ids, *(value for values in identities.values() for value in values)],
        )
        conn.execute(
            profile_merges.delete().where(
                profile_merges.c.workspace_id == workspace_id,
                profile_merges.c.into_profile_id.in_(profile_ids),
            )
        )
        _forget_soft_bounces(conn, workspace_id, identities)
        consent_history.forget(conn, workspace_id, profile_ids)
        conn.execute(audience_members.delete().where(audience_members.c.profile_id == profile_id))
        conn.execute(
            profile_push_tokens.delete().where(profile_push_tokens.c.profile_id == profile_id)
        )
        conn.execute(
            profile_identities.delete().where(profile_identities.c.profile_id == profile_id)
        )
        conn.execute(profiles.delete().where(profiles.c.id == profile_id))
        erasure_id = new_id()
        conn.execute(
            profile_erasures.insert().values(
                id=erasure_id, workspace_id=workspace_id, erased_at=now, message_count=message_count
            )
        )
    return erasure_id


# What an erased message keeps of its recipient: nothing. The placeholder is the same for
# every message, so nothing links the messages of one person either.
_ERASED_MESSAGE: Mapping[str, Any] = {
    "recipient_id": ERASED_RECIPIENT,
    "profile_id": None,
    "address": None,
    "context": {},
    "profile_data": None,
    "last_error": None,
}


def _identities_of(conn: sa.Connection, profile_id: str) -> dict[str, list[str]]:
    """The profile's identity values by namespace."""
    found: dict[str, list[str]] = {}
    for row in conn.execute(
        sa.select(profile_identities.c.namespace, profile_identities.c.value).where(
            profile_identities.c.profile_id == profile_id
        )
    ):
        found.setdefault(row.namespace, []).append(row.value)
    return found


def _forget_soft_bounces(
    conn: sa.Connection, workspace_id: str, identities: Mapping[str, list[str]]
) -> None:
    """Deletes the soft bounces counted for the identity values: an address counted is the
    person's data, where a suppression is kept to protect it. The values are normalized as the
    suppression list normalizes an email address and a phone number (normalize_identity), in
    whichever namespace the profile has them."""
    values = [value for found in identities.values() for value in found]
    namespaces = {
        SuppressionChannel.EMAIL: EMAIL_NAMESPACE,
        SuppressionChannel.SMS: PHONE_NAMESPACE,
    }
    wanted: dict[str, set[str]] = {channel.value: set() for channel in namespaces}
    for value in values:
        for channel, namespace in namespaces.items():
            try:
                wanted[channel.value].add(normalize_identity(namespace, value))
            except InvalidInput:
                continue  # not an address of this channel
    counted = suppression_soft_bounces.c
    for channel_value, normalized in wanted.items():
        ordered = sorted(normalized)
        for start in range(0, len(ordered), IN_CHUNK):
            conn.execute(
                suppression_soft_bounces.delete().where(
                    counted.workspace_id == workspace_id,
                    counted.channel == channel_value,
                    counted.value.in_(ordered[start : start + IN_CHUNK]),
                )
            )


def _erase_messages(
    conn: sa.Connection,
    workspace_id: str,
    profile_ids: Iterable[str],
    identities: Mapping[str, list[str]],
    now: datetime,
) -> int:
    """Erases the messages of the profiles, and those sent without a profile (external
    recipients) to one of the identities; returns how many. messages.profile_id has no index
    (it would slow every trigger), so they are found with one scan, then changed by id."""
    external = [
        sa.and_(messages.c.recipient_namespace == namespace, messages.c.recipient_id.in_(values))
        for namespace, values in identities.items()
    ]
    found = conn.execute(
        sa.select(messages.c.id).where(
            messages.c.workspace_id == workspace_id,
            sa.or_(
                messages.c.profile_id.in_(list(profile_ids)),
                sa.and_(messages.c.profile_id.is_(None), sa.or_(sa.false(), *external)),
            ),
        )
    ).scalars()
    ids = list(found)
    for start in range(0, len(ids), IN_CHUNK):
        chunk = messages.c.id.in_(ids[start : start + IN_CHUNK])
        # Locked as read (a worker's claim skips them), so the events are those of the update.
        cancelled = conn.execute(
            sa.select(
                messages.c.id,
                messages.c.campaign_id,
                messages.c.version_id,
                messages.c.execution_id,
                messages.c.channel,
                messages.c.state,
                messages.c.is_proof,
            )
            .where(chunk, messages.c.state.in_(PENDING_STATES))
            .with_for_update()
        ).all()
        conn.execute(
            messages.update()
            .where(chunk, messages.c.state.in_(PENDING_STATES))
            .values(state=MessageState.CANCELLED.value, reason=ERASED_REASON, updated_at=now)
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
                    execution_id=row.execution_id,
                    channel=row.channel,
                    occurred_at=now,
                    reason=ERASED_REASON,
                    previous_state=row.state,
                    is_proof=bool(row.is_proof),
                )
                for row in cancelled
            ],
        )
        conn.execute(messages.update().where(chunk).values(**_ERASED_MESSAGE))
        # Webhook payloads name the recipient: the deliveries about these messages go too.
        webhooks.forget_messages(conn, ids[start : start + IN_CHUNK])
    return len(ids)


def get_attributes(conn: sa.Connection, profile_id: str) -> dict[str, Any]:
    attributes: dict[str, Any] = conn.execute(
        sa.select(profiles.c.attributes).where(profiles.c.id == profile_id)
    ).scalar_one()
    return attributes


# ---------------------------------------------------------------- one channel's consent
# For tidings.unsubscribe: a link in a message sets its recipient's consent on its channel.


def current_profile_id(conn: sa.Connection, workspace_id: str, profile_id: str) -> str | None:
    """The profile a stored profile id names now: itself, or the profile it was merged into
    (through any number of merges: sent messages keep the merged-away id); None when it is
    gone (erased)."""
    seen: set[str] = set()
    while profile_id not in seen:
        seen.add(profile_id)
        if _load_row(conn, workspace_id, profile_id) is not None:
            return profile_id
        into: str | None = conn.execute(
            sa.select(profile_merges.c.into_profile_id).where(
                profile_merges.c.workspace_id == workspace_id,
                profile_merges.c.from_profile_id == profile_id,
            )
        ).scalar_one_or_none()
        if into is None:
            return None
        profile_id = into
    return None


def set_channel_consent(
    conn: sa.Connection,
    workspace_id: str,
    profile_id: str,
    channel: Channel,
    status: ConsentStatus,
    source: str,
    now: datetime,
    detail: str | None = None,
) -> dict[str, Any] | None:
    """Sets one channel's consent of a profile, its row locked as an upsert locks it; returns
    the channel's consent entry, or None when the workspace has no such profile. A channel
    that has the status already keeps the entry of the change that set it (as merge_consent
    does), so repeating the call changes nothing. A change goes into the consent history with
    `source` and `detail` (what made it: a message, a console user)."""
    current = _load_row(conn, workspace_id, profile_id, for_update=True)
    if current is None:
        return None
    consent = dict(current["consent"])
    entry = consent.get(channel.value)
    if isinstance(entry, Mapping) and entry.get("status") == status.value:
        return dict(entry)
    entry = {"status": status.value, "updated_at": now.isoformat(), "source": source}
    consent[channel.value] = entry
    conn.execute(
        profiles.update()
        .where(profiles.c.id == profile_id, profiles.c.workspace_id == workspace_id)
        .values(consent=consent, updated_at=now)
    )
    consent_history.record(
        conn,
        consent_history.changes(
            workspace_id, profile_id, current["consent"], consent, source, now, detail
        ),
    )
    return entry


def consent_changes(
    db: Database,
    workspace_id: str,
    namespace: str,
    value: str,
    channel: Channel | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the consent history of the profile an identity names, newest first, of one
    channel or all; NotFound when the workspace has no such profile."""
    value = normalize_identity(namespace, value)
    with db.read() as conn:
        profile_id = _profile_id_or_404(conn, workspace_id, namespace, value)
        return consent_history.page(conn, workspace_id, profile_id, channel, cursor, limit)


# ---------------------------------------------------------------- tokens a provider refused


def forget_push_token(
    conn: sa.Connection, workspace_id: str, token: str, app_id: str | None = None
) -> int:
    """Removes a token the push provider called invalid from whichever profile of the
    workspace holds it (of `app_id`, or of every app when None); how many rows went. Zero is
    no error: the profile may have been erased, or the token removed meanwhile."""
    query = profile_push_tokens.delete().where(
        profile_push_tokens.c.workspace_id == workspace_id,
        profile_push_tokens.c.token_hash == _token_hash(token),
    )
    if app_id is not None:
        query = query.where(profile_push_tokens.c.app_id == app_id)
    return conn.execute(query).rowcount
