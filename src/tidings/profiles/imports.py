"""Bulk import of profiles from CSV or JSON Lines. Knows nothing of HTTP.

The file arrives as a stream of chunks (bytes or str, lines or any pieces) and is read one row
at a time: a row is framed (a line; for CSV, lines joined while a quoted field is open), parsed
and checked on its own, and a bad row is rejected alone with its line and reason. Good rows are
upserted by identity with PATCH's merge semantics, `BATCH_ROWS` rows per transaction, with one
IN query per namespace for the identities of a batch. Memory holds one batch and the report
(its list of rejections capped), whatever the size of the file.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from tidings.clock import utcnow
from tidings.content.schemas import field_path
from tidings.db import Database
from tidings.db.bulk import bulk_insert
from tidings.errors import ErrorCollector, FieldError, InvalidInput
from tidings.ids import new_id
from tidings.profiles import consent_history, service
from tidings.profiles.models import profile_identities, profiles
from tidings.profiles.schemas import (
    LOCALE_PATTERN,
    MAX_ATTRIBUTE_BYTES,
    MAX_ATTRIBUTE_DEPTH,
    ConsentStatus,
    ImportFormat,
    ProfileUpsert,
)
from tidings.vocabulary import EMAIL_NAMESPACE, NAMESPACE_PATTERN, PHONE_NAMESPACE, Channel

MAX_ROW_BYTES = 64 * 1024
BATCH_ROWS = 500
MAX_REJECTED_LISTED = 1000
# Attribute paths already recorded by this import, not sent again with each batch.
MAX_PATHS_REMEMBERED = 10_000
MAX_IDENTITY_CHARS = 320
SOURCE = "import"

CSV_MEDIA_TYPES = frozenset({"text/csv", "application/csv"})
JSONL_MEDIA_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
_SUFFIXES = {".csv": ImportFormat.CSV, ".jsonl": ImportFormat.JSONL, ".ndjson": ImportFormat.JSONL}
_NAMESPACE = re.compile(NAMESPACE_PATTERN)
_LOCALE = re.compile(LOCALE_PATTERN)
_CONSENT_VALUES = {status.value: status for status in ConsentStatus}
_QUOTE = ord('"')
_COMMA = ord(",")
_NEWLINE = ord("\n")

Chunk = bytes | str


# ---------------------------------------------------------------- the report


@dataclass(slots=True)
class ImportReport:
    """What an import did so far; `rejected` lists the first MAX_REJECTED_LISTED rejections,
    `rejected_total` counts them all."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rejected_total: int = 0
    lines: int = 0

    def reject(self, line: int, reason: str) -> None:
        self.rejected_total += 1
        if len(self.rejected) < MAX_REJECTED_LISTED:
            self.rejected.append({"line": line, "reason": reason})

    def after(self, outcome: _Outcome, lines: int) -> ImportReport:
        """A copy with a batch's outcome counted: the report as it is once the batch commits."""
        report = ImportReport(
            self.created + outcome.created,
            self.updated + outcome.updated,
            self.unchanged + outcome.unchanged,
            list(self.rejected),
            self.rejected_total,
            lines,
        )
        for line, reason in sorted(outcome.rejected):
            report.reject(line, reason)
        return report

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": list(self.rejected),
            "rejected_total": self.rejected_total,
            "lines": self.lines,
        }


# ---------------------------------------------------------------- formats


def format_for(requested: ImportFormat | None, content_type: str | None) -> ImportFormat:
    """The format asked for, else the one a Content-Type names."""
    if requested is not None:
        return requested
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type in CSV_MEDIA_TYPES:
        return ImportFormat.CSV
    if media_type in JSONL_MEDIA_TYPES:
        return ImportFormat.JSONL
    raise InvalidInput.on(
        "format",
        "name the format: ?format=csv or ?format=jsonl, or a Content-Type of text/csv or "
        "application/x-ndjson",
    )


def format_of_path(path: PurePath) -> ImportFormat | None:
    """The format a file name suggests (.csv, .jsonl, .ndjson), if any."""
    return _SUFFIXES.get(path.suffix.lower())


# ---------------------------------------------------------------- framing


@dataclass(frozen=True, slots=True)
class Record:
    """One row of the file: the line it starts on and its bytes, None when it is too large."""

    line: int
    data: bytes | None
    problem: str | None = None


class _QuoteTracker:
    """Whether a CSV record is inside a quoted field, fed piece by piece (pieces may split a
    line anywhere). A quote opens a field only at the start of one, as csv reads it."""

    __slots__ = ("at_field_start", "open", "pending")

    def __init__(self) -> None:
        self.open = False
        self.pending = False  # inside quotes, the last piece ended on a quote
        self.at_field_start = True

    def reset(self) -> None:
        self.open = self.pending = False
        self.at_field_start = True

    def feed(self, piece: bytes) -> None:
        size = len(piece)
        if not size:
            return
        index = 0
        if self.pending:
            self.pending = False
            if piece[0] == _QUOTE:
                index = 1  # an escaped quote
            else:
                self.open = False
        while True:
            found = piece.find(b'"', index)
            if found < 0:
                break
            if self.open:
                if found + 1 == size:
                    self.pending = True
                    break
                if piece[found + 1] == _QUOTE:
                    index = found + 2
                    continue
                self.open = False
            elif (found == 0 and self.at_field_start) or (found and piece[found - 1] == _COMMA):
                self.open = True
            index = found + 1
        self.at_field_start = piece[-1] in (_COMMA, _NEWLINE)


class Framer:
    """Splits chunks into records: one per line, or for CSV, lines joined while a quoted field
    is open. Holds at most one record, and none over `max_bytes` (the rest of such a record
    is read and dropped). `lines` counts the lines read so far."""

    def __init__(self, max_bytes: int = MAX_ROW_BYTES, *, csv_quotes: bool = False) -> None:
        self.max_bytes = max_bytes
        self.quotes = _QuoteTracker() if csv_quotes else None
        self.lines = 0

    def records(self, chunks: Iterable[Chunk]) -> Iterator[Record]:
        parts: list[bytes] = []
        size = 0
        start = 1
        quotes = self.quotes
        for chunk in chunks:
            data = chunk.encode("utf-8", "surrogatepass") if isinstance(chunk, str) else chunk
            position, end = 0, len(data)
            while position < end:
                newline = data.find(b"\n", position)
                stop = end if newline < 0 else newline + 1
                piece = data[position:stop] if position or stop != end else data
                position = stop
                size += len(piece)
                if size <= self.max_bytes:
                    parts.append(piece)
                elif parts:
                    parts = []
                if quotes is not None:
                    quotes.feed(piece)
                if newline < 0:
                    break
                self.lines += 1
                if quotes is not None:
                    if quotes.open:
                        continue
                    quotes.reset()
                yield self._record(start, parts, size)
                parts, size, start = [], 0, self.lines + 1
        if size:
            self.lines += 1
            problem = None
            if quotes is not None and (quotes.open or quotes.pending) and size <= self.max_bytes:
                problem = "opens a quoted field that the file never closes"
            record = self._record(start, parts, size)
            yield Record(record.line, record.data, problem) if problem else record

    def _record(self, start: int, parts: list[bytes], size: int) -> Record:
        if size > self.max_bytes:
            return Record(start, None, f"is larger than {self.max_bytes} bytes")
        return Record(start, parts[0] if len(parts) == 1 else b"".join(parts))


# ---------------------------------------------------------------- parsing rows


@dataclass(frozen=True, slots=True)
class Row:
    """A row ready to upsert: its line, its identities (normalized) and the changes."""

    line: int
    identities: frozenset[tuple[str, str]]
    body: ProfileUpsert
    # The attribute paths of `body`, when the parser knows them (else computed when written).
    paths: frozenset[str] | None = None


class RowProblem(Exception):
    """A row that cannot be imported; the message is the reason reported."""


def _reason(errors: Iterable[FieldError]) -> str:
    return "; ".join(
        f"{error.field}: {error.message}" if error.field else error.message for error in errors
    )


def _text(record: Record) -> str:
    assert record.data is not None
    data = record.data
    if record.line == 1 and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RowProblem("is not valid UTF-8") from None
    if "\x00" in text:
        raise RowProblem("contains a NUL character")
    return text.rstrip("\r\n")


def _checked(
    line: int,
    named: list[tuple[str, str, str]],
    body: ProfileUpsert,
    paths: frozenset[str] | None = None,
) -> Row:
    if not named:
        raise RowProblem("names no identity")
    try:
        wanted = service.check_upsert(named, body, attributes_checked=paths is not None)
    except InvalidInput as exc:
        raise RowProblem(_reason(exc.errors) or exc.detail) from None
    return Row(line, frozenset(wanted), body, paths)


class JsonLinesRows:
    """Rows of JSON Lines: an object per line with PATCH's body, `identities` required."""

    def parse(self, record: Record) -> Row | None:
        text = _text(record)
        if not text.strip():
            return None
        try:
            body = ProfileUpsert.model_validate_json(text)
        except ValidationError as exc:
            if any(error["type"] == "json_invalid" for error in exc.errors()):
                raise RowProblem("is not valid JSON") from None
            raise RowProblem(
                _reason(
                    FieldError(field_path(tuple(error["loc"])), error["msg"])
                    for error in exc.errors()
                )
            ) from None
        if body.push_tokens:
            # Tokens come from devices, one at a time, as they register.
            raise RowProblem("push_tokens: are not imported; register them per profile")
        return _checked(record.line, service.body_identities(body), body)


@dataclass(frozen=True, slots=True)
class Column:
    """What a CSV column holds: `kind` is identity (key: the namespace), attribute (path),
    consent (key: the channel), timezone or locale."""

    name: str
    kind: str
    key: str = ""
    path: tuple[str, ...] = ()


def parse_header(cells: list[str], line: int = 1) -> list[Column]:
    """The columns a header row names; InvalidInput lists every problem with its column."""
    errors = ErrorCollector()
    columns: list[Column] = []
    positions: list[tuple[int, Column]] = []
    seen: set[str] = set()
    paths: set[tuple[str, ...]] = set()
    for index, raw in enumerate(cells):
        name = raw.strip()
        position = {"line": line, "column": index + 1}
        lowered = name.lower()
        column: Column | None = None
        if not name:
            errors.add("header", f"column {index + 1} has no name", **position)
        elif name in seen:
            errors.add("header", f"column '{name}' appears twice", **position)
        elif lowered in (EMAIL_NAMESPACE, PHONE_NAMESPACE):
            column = Column(name, "identity", lowered)
        elif lowered in ("timezone", "locale"):
            column = Column(name, lowered)
        elif lowered.startswith("identity:"):
            namespace = name[len("identity:") :]
            if _NAMESPACE.match(namespace):
                column = Column(name, "identity", namespace)
            else:
                errors.add(
                    "header",
                    f"'{name}': a namespace starts with a letter and has up to 64 letters, "
                    "digits, '_', '.' or '-'",
                    **position,
                )
        elif lowered.startswith("consent:"):
            channel = lowered[len("consent:") :]
            if channel in {c.value for c in Channel}:
                column = Column(name, "consent", channel)
            else:
                errors.add(
                    "header", f"'{name}': consent is per channel: email, sms or push", **position
                )
        else:
            path = tuple(name.split("."))
            if not all(path):
                errors.add("header", f"'{name}': an attribute path has no empty part", **position)
            elif len(path) > MAX_ATTRIBUTE_DEPTH:
                errors.add(
                    "header",
                    f"'{name}': nests deeper than {MAX_ATTRIBUTE_DEPTH} levels",
                    **position,
                )
            else:
                column = Column(name, "attribute", path=path)
                paths.add(path)
        seen.add(name)
        if column is not None:
            columns.append(column)
            positions.append((index, column))
    for index, column in positions:
        if column.kind == "attribute":
            for length in range(1, len(column.path)):
                if column.path[:length] in paths:
                    outer = ".".join(column.path[:length])
                    errors.add(
                        "header",
                        f"'{column.name}' is inside '{outer}', another column",
                        line=line,
                        column=index + 1,
                    )
                    break
    if not errors.errors and not any(column.kind == "identity" for column in columns):
        errors.add(
            "header",
            "names no identity column: email, phone or identity:<namespace>",
            line=line,
        )
    errors.raise_if_any("the CSV header is invalid")
    return columns


class CsvRows:
    """Rows of CSV under a header row; an empty cell means "not given"."""

    def __init__(self) -> None:
        self.columns: list[Column] | None = None
        self.header_bytes = 0
        # Attribute paths by the attribute columns a row fills (rows of a file are alike).
        self._paths: dict[tuple[int, ...], frozenset[str]] = {}

    def _paths_of(self, filled: tuple[int, ...]) -> frozenset[str]:
        paths = self._paths.get(filled)
        if paths is None:
            assert self.columns is not None
            every = {
                ".".join(self.columns[index].path[:length])
                for index in filled
                for length in range(1, len(self.columns[index].path) + 1)
            }
            kept = sorted(path for path in every if len(path) <= service.MAX_PATH_CHARS)
            paths = frozenset(kept[: service.MAX_TRACKED_PATHS])
            if len(self._paths) < 1024:
                self._paths[filled] = paths
        return paths

    @staticmethod
    def _cells(text: str) -> list[str]:
        if '"' not in text:
            return text.split(",")
        try:
            return next(csv.reader((text,), strict=True))
        except csv.Error as exc:
            raise RowProblem(f"is not valid CSV ({exc})") from None

    def parse(self, record: Record) -> Row | None:
        if self.columns is None:
            try:
                text = _text(record)
                cells = self._cells(text) if text.strip() else None
            except RowProblem as exc:
                raise InvalidInput(
                    "the CSV header is invalid",
                    errors=[FieldError("header", str(exc), line=record.line)],
                ) from None
            if cells is not None:
                self.columns = parse_header(cells, record.line)
                self.header_bytes = len(record.data or b"")
            return None
        text = _text(record)
        if not text.strip():
            return None
        columns = self.columns
        cells = self._cells(text)
        if len(cells) != len(columns):
            raise RowProblem(f"has {len(cells)} cells where the header has {len(columns)}")
        named: list[tuple[str, str, str]] = []
        attributes: dict[str, Any] = {}
        consent: dict[Channel, ConsentStatus] = {}
        values: dict[str, Any] = {}
        errors = ErrorCollector()
        filled: list[int] = []
        for index, (column, cell) in enumerate(zip(columns, cells, strict=True)):
            if not cell or cell.isspace():
                continue
            kind = column.kind
            if kind == "attribute":
                filled.append(index)
                path = column.path
                target = attributes
                for part in path[:-1]:
                    target = target.setdefault(part, {})
                target[path[-1]] = cell
            elif kind == "identity":
                if len(cell) > MAX_IDENTITY_CHARS:
                    errors.add(column.name, f"has more than {MAX_IDENTITY_CHARS} characters")
                else:
                    named.append((column.key, cell, column.name))
            elif kind == "consent":
                status = _CONSENT_VALUES.get(cell.strip().lower())
                if status is None:
                    errors.add(column.name, "must be in, out or unset")
                else:
                    consent[Channel(column.key)] = status
            elif kind == "locale":
                locale = cell.strip()
                if _LOCALE.match(locale):
                    values["locale"] = locale
                else:
                    errors.add(column.name, "is not a language tag such as fr-FR")
            else:
                values["timezone"] = cell.strip()
        if errors.errors:
            raise RowProblem(_reason(errors.errors))
        body = ProfileUpsert.model_construct(
            _fields_set={"attributes", "consent", *values},
            identities=[],
            attributes=attributes,
            consent=consent,
            timezone=values.get("timezone"),
            locale=values.get("locale"),
            # Every field given: for a missing one, pydantic 2.14's model_construct inspects
            # its default_factory's signature on each call (~200 us a row, most of an import).
            push_tokens=[],
        )
        # Attributes of text cells under a valid header: no NUL (refused above), nested no
        # deeper than the header allows; and small enough as JSON when the row and header
        # are (escaping at most triples a UTF-8 byte). Else the full checks run.
        small = 3 * (len(record.data or b"") + self.header_bytes) < MAX_ATTRIBUTE_BYTES
        paths = self._paths_of(tuple(filled)) if small else None
        return _checked(record.line, named, body, paths)


# ---------------------------------------------------------------- writing batches


@dataclass(slots=True)
class _Outcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    paths: set[str] = field(default_factory=set)

    def add(self, other: _Outcome) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.rejected.extend(other.rejected)
        self.paths |= other.paths

    def plus(self, other: _Outcome) -> _Outcome:
        both = _Outcome()
        both.add(self)
        both.add(other)
        return both


# Called inside the transaction of each batch with what the batch did, before it commits.
CommitHook = Callable[[sa.Connection, _Outcome], None]


_COMPARED = ("attributes", "consent", "timezone", "locale")
_NEW_PROFILE: Mapping[str, Any] = {
    "attributes": {},
    "consent": {},
    "timezone": None,
    "locale": None,
}
_UPDATE = (
    profiles.update()
    .where(profiles.c.id == sa.bindparam("profile_id"))
    .values(
        attributes=sa.bindparam("attributes"),
        consent=sa.bindparam("consent"),
        timezone=sa.bindparam("timezone"),
        locale=sa.bindparam("locale"),
        updated_at=sa.bindparam("updated_at"),
    )
)


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """bulk_insert; on PostgreSQL, with RETURNING so that SQLAlchemy sends multi-row VALUES
    (a statement per 1,000 rows) rather than psycopg's executemany (a row at a time)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(table.insert().returning(*table.primary_key.columns), rows).all()
    else:
        bulk_insert(conn, table, rows)


def _apply(
    conn: sa.Connection,
    workspace_id: str,
    rows: list[Row],
    now: datetime,
    known_paths: set[str],
    consent_detail: str | None = None,
) -> _Outcome:
    """Upserts the rows of a batch in one transaction: identities and profiles read with one
    query per namespace and chunk, the rows applied in memory in file order (a later row sees
    what an earlier one did), then bulk inserts and one executemany UPDATE; the consent
    history of the rows whose consent changed goes in with one multi-row INSERT."""
    outcome = _Outcome()
    owners = service.owners_of(conn, workspace_id, {i for row in rows for i in row.identities})
    stored = service.load_rows_for_update(conn, workspace_id, owners.values())
    states: dict[str, dict[str, Any]] = {}
    created: list[str] = []
    new_identities: list[dict[str, Any]] = []
    consent_changes: list[dict[str, Any]] = []
    for row in rows:
        owner_ids = {owners[identity] for identity in row.identities if identity in owners}
        if len(owner_ids) > 1:
            outcome.rejected.append((row.line, service.IDENTITIES_OF_SEVERAL_PROFILES))
            continue
        current: Mapping[str, Any] | None
        if owner_ids:
            profile_id = owner_ids.pop()
            current = states.get(profile_id) or stored.get(profile_id)
            if current is None:  # deleted since its identities were read
                outcome.rejected.append((row.line, service.CONCURRENT_CHANGE))
                continue
        else:
            profile_id, current = new_id(), _NEW_PROFILE
            created.append(profile_id)
        values = service.changed_values(current, row.body, now, merge=True, source=SOURCE)
        added = [identity for identity in row.identities if identity not in owners]
        for identity in sorted(added):
            owners[identity] = profile_id
            new_identities.append(
                {
                    "workspace_id": workspace_id,
                    "namespace": identity[0],
                    "value": identity[1],
                    "profile_id": profile_id,
                }
            )
        if current is _NEW_PROFILE:
            outcome.created += 1
        elif added or any(values[name] != current[name] for name in _COMPARED):
            outcome.updated += 1
        else:
            outcome.unchanged += 1
            continue
        states[profile_id] = values
        if row.body.consent:
            consent_changes += consent_history.changes(
                workspace_id,
                profile_id,
                current["consent"],
                values["consent"],
                SOURCE,
                now,
                consent_detail,
            )
        paths = row.paths
        if paths is None:
            paths = frozenset(service.attribute_paths_of(row.body.attributes))
        outcome.paths.update(paths - known_paths)
    new = set(created)
    _insert(
        conn,
        profiles,
        [
            {
                "id": profile_id,
                "workspace_id": workspace_id,
                "created_at": now,
                **states[profile_id],
            }
            for profile_id in created
        ],
    )
    _insert(conn, profile_identities, new_identities)
    updates = [
        {"profile_id": profile_id, **values}
        for profile_id, values in states.items()
        if profile_id not in new
    ]
    if updates:
        conn.execute(_UPDATE, updates)
    consent_history.record(conn, consent_changes)
    service.remember_paths(conn, workspace_id, sorted(outcome.paths), now)
    return outcome


def _commit(
    db: Database,
    workspace_id: str,
    rows: list[Row],
    known_paths: set[str],
    on_commit: CommitHook | None = None,
    consent_detail: str | None = None,
) -> _Outcome:
    """One transaction for the batch. A batch that a concurrent writer beat to an identity is
    read again and retried once; if it still fails, or the database refuses a value, its rows
    are applied one per transaction so only the offending row is rejected. `on_commit` runs
    in each transaction that commits rows, with all this batch has done once it commits."""
    for attempt in range(2):
        try:
            with db.write() as conn:
                outcome = _apply(conn, workspace_id, rows, utcnow(), known_paths, consent_detail)
                if on_commit is not None:
                    on_commit(conn, outcome)
                return outcome
        except sa.exc.IntegrityError:
            reason = service.CONCURRENT_CHANGE
            if attempt == 0:
                continue
        except InvalidInput as exc:  # a value the database cannot store
            reason = exc.errors[0].message if exc.errors else exc.detail
        break
    if len(rows) == 1:
        return _Outcome(rejected=[(rows[0].line, reason)])
    outcome = _Outcome()
    for row in rows:
        hook: CommitHook | None = None
        if on_commit is not None:
            hook = _after(on_commit, outcome.plus(_Outcome()))
        outcome.add(_commit(db, workspace_id, [row], known_paths, hook, consent_detail))
    return outcome


def _after(on_commit: CommitHook, before: _Outcome) -> CommitHook:
    """The hook of one row of a batch applied row by row: it sees the rows before it too."""
    return lambda conn, outcome: on_commit(conn, before.plus(outcome))


# ---------------------------------------------------------------- the import


def import_profiles(
    db: Database,
    workspace_id: str,
    chunks: Iterable[Chunk],
    fmt: ImportFormat,
    *,
    batch_rows: int = BATCH_ROWS,
    max_row_bytes: int = MAX_ROW_BYTES,
    on_batch: Callable[[ImportReport], None] | None = None,
    on_commit: Callable[[sa.Connection, ImportReport], None] | None = None,
    job_id: str | None = None,
) -> ImportReport:
    """Imports profiles from `chunks` (the file's bytes or text in pieces of any size) into the
    workspace, upserting by identity with PATCH's merge semantics (attributes merged key by
    key at the top level, consent changes recorded with source "import").

    Rows are committed batch by batch: an error that ends the import (a bad CSV header,
    InvalidInput; the body's source failing) leaves the batches before it imported, and
    importing the same file again is harmless. `on_batch` sees the report after each batch;
    `on_commit`, inside the transaction of each batch, the report as it is once the batch
    commits (to record progress that is exactly what was committed). `job_id`, the import job
    this is, goes into the detail of the consent history rows it writes.
    """
    report = ImportReport()
    framer = Framer(max_row_bytes, csv_quotes=fmt is ImportFormat.CSV)
    parser: CsvRows | JsonLinesRows = CsvRows() if fmt is ImportFormat.CSV else JsonLinesRows()
    known_paths: set[str] = set()
    batch: list[Row] = []

    def in_transaction(conn: sa.Connection, outcome: _Outcome) -> None:
        assert on_commit is not None
        on_commit(conn, report.after(outcome, framer.lines))

    hook = in_transaction if on_commit is not None else None
    consent_detail = f"import:{job_id}" if job_id is not None else None

    def flush() -> None:
        outcome = _commit(db, workspace_id, batch, known_paths, hook, consent_detail)
        batch.clear()
        report.created += outcome.created
        report.updated += outcome.updated
        report.unchanged += outcome.unchanged
        for line, reason in sorted(outcome.rejected):
            report.reject(line, reason)
        if len(known_paths) < MAX_PATHS_REMEMBERED:
            known_paths.update(outcome.paths)
        report.lines = framer.lines
        if on_batch is not None:
            on_batch(report)

    for record in framer.records(chunks):
        if record.data is None or record.problem is not None:
            if isinstance(parser, CsvRows) and parser.columns is None:
                raise InvalidInput(
                    "the CSV header is invalid",
                    errors=[FieldError("header", str(record.problem), line=record.line)],
                )
            report.reject(record.line, str(record.problem))
            continue
        try:
            row = parser.parse(record)
        except RowProblem as exc:
            report.reject(record.line, str(exc))
            continue
        if row is not None:
            batch.append(row)
            if len(batch) >= batch_rows:
                flush()
    if batch:
        flush()
    report.lines = framer.lines
    report.rejected.sort(key=lambda rejection: int(rejection["line"]))
    return report
