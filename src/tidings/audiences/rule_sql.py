"""Audience rules as a WHERE clause over profiles: the same answers on SQLite and PostgreSQL."""

# Every condition compiles to an expression that is never SQL NULL (true or false, the JSON type
# checked first), so `not` is the exact complement of what it negates and `!=` of `==`: SQL's
# three-valued logic never leaks into what a rule means. Attributes are JSON on SQLite (read
# with json_type / json_extract) and JSONB on PostgreSQL (jsonb_typeof / the -> operator).
# A path steps through object keys only, on both: array elements are not addressed.

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tidings.audiences.rules import (
    DATE_ROOTS,
    TEXT_ROOTS,
    And,
    Compare,
    DateValue,
    Exists,
    InList,
    Node,
    Not,
    Op,
    Or,
    Path,
    RelativeDate,
    Root,
    Rule,
    Scalar,
    Value,
)
from tidings.profiles.models import profile_identities, profiles

# The instants a comparison falls back to when `now ± duration` leaves what datetime holds.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)

Clause = sa.ColumnElement[Any]


def condition(rule: Rule, dialect: str, now: datetime) -> Clause:
    """Whether a row of `profiles` is in the audience `rule` describes, at `now` (what `now` in
    the rule means). `dialect`: "sqlite" or "postgresql"."""
    backend: _Backend = _Postgres() if dialect == "postgresql" else _Sqlite()
    return _Compiler(backend, now).node(rule.root)


# ---------------------------------------------------------------- the two JSON dialects


class _Backend:
    """Reads a JSON value at a path of a JSON column; each method is NULL-free unless said."""

    def is_string(self, column: Clause, keys: Sequence[str]) -> Clause:
        raise NotImplementedError

    def is_number(self, column: Clause, keys: Sequence[str]) -> Clause:
        raise NotImplementedError

    def is_boolean(self, column: Clause, keys: Sequence[str], value: bool) -> Clause:
        raise NotImplementedError

    def is_array(self, column: Clause, keys: Sequence[str]) -> Clause:
        raise NotImplementedError

    def is_present(self, column: Clause, keys: Sequence[str]) -> Clause:
        """There, and not JSON null."""
        raise NotImplementedError

    def text(self, column: Clause, keys: Sequence[str]) -> Clause:
        """A JSON string as text (NULL when missing)."""
        raise NotImplementedError

    def number(self, column: Clause, keys: Sequence[str]) -> Clause:
        """A JSON number as a number: only under `is_number` (PostgreSQL's cast would fail)."""
        raise NotImplementedError

    def array_has(self, column: Clause, keys: Sequence[str], value: str | int | float) -> Clause:
        """Whether an array holds an element equal to `value` (same JSON type)."""
        raise NotImplementedError

    def has_substring(self, text: Clause, value: str) -> Clause:
        raise NotImplementedError

    def looks_like_date(self, text: Clause) -> Clause:
        raise NotImplementedError

    def ordered(self, text: Clause) -> Clause:
        """Text that orders by code point, as SQLite's BINARY collation does."""
        return text


class _Sqlite(_Backend):
    @staticmethod
    def _path(keys: Sequence[str]) -> str:
        # Keys never hold '"' (the parser refuses them): a quoted label needs no escaping.
        return "$" + "".join(f'."{key}"' for key in keys)

    def _type(self, column: Clause, keys: Sequence[str]) -> Clause:
        # json_type: 'null', 'true', 'false', 'integer', 'real', 'text', 'array', 'object',
        # and SQL NULL when the path is missing (then '').
        return sa.func.coalesce(
            sa.func.json_type(column, self._path(keys), type_=sa.String), sa.literal("")
        )

    def is_string(self, column: Clause, keys: Sequence[str]) -> Clause:
        return self._type(column, keys) == "text"

    def is_number(self, column: Clause, keys: Sequence[str]) -> Clause:
        return self._type(column, keys).in_(["integer", "real"])

    def is_boolean(self, column: Clause, keys: Sequence[str], value: bool) -> Clause:
        return self._type(column, keys) == ("true" if value else "false")

    def is_array(self, column: Clause, keys: Sequence[str]) -> Clause:
        return self._type(column, keys) == "array"

    def is_present(self, column: Clause, keys: Sequence[str]) -> Clause:
        return self._type(column, keys).not_in(["", "null"])

    def text(self, column: Clause, keys: Sequence[str]) -> Clause:
        return sa.func.json_extract(column, self._path(keys), type_=sa.String)

    def number(self, column: Clause, keys: Sequence[str]) -> Clause:
        return sa.func.json_extract(column, self._path(keys), type_=sa.Float)

    def array_has(self, column: Clause, keys: Sequence[str], value: str | int | float) -> Clause:
        element = sa.func.json_each(column, self._path(keys)).table_valued(
            "value", "type", name="element"
        )
        types = ["text"] if isinstance(value, str) else ["integer", "real"]
        return sa.exists().where(element.c.type.in_(types), element.c.value == sa.literal(value))

    def has_substring(self, text: Clause, value: str) -> Clause:
        return sa.func.instr(text, sa.literal(value)) > 0

    def looks_like_date(self, text: Clause) -> Clause:
        return text.bool_op("GLOB")("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*")


def _text_key(key: str) -> Clause:
    # A text operand: `->` with an integer would index arrays.
    return sa.cast(sa.literal(key, sa.Text()), sa.Text())


class _Postgres(_Backend):
    # `jsonb -> text` looks up an object's field and yields NULL on an array or a scalar, as
    # SQLite's `$."key"` does; jsonb_extract_path and `#>` would take "0" as an array index.
    def _value(self, column: Clause, keys: Sequence[str]) -> Clause:
        value = column
        for key in keys:
            value = value.op("->", return_type=postgresql.JSONB)(_text_key(key))
        return value

    def _type(self, column: Clause, keys: Sequence[str]) -> Clause:
        # jsonb_typeof: 'object', 'array', 'string', 'number', 'boolean', 'null'; SQL NULL
        # when the path is missing (then '').
        return sa.func.coalesce(
            sa.func.jsonb_typeof(self._value(column, keys), type_=sa.String), sa.literal("")
        )

    def is_string(self, column: Clause, keys: Sequence[str]) -> Clause:
        return self._type(column, keys) == "string"

    def is_number(self, column: Clause, keys: Sequence[str]) -> Clause:
        return self._type(column, keys) == "number"

    def is_boolean(self, column: Clause, keys: Sequence[str], value: bool) -> Clause:
        return sa.and_(
            self._type(column, keys) == "boolean",
            self.text(column, keys) == ("true" if value else "false"),
        )

    def is_array(self, column: Clause, keys: Sequence[str]) -> Clause:
        return self._type(column, keys) == "array"

    def is_present(self, column: Clause, keys: Sequence[str]) -> Clause:
        return self._type(column, keys).not_in(["", "null"])

    def text(self, column: Clause, keys: Sequence[str]) -> Clause:
        parent = self._value(column, keys[:-1])
        return parent.op("->>", return_type=sa.String)(_text_key(keys[-1]))

    def number(self, column: Clause, keys: Sequence[str]) -> Clause:
        # NUMERIC holds every JSON number exactly, as jsonb does.
        return sa.cast(self.text(column, keys), sa.Numeric())

    def array_has(self, column: Clause, keys: Sequence[str], value: str | int | float) -> Clause:
        wanted = sa.cast(sa.literal(json.dumps([value])), postgresql.JSONB)
        return self._value(column, keys).bool_op("@>")(wanted)

    def has_substring(self, text: Clause, value: str) -> Clause:
        return sa.func.strpos(text, sa.literal(value)) > 0

    def looks_like_date(self, text: Clause) -> Clause:
        return text.bool_op("~")("^[0-9]{4}-[0-9]{2}-[0-9]{2}")

    def ordered(self, text: Clause) -> Clause:
        return sa.collate(text, "C")


# ---------------------------------------------------------------- the tree


def _guarded(check: Clause, comparison: Clause) -> Clause:
    """`comparison` where `check` holds, else false: NULL-free, and on PostgreSQL the
    comparison (a cast) is never evaluated for a value of another type."""
    return sa.case((check, comparison), else_=sa.false())


def _compare(left: Clause, op: Op, right: Clause) -> Clause:
    if op is Op.EQ:
        return left == right
    if op is Op.NE:
        return left != right
    if op is Op.LT:
        return left < right
    if op is Op.LE:
        return left <= right
    if op is Op.GT:
        return left > right
    return left >= right


class _Compiler:
    def __init__(self, backend: _Backend, now: datetime) -> None:
        self.backend = backend
        self.now = now

    def node(self, node: Node) -> Clause:
        if isinstance(node, And):
            return sa.and_(*(self.node(operand) for operand in node.operands))
        if isinstance(node, Or):
            return sa.or_(*(self.node(operand) for operand in node.operands))
        if isinstance(node, Not):
            return sa.not_(self.node(node.operand))
        if isinstance(node, Compare):
            if node.op is Op.NE:
                # Exactly what `==` does not match: a missing value included.
                return sa.not_(self.compare(node.path, Op.EQ, node.value))
            return self.compare(node.path, node.op, node.value)
        if isinstance(node, InList):
            return self.in_list(node.path, node.values)
        if isinstance(node, Exists):
            return self.exists(node.path)
        return self.contains(node.path, node.value)

    # -- comparisons

    def compare(self, path: Path, op: Op, value: Value) -> Clause:
        if path.root in DATE_ROOTS:
            assert isinstance(value, DateValue | RelativeDate)
            return self.compare_date_column(_column(path.root), op, value)
        if path.root is Root.CONSENT:
            return _consent(self.backend, path) == sa.literal(value)
        if path.root in TEXT_ROOTS:
            column = _column(path.root)
            if value is None:
                return column.is_(None)
            return sa.and_(
                column.is_not(None), _compare(self.backend.ordered(column), op, sa.literal(value))
            )
        return self.compare_attribute(path.keys, op, value)

    def compare_attribute(self, keys: Sequence[str], op: Op, value: Value) -> Clause:
        backend, column = self.backend, profiles.c.attributes
        if value is None:
            return sa.not_(backend.is_present(column, keys))
        if isinstance(value, bool):
            return backend.is_boolean(column, keys, value)
        if isinstance(value, str):
            text = backend.ordered(backend.text(column, keys))
            return _guarded(backend.is_string(column, keys), _compare(text, op, sa.literal(value)))
        if isinstance(value, int | float):
            number = backend.number(column, keys)
            return _guarded(backend.is_number(column, keys), _compare(number, op, _number(value)))
        return self.compare_date_attribute(keys, op, value)

    def compare_date_attribute(
        self, keys: Sequence[str], op: Op, value: DateValue | RelativeDate
    ) -> Clause:
        """Attributes holding ISO-8601 UTC dates compare as dates, by their text: a whole day
        (the date's first 10 characters) against a date, else to the second against the
        instant (a date alone is midnight, a space may stand for the 'T')."""
        backend, column = self.backend, profiles.c.attributes
        text = backend.text(column, keys)
        if isinstance(value, DateValue) and value.date_only:
            key = sa.func.substr(text, 1, 10, type_=sa.String)
            wanted = _day_text(value.at)
        else:
            at = self._instant(value)
            padded = text.concat(sa.literal("T00:00:00"))
            key = sa.func.replace(
                sa.func.substr(padded, 1, 19, type_=sa.String), " ", "T", type_=sa.String
            )
            wanted = f"{_day_text(at)}T{at:%H:%M:%S}"
        check = sa.and_(backend.is_string(column, keys), backend.looks_like_date(text))
        return _guarded(check, _compare(backend.ordered(key), op, sa.literal(wanted)))

    def compare_date_column(
        self, column: sa.Column[datetime], op: Op, value: DateValue | RelativeDate
    ) -> Clause:
        if isinstance(value, DateValue) and value.date_only:
            # A day stands for all of it: == is within the day, <= up to its end.
            start, end = value.at, _shifted(value.at, timedelta(days=1))
            if op is Op.EQ:
                return sa.and_(column >= start, column < end)
            if op is Op.LT:
                return column < start
            if op is Op.LE:
                return column < end
            if op is Op.GT:
                return column >= end
            return column >= start
        return _compare(column, op, sa.literal(self._instant(value), column.type))

    def _instant(self, value: DateValue | RelativeDate) -> datetime:
        return value.at if isinstance(value, DateValue) else _shifted(self.now, value.offset)

    # -- lists, presence, containment

    def in_list(self, path: Path, values: Sequence[Scalar]) -> Clause:
        if path.root is Root.CONSENT:
            return _consent(self.backend, path).in_(values)
        if path.root in TEXT_ROOTS:
            column = _column(path.root)
            return sa.and_(column.is_not(None), column.in_(values))
        backend, column, keys = self.backend, profiles.c.attributes, path.keys
        strings = [value for value in values if isinstance(value, str)]
        numbers = [
            value
            for value in values
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        alternatives: list[Clause] = []
        if strings:
            alternatives.append(
                _guarded(backend.is_string(column, keys), backend.text(column, keys).in_(strings))
            )
        if numbers:
            alternatives.append(
                _guarded(backend.is_number(column, keys), backend.number(column, keys).in_(numbers))
            )
        alternatives.extend(
            backend.is_boolean(column, keys, flag)
            for flag in (True, False)
            if any(value is flag for value in values)
        )
        return sa.or_(*alternatives)

    def exists(self, path: Path) -> Clause:
        if path.root is Root.IDENTITIES:
            return sa.exists().where(
                profile_identities.c.profile_id == profiles.c.id,
                profile_identities.c.namespace == path.keys[0],
            )
        return self.backend.is_present(profiles.c.attributes, path.keys)

    def contains(self, path: Path, value: str | int | float) -> Clause:
        backend = self.backend
        if path.root in TEXT_ROOTS:
            assert isinstance(value, str)
            column = _column(path.root)
            return sa.and_(column.is_not(None), backend.has_substring(column, value))
        column, keys = profiles.c.attributes, path.keys
        in_array = (backend.is_array(column, keys), backend.array_has(column, keys, value))
        if not isinstance(value, str):
            return sa.case(in_array, else_=sa.false())
        in_string = (
            backend.is_string(column, keys),
            backend.has_substring(backend.text(column, keys), value),
        )
        return sa.case(in_string, in_array, else_=sa.false())


def _shifted(at: datetime, delta: timedelta) -> datetime:
    """`at + delta`, or the earliest or latest instant datetime holds when that is beyond it.

    The parser bounds dates and durations, so this only guards an extreme `now`: clamped, a
    comparison still answers as it would with the true instant for every date a profile has.
    """
    try:
        return at + delta
    except OverflowError:
        return LATEST if delta > timedelta(0) else EARLIEST


def _day_text(at: datetime) -> str:
    # Not strftime("%Y"): it leaves years before 1000 unpadded ("999-01-01"), which would not
    # compare with stored text such as "0999-01-01".
    return f"{at.year:04d}-{at.month:02d}-{at.day:02d}"


def _number(value: int | float) -> Clause:
    # BIGINT: PostgreSQL would read a bare integer parameter as a 32-bit INTEGER.
    return sa.literal(value, sa.BigInteger() if isinstance(value, int) else sa.Float())


def _column(root: Root) -> sa.Column[Any]:
    return profiles.c[root.value]


def _consent(backend: _Backend, path: Path) -> Clause:
    """The channel's consent status; a channel never set is "unset"."""
    status = backend.text(profiles.c.consent, (path.keys[0], "status"))
    return sa.func.coalesce(status, sa.literal("unset"), type_=sa.String)
