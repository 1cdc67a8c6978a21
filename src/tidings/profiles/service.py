"""Profiles: upsert by identity, read, delete, and resolution of a recipient for rendering."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import available_timezones

import sqlalchemy as sa
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from tidings.clock import utcnow
from tidings.db import Database
from tidings.db.upsert import insert_ignoring_conflicts
from tidings.errors import Conflict, ErrorCollector, InvalidInput, NotFound
from tidings.ids import new_id
from tidings.json_data import unstorable
from tidings.profiles.models import profile_attribute_paths, profile_identities, profiles
from tidings.profiles.schemas import (
    MAX_ATTRIBUTE_BYTES,
    MAX_ATTRIBUTE_DEPTH,
    ConsentStatus,
    Identity,
    ProfileUpsert,
)
from tidings.vocabulary import E164_PATTERN, EMAIL_NAMESPACE, PHONE_NAMESPACE, Channel

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


def _depth(value: Any) -> int:
    if isinstance(value, Mapping):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


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
        if _depth(body.attributes) > MAX_ATTRIBUTE_DEPTH:
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
) -> UpsertResult:
    """Creates or updates the profile the identities name.

    PUT (merge=False) replaces attributes, time zone and locale; PATCH (merge=True) changes
    only the attributes given (a null removes one) and the fields sent. Both merge identities
    and consent.
    """
    wanted = _wanted_identities(namespace, identity_value, body)
    # Two first PUTs for the same new identity race to insert it; the loser retries once and
    # then finds the winner's profile.
    for attempt in range(2):
        try:
            with db.write() as conn:
                return _upsert_within(conn, workspace_id, wanted, body, merge)
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
    new_identities = [
        {"workspace_id": workspace_id, "namespace": ns, "value": value, "profile_id": profile_id}
        for ns, value in sorted(wanted)
        if (ns, value) not in owners
    ]
    if new_identities:
        conn.execute(profile_identities.insert(), new_identities)
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


def delete(db: Database, workspace_id: str, namespace: str, value: str) -> None:
    """Removes the profile, its identities and attributes (right to be forgotten)."""
    value = normalize_identity(namespace, value)
    with db.write() as conn:
        profile_id = find_profile_id(conn, workspace_id, namespace, value)
        if profile_id is None:
            raise NotFound(f"no profile with {namespace} identity '{value}'")
        conn.execute(
            profile_identities.delete().where(profile_identities.c.profile_id == profile_id)
        )
        conn.execute(profiles.delete().where(profiles.c.id == profile_id))


def get_attributes(conn: sa.Connection, profile_id: str) -> dict[str, Any]:
    attributes: dict[str, Any] = conn.execute(
        sa.select(profiles.c.attributes).where(profiles.c.id == profile_id)
    ).scalar_one()
    return attributes
