"""The suppression list: add (upsert), remove, list, CSV import, soft-bounce counting, and the
lookups delivery asks before sending. Knows nothing of HTTP.

Matching (suppressed, suppression_for): an email address is suppressed by an `address` entry
of the same normalized address, or by a `domain` entry of its domain **or any parent domain**
(`example.com` covers `ada@example.com` and `ada@mail.example.com`, never
`ada@notexample.com`). A phone number (channel `sms`) is matched exactly. Domains have at
least two labels, so no entry covers a whole top-level domain by mistake.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from email_validator import EmailNotValidError
from sqlalchemy.dialects import postgresql, sqlite

from tidings.clock import utcnow
from tidings.db import Database
from tidings.errors import InvalidInput, NotFound
from tidings.ids import new_id
from tidings.pagination import keyset_page
from tidings.profiles.service import normalize_email, normalize_identity
from tidings.suppressions.models import suppression_soft_bounces, suppressions
from tidings.suppressions.schemas import (
    MAX_REASON_LENGTH,
    MAX_SOURCE_LENGTH,
    SuppressionChannel,
    SuppressionEntry,
    SuppressionKind,
    SuppressionType,
)
from tidings.vocabulary import Category

DEFAULT_SOFT_BOUNCE_THRESHOLD = 3
NOT_FOUND = "no such suppression in this workspace"
# Values per IN (...) list: well under SQLite's limit on bound parameters.
CHUNK = 500
IMPORT_BATCH = 1000
MAX_LINE_CHARS = 4096
MAX_REPORTED_REJECTIONS = 1000
MAX_DOMAIN_LENGTH = 253
REASON_SUPPRESSED_ADDRESS = "suppressed_address"
REASON_SUPPRESSED_DOMAIN = "suppressed_domain"
CSV_COLUMNS = ("value", "type", "reason", "kind", "channel")
_TYPES = ", ".join(t.value for t in SuppressionType)
_CHANNELS = ", ".join(c.value for c in SuppressionChannel)
_KINDS = ", ".join(k.value for k in SuppressionKind)

T = TypeVar("T")
Key = tuple[str, str, str]  # (channel, kind, value)


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------- normalization


def normalize_domain(value: str, field: str = "value") -> str:
    """A domain as the domains of normalized email addresses read: lower-cased, IDNA-checked,
    internationalized names in Unicode (`XN--MNCHEN-3YA.de` is `münchen.de`). A leading `@`
    and a trailing dot are dropped."""
    domain = value.strip().removeprefix("@").removesuffix(".")
    if not domain or "@" in domain or len(domain) > MAX_DOMAIN_LENGTH:
        raise InvalidInput.on(field, "is not a valid domain name")
    try:
        address = normalize_email(f"postmaster@{domain}")
    except EmailNotValidError as exc:
        message = str(exc).replace("The part after the @-sign", "The domain")
        raise InvalidInput.on(field, f"is not a valid domain name ({message})") from None
    return address.partition("@")[2]


def infer_kind(channel: SuppressionChannel, value: str) -> SuppressionKind:
    """`address` for an email value with something before its `@`, `domain` for other email
    values, `address` for every SMS value."""
    if channel == SuppressionChannel.EMAIL:
        stripped = value.strip()
        if "@" not in stripped or stripped.startswith("@"):
            return SuppressionKind.DOMAIN
    return SuppressionKind.ADDRESS


def normalize_value(
    channel: SuppressionChannel,
    value: str,
    kind: SuppressionKind | None = None,
    field: str = "value",
    kind_field: str = "kind",
) -> tuple[SuppressionKind, str]:
    """The kind (given or inferred) and canonical value of an entry, or InvalidInput naming
    `field` (or `kind_field`)."""
    kind = kind or infer_kind(channel, value)
    if channel == SuppressionChannel.SMS:
        if kind != SuppressionKind.ADDRESS:
            raise InvalidInput.on(kind_field, "must be 'address': sms suppressions are numbers")
        return kind, normalize_identity("phone", value, field)
    if kind == SuppressionKind.DOMAIN:
        return kind, normalize_domain(value, field)
    return kind, normalize_identity("email", value, field)


def _lookup_form(channel: str, address: str) -> str:
    """An address as stored, for a lookup; one that does not normalize is looked up as is
    (lower-cased), and matches nothing unless the domain does."""
    try:
        if channel == SuppressionChannel.SMS:
            return normalize_identity("phone", address)
        return normalize_email(address.strip())
    except (InvalidInput, EmailNotValidError):
        return address.strip().lower()


def parent_domains(domain: str) -> list[str]:
    """The domain and its parents of two labels or more, most specific first."""
    labels = domain.split(".")
    return [".".join(labels[start:]) for start in range(len(labels) - 1)]


# ---------------------------------------------------------------- the policy and lookups


@dataclass(frozen=True, slots=True)
class SuppressionMatch:
    """The suppression that decides whether an address may be sent to."""

    id: str
    channel: str
    kind: str
    value: str
    type: str
    source: str

    @property
    def reason_code(self) -> str:
        """The exclusion reason of a message not sent for this match."""
        if self.kind == SuppressionKind.DOMAIN:
            return REASON_SUPPRESSED_DOMAIN
        return REASON_SUPPRESSED_ADDRESS


def blocks(match: SuppressionMatch | None, category: str, allow_complaints: bool) -> bool:
    """Whether a suppression forbids a message of `category`.

    Every suppression blocks marketing and transactional messages alike. A transactional
    channel configuration that allows complaint-suppressed recipients
    (`allow_complaint_suppressed`) may send to `spam_complaint` suppressions, and to no other
    type. `allow_complaints` means nothing for marketing.
    """
    if match is None:
        return False
    if category == Category.TRANSACTIONAL and allow_complaints:
        return match.type != SuppressionType.SPAM_COMPLAINT
    return True


def _precedence(match: SuppressionMatch) -> tuple[bool, bool, int]:
    # Lowest first: a type no policy lets through, an address over a domain, the most
    # specific domain. So blocks() on the chosen match answers as it would on all of them.
    return (
        match.type == SuppressionType.SPAM_COMPLAINT,
        match.kind == SuppressionKind.DOMAIN,
        -len(match.value),
    )


def _match(row: Any) -> SuppressionMatch:
    return SuppressionMatch(
        id=row.id,
        channel=row.channel,
        kind=row.kind,
        value=row.value,
        type=row.type,
        source=row.source,
    )


# Reads the entries of one kind among some values: (kind, values) -> the matches found.
FetchEntries = Callable[[SuppressionKind, Sequence[str]], Iterable[SuppressionMatch]]
MATCH_COLUMNS = ("id", "channel", "kind", "value", "type", "source")


def suppressed(
    conn: sa.Connection, workspace_id: str, channel: str, addresses: Iterable[str]
) -> dict[str, SuppressionMatch]:
    """The deciding suppression of each suppressed address, keyed by the address as given.

    One query for the addresses and, for email, one for their domains and parent domains
    (per 500 values). Addresses that are not suppressed are absent.
    """
    columns = [suppressions.c[name] for name in MATCH_COLUMNS]

    def fetch(kind: SuppressionKind, values: Sequence[str]) -> Iterable[SuppressionMatch]:
        rows = conn.execute(
            sa.select(*columns).where(
                suppressions.c.workspace_id == workspace_id,
                suppressions.c.channel == channel,
                suppressions.c.kind == kind.value,
                suppressions.c.value.in_(values),
            )
        ).all()
        return [_match(row) for row in rows]

    return match_addresses(fetch, channel, addresses)


def match_addresses(
    fetch: FetchEntries, channel: str, addresses: Iterable[str]
) -> dict[str, SuppressionMatch]:
    """`suppressed`, reading entries through `fetch` (one workspace's, on `channel`): for a
    caller on another kind of connection (delivery's bare sqlite3 claim)."""
    forms = {address: _lookup_form(channel, address) for address in addresses}
    if not forms:
        return {}

    def entries(kind: SuppressionKind, values: Iterable[str]) -> dict[str, SuppressionMatch]:
        found: dict[str, SuppressionMatch] = {}
        for chunk in _chunks(sorted(set(values))):
            found.update({match.value: match for match in fetch(kind, chunk)})
        return found

    by_address = entries(SuppressionKind.ADDRESS, forms.values())
    by_domain: dict[str, SuppressionMatch] = {}
    domains_of: dict[str, list[str]] = {}
    if channel == SuppressionChannel.EMAIL:
        for form in forms.values():
            _, at, domain = form.rpartition("@")
            if at and domain:
                domains_of[form] = parent_domains(domain)
        by_domain = entries(
            SuppressionKind.DOMAIN, (d for domains in domains_of.values() for d in domains)
        )
    found: dict[str, SuppressionMatch] = {}
    for address, form in forms.items():
        matches = [by_domain[d] for d in domains_of.get(form, ()) if d in by_domain]
        if form in by_address:
            matches.append(by_address[form])
        if matches:
            found[address] = min(matches, key=_precedence)
    return found


def suppression_for(
    conn: sa.Connection, workspace_id: str, channel: str, address: str
) -> SuppressionMatch | None:
    """The deciding suppression of one address, or None when it may be sent to."""
    return suppressed(conn, workspace_id, channel, [address]).get(address)


# ---------------------------------------------------------------- reading


def load(conn: sa.Connection, workspace_id: str, suppression_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            sa.select(suppressions).where(
                suppressions.c.id == suppression_id, suppressions.c.workspace_id == workspace_id
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def _load_by_key(conn: sa.Connection, workspace_id: str, key: Key) -> dict[str, Any] | None:
    channel, kind, value = key
    row = (
        conn.execute(
            sa.select(suppressions).where(
                suppressions.c.workspace_id == workspace_id,
                suppressions.c.channel == channel,
                suppressions.c.kind == kind,
                suppressions.c.value == value,
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def get(db: Database, workspace_id: str, suppression_id: str) -> dict[str, Any]:
    with db.read() as conn:
        row = load(conn, workspace_id, suppression_id)
    if row is None:
        raise NotFound(NOT_FOUND)
    return row


def _prefix(channel: SuppressionChannel | None, prefix: str) -> str:
    prefix = prefix.strip()
    if channel == SuppressionChannel.SMS:
        return "".join(prefix.split())
    return prefix.lower()


def list_page(
    db: Database,
    workspace_id: str,
    *,
    channel: SuppressionChannel | None = None,
    type: SuppressionType | None = None,
    kind: SuppressionKind | None = None,
    prefix: str | None = None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """Suppressions of the workspace, newest first, filtered."""
    query = sa.select(suppressions).where(suppressions.c.workspace_id == workspace_id)
    if channel is not None:
        query = query.where(suppressions.c.channel == channel.value)
    if type is not None:
        query = query.where(suppressions.c.type == type.value)
    if kind is not None:
        query = query.where(suppressions.c.kind == kind.value)
    if prefix:
        query = query.where(
            suppressions.c.value.startswith(_prefix(channel, prefix), autoescape=True)
        )
    with db.read() as conn:
        rows, next_cursor = keyset_page(
            conn, query, suppressions.c.id, cursor, limit, newest_first=True
        )
    return [dict(row) for row in rows], next_cursor


# ---------------------------------------------------------------- writing


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _new_row(
    workspace_id: str,
    key: Key,
    type: str,
    source: str,
    reason: str | None,
    now: datetime,
) -> dict[str, Any]:
    channel, kind, value = key
    return {
        "id": new_id(),
        "workspace_id": workspace_id,
        "channel": channel,
        "kind": kind,
        "value": value,
        "type": type,
        "source": source,
        "reason": reason,
        "soft_bounce_count": 0,
        "created_at": now,
        "updated_at": now,
    }


def _existing(conn: sa.Connection, workspace_id: str, keys: Iterable[Key]) -> set[Key]:
    by_group: dict[tuple[str, str], list[str]] = {}
    for channel, kind, value in keys:
        by_group.setdefault((channel, kind), []).append(value)
    found: set[Key] = set()
    for (channel, kind), values in by_group.items():
        for chunk in _chunks(values):
            rows = conn.execute(
                sa.select(suppressions.c.value).where(
                    suppressions.c.workspace_id == workspace_id,
                    suppressions.c.channel == channel,
                    suppressions.c.kind == kind,
                    suppressions.c.value.in_(chunk),
                )
            ).scalars()
            found.update((channel, kind, value) for value in rows)
    return found


def _upsert(
    conn: sa.Connection, workspace_id: str, rows: Mapping[Key, dict[str, Any]]
) -> tuple[int, int]:
    """Inserts the rows, or updates type, source, reason (when one is given) and updated_at of
    those suppressed already; (added, updated). One row per key (the caller deduplicates:
    PostgreSQL refuses to update a row twice in one statement)."""
    if not rows:
        return 0, 0
    existing = _existing(conn, workspace_id, rows.keys())
    statement = _insert(conn, suppressions)
    statement = statement.on_conflict_do_update(
        index_elements=["workspace_id", "channel", "kind", "value"],
        set_={
            "type": statement.excluded.type,
            "source": statement.excluded.source,
            "reason": sa.func.coalesce(statement.excluded.reason, suppressions.c.reason),
            "updated_at": statement.excluded.updated_at,
        },
    )
    values = list(rows.values())
    for start in range(0, len(values), IMPORT_BATCH):
        conn.execute(statement, values[start : start + IMPORT_BATCH])
    updated = len(existing)
    return len(rows) - updated, updated


@dataclass(slots=True)
class AddResult:
    """What an add changed, and the entries it could not use (with their index)."""

    added: int = 0
    updated: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _message(exc: InvalidInput) -> str:
    return exc.errors[0].message if exc.errors else exc.detail


def add_many(db: Database, workspace_id: str, entries: Sequence[SuppressionEntry]) -> AddResult:
    """Suppresses every valid entry (re-adding one updates its type, source and reason);
    invalid ones are listed in `rejected` with their index and the reason. A value given
    twice is written once, as its last entry says."""
    result = AddResult()
    now = utcnow()
    rows: dict[Key, dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        try:
            kind, value = normalize_value(
                entry.channel, entry.value, entry.kind, f"entries.{index}.value"
            )
        except InvalidInput as exc:
            result.rejected.append({"index": index, "value": entry.value, "reason": _message(exc)})
            continue
        key = (entry.channel.value, kind.value, value)
        rows.pop(key, None)
        rows[key] = _new_row(workspace_id, key, entry.type.value, entry.source, entry.reason, now)
    with db.write() as conn:
        result.added, result.updated = _upsert(conn, workspace_id, rows)
    return result


def add_one(
    db: Database, workspace_id: str, entry: SuppressionEntry
) -> tuple[dict[str, Any], bool]:
    """Suppresses one entry (or updates it); the row, and whether it is new. An invalid value
    is an InvalidInput naming `value` (or `kind`)."""
    kind, value = normalize_value(entry.channel, entry.value, entry.kind)
    key = (entry.channel.value, kind.value, value)
    new = _new_row(workspace_id, key, entry.type.value, entry.source, entry.reason, utcnow())
    with db.write() as conn:
        added, _ = _upsert(conn, workspace_id, {key: new})
        row = _load_by_key(conn, workspace_id, key)
    assert row is not None
    return row, bool(added)


def remove(db: Database, workspace_id: str, suppression_id: str) -> None:
    with db.write() as conn:
        outcome = conn.execute(
            suppressions.delete().where(
                suppressions.c.id == suppression_id, suppressions.c.workspace_id == workspace_id
            )
        )
    if not outcome.rowcount:
        raise NotFound(NOT_FOUND)


def remove_value(
    db: Database,
    workspace_id: str,
    channel: SuppressionChannel,
    value: str,
    kind: SuppressionKind | None = None,
) -> dict[str, Any]:
    """Removes the suppression of a value (normalized as adding does); the row removed."""
    kind, normalized = normalize_value(channel, value, kind)
    key = (channel.value, kind.value, normalized)
    with db.write() as conn:
        row = _load_by_key(conn, workspace_id, key)
        if row is None:
            raise NotFound(f"{normalized} is not suppressed for {channel.value} in this workspace")
        conn.execute(suppressions.delete().where(suppressions.c.id == row["id"]))
    return row


# ---------------------------------------------------------------- soft bounces


@dataclass(frozen=True, slots=True)
class SoftBounce:
    """Soft bounces counted for an address, and whether it is suppressed now."""

    count: int
    suppressed: bool
    created: bool = False


def record_soft_bounce(
    conn: sa.Connection,
    workspace_id: str,
    address: str,
    source: str,
    now: datetime,
    *,
    channel: str = SuppressionChannel.EMAIL,
    threshold: int = DEFAULT_SOFT_BOUNCE_THRESHOLD,
) -> SoftBounce:
    """Counts a soft bounce of `address`; at `threshold` (TIDINGS_SOFT_BOUNCE_THRESHOLD) the
    address becomes a `soft_bounce` suppression. An address suppressed already keeps its type
    and counts on. Runs in the caller's transaction; raises InvalidInput for an address that
    does not normalize."""
    kind, value = normalize_value(
        SuppressionChannel(channel), address, SuppressionKind.ADDRESS, "address"
    )
    key = (str(channel), kind.value, value)
    present = conn.execute(
        suppressions.update()
        .where(
            suppressions.c.workspace_id == workspace_id,
            suppressions.c.channel == key[0],
            suppressions.c.kind == key[1],
            suppressions.c.value == value,
        )
        .values(soft_bounce_count=suppressions.c.soft_bounce_count + 1, updated_at=now)
        .returning(suppressions.c.soft_bounce_count)
    ).scalar_one_or_none()
    if present is not None:
        return SoftBounce(count=present, suppressed=True)
    counter = suppression_soft_bounces.c
    where = (
        counter.workspace_id == workspace_id,
        counter.channel == key[0],
        counter.value == value,
    )
    statement = _insert(conn, suppression_soft_bounces).values(
        workspace_id=workspace_id, channel=key[0], value=value, count=1, first_at=now, last_at=now
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["workspace_id", "channel", "value"],
            set_={"count": counter.count + 1, "last_at": now},
        )
    )
    count: int = conn.execute(sa.select(counter.count).where(*where)).scalar_one()
    if count < threshold:
        return SoftBounce(count=count, suppressed=False)
    row = _new_row(
        workspace_id,
        key,
        SuppressionType.SOFT_BOUNCE.value,
        source[:MAX_SOURCE_LENGTH],
        f"{count} soft bounces",
        now,
    )
    row["soft_bounce_count"] = count
    conn.execute(_insert(conn, suppressions).on_conflict_do_nothing(), [row])
    conn.execute(suppression_soft_bounces.delete().where(*where))
    return SoftBounce(count=count, suppressed=True, created=True)


def reset_soft_bounces(
    conn: sa.Connection,
    workspace_id: str,
    address: str,
    *,
    channel: str = SuppressionChannel.EMAIL,
) -> None:
    """Forgets the soft bounces of an address that is not suppressed (after a delivery that
    succeeded: the threshold counts bounces in a row)."""
    value = _lookup_form(channel, address)
    counter = suppression_soft_bounces.c
    conn.execute(
        suppression_soft_bounces.delete().where(
            counter.workspace_id == workspace_id, counter.channel == channel, counter.value == value
        )
    )


# ---------------------------------------------------------------- CSV import


class SuppressionImport:
    """Imports a CSV stream fed in chunks of bytes, writing each batch of 1,000 rows in a
    transaction of its own: memory stays flat whatever the size. Not atomic: the batches
    written before a failure stay (adding is an upsert, so importing again is safe).

    The first line is a header naming the columns: `value` (required), `type` (default
    `manual`), `reason`, and optionally `kind` and `channel` (default: the import's). Blank
    lines are skipped; rows that cannot be used are reported with their line number. A header
    that is missing or names unknown columns is an InvalidInput before anything is written.
    """

    def __init__(
        self,
        db: Database,
        workspace_id: str,
        *,
        channel: SuppressionChannel = SuppressionChannel.EMAIL,
        source: str = "csv",
        batch_size: int = IMPORT_BATCH,
    ) -> None:
        self.db = db
        self.workspace_id = workspace_id
        self.channel = channel
        self.source = source
        self.batch_size = batch_size
        self.imported = 0
        self.updated = 0
        self.rejected: list[dict[str, Any]] = []
        self.rejected_count = 0
        self.lines = 0
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._buffer = ""
        self._skipping = False
        self._record: list[str] = []
        self._record_line = 0
        self._record_chars = 0
        self._columns: list[str] | None = None
        self._pending: dict[Key, dict[str, Any]] = {}
        self._now = utcnow()

    # -- input

    def feed(self, data: bytes) -> None:
        """Takes the next chunk of the file; writes a batch when one is full."""
        self._take(self._decoder.decode(data))
        if len(self._pending) >= self.batch_size:
            self._write()

    def finish(self) -> dict[str, Any]:
        """Reads what is left, writes the last batch, and answers the report."""
        self._take(self._decoder.decode(b"", final=True))
        if self._skipping:
            self._skipping = False
            self._reject(self.lines + 1, f"is longer than {MAX_LINE_CHARS} characters")
            self.lines += 1
        elif self._buffer:
            self.lines += 1
            self._physical(self._buffer, self.lines)
            self._buffer = ""
        if self._record:
            self._reject(self._record_line, "has a quoted value that is never closed")
            self._record = []
        if self._columns is None:
            raise InvalidInput.on(
                "body", "is empty; the first line must be a header such as value,type,reason"
            )
        self._write()
        return self.report()

    def report(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "updated": self.updated,
            "rejected": list(self.rejected),
            "rejected_count": self.rejected_count,
            "lines": self.lines,
        }

    def _take(self, text: str) -> None:
        if not text:
            return
        pieces = text.split("\n")
        last = pieces.pop()
        for piece in pieces:
            self.lines += 1
            if self._skipping:
                self._skipping = False
                self._buffer = ""
                self._reject(self.lines, f"is longer than {MAX_LINE_CHARS} characters")
                continue
            line = self._buffer + piece if self._buffer else piece
            self._buffer = ""
            self._physical(line, self.lines)
        if not self._skipping:
            self._buffer += last
            if len(self._buffer) > MAX_LINE_CHARS:
                self._skipping = True
                self._buffer = ""

    def _physical(self, line: str, number: int) -> None:
        line = line.removesuffix("\r")
        if self._record:
            # Inside a quoted value that spans lines.
            self._record.append(line)
            self._record_chars += len(line)
            if self._record_chars > MAX_LINE_CHARS:
                self._reject(self._record_line, f"is longer than {MAX_LINE_CHARS} characters")
                self._record = []
            elif line.count('"') % 2:
                record, self._record = "\n".join(self._record), []
                self._row(record, self._record_line)
            return
        if len(line) > MAX_LINE_CHARS:
            self._reject(number, f"is longer than {MAX_LINE_CHARS} characters")
            return
        if line.count('"') % 2:
            self._record, self._record_line, self._record_chars = [line], number, len(line)
            return
        self._row(line, number)

    # -- rows

    def _reject(self, line: int, reason: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_REPORTED_REJECTIONS:
            self.rejected.append({"line": line, "reason": reason})

    def _header(self, fields: list[str], line: int) -> None:
        columns = [name.strip().lower() for name in fields]
        if "value" not in columns:
            raise InvalidInput.on(
                "body",
                f"line {line} must be a header naming the columns, such as value,type,reason",
            )
        for name in columns:
            if name not in CSV_COLUMNS:
                raise InvalidInput.on(
                    "body",
                    f"line {line}: unknown column '{name}'; columns are {', '.join(CSV_COLUMNS)}",
                )
            if columns.count(name) > 1:
                raise InvalidInput.on("body", f"line {line}: column '{name}' appears twice")
        self._columns = columns

    def _row(self, record: str, line: int) -> None:
        if not record.strip():
            return
        try:
            fields = next(csv.reader([record]))
        except csv.Error as error:  # e.g. a bare carriage return inside an unquoted field
            if self._columns is None:
                raise InvalidInput.on("body", f"line {line} is not CSV: {error}") from None
            self._reject(line, f"is not CSV: {error}")
            return
        if self._columns is None:
            self._header(fields, line)
            return
        if len(fields) > len(self._columns):
            self._reject(
                line, f"has {len(fields)} values; the header names {len(self._columns)} columns"
            )
            return
        row = dict(zip(self._columns, (f.strip() for f in fields), strict=False))
        if "\ufffd" in record:
            self._reject(line, "is not valid UTF-8")
            return
        try:
            channel = SuppressionChannel(row.get("channel") or self.channel)
        except ValueError:
            self._reject(line, f"channel '{row['channel']}' is not one of {_CHANNELS}")
            return
        try:
            type = SuppressionType(row.get("type") or SuppressionType.MANUAL)
        except ValueError:
            self._reject(line, f"type '{row['type']}' is not one of {_TYPES}")
            return
        try:
            kind = SuppressionKind(row["kind"]) if row.get("kind") else None
        except ValueError:
            self._reject(line, f"kind '{row['kind']}' is not one of {_KINDS}")
            return
        reason = row.get("reason") or None
        if reason is not None and len(reason) > MAX_REASON_LENGTH:
            self._reject(line, f"reason is longer than {MAX_REASON_LENGTH} characters")
            return
        value = row.get("value", "")
        if not value:
            self._reject(line, "value is empty")
            return
        try:
            kind, normalized = normalize_value(channel, value, kind)
        except InvalidInput as exc:
            self._reject(line, " ".join(f"{e.field} {e.message}" for e in exc.errors))
            return
        key = (channel.value, kind.value, normalized)
        if self._pending.pop(key, None) is not None:
            self.updated += 1  # the same value twice in a batch: the last row wins
        self._pending[key] = _new_row(
            self.workspace_id, key, type.value, self.source, reason, self._now
        )

    def _write(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, {}
        with self.db.write() as conn:
            added, updated = _upsert(conn, self.workspace_id, rows)
        self.imported += added
        self.updated += updated


def import_csv(
    db: Database,
    workspace_id: str,
    chunks: Iterable[bytes],
    *,
    channel: SuppressionChannel = SuppressionChannel.EMAIL,
    source: str = "csv",
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Imports a CSV file given as chunks of bytes (see SuppressionImport); the report."""
    job = SuppressionImport(db, workspace_id, channel=channel, source=source)
    for chunk in chunks:
        job.feed(chunk)
        if on_progress is not None:
            on_progress(len(chunk))
    return job.finish()


# ---------------------------------------------------------------- unsubscribes without a profile


def suppress_unless_suppressed(
    conn: sa.Connection,
    workspace_id: str,
    channel: SuppressionChannel,
    address: str,
    *,
    source: str,
    reason: str | None,
    now: datetime,
) -> bool:
    """Adds a `manual` suppression of one address unless a suppression covers it already (its
    own entry or a domain's), which then keeps its type and source: an unsubscribe must not
    turn a hard bounce or a complaint into something weaker. True when it added one; an
    address that does not normalize is an InvalidInput. For the unsubscribe of a recipient
    without a profile to hold consent (tidings.unsubscribe)."""
    kind, value = normalize_value(channel, address, SuppressionKind.ADDRESS)
    if suppression_for(conn, workspace_id, channel.value, value) is not None:
        return False
    row = _new_row(
        workspace_id,
        (channel.value, kind.value, value),
        SuppressionType.MANUAL.value,
        source,
        reason,
        now,
    )
    inserted = conn.execute(
        _insert(conn, suppressions)
        .values(row)
        .on_conflict_do_nothing(index_elements=["workspace_id", "channel", "kind", "value"])
    )
    return bool(inserted.rowcount)
