"""The rule language of audiences: a tokenizer and a recursive-descent parser into a typed tree."""

# Pure: no evaluation, no I/O. docs/api.md ("Audience rules") documents the language for users;
# tidings.audiences.rule_sql turns a tree into SQL. The grammar, keywords in any case:
#
#   rule       := or_expr END
#   or_expr    := and_expr ("or" and_expr)*
#   and_expr   := unary ("and" unary)*
#   unary      := "not" unary | "(" or_expr ")" | condition
#   condition  := path ( COMPARISON value | ["not"] "in" list | ["not"] "contains" value
#                      | ["not"] "exists" )
#   path       := NAME ("." (SEGMENT | STRING))*
#   list       := "[" scalar ("," scalar)* "]"
#   value      := scalar | DATE | "now" (("+" | "-") DURATION)?
#   scalar     := STRING | ["-"] NUMBER | "true" | "false" | "null"

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from tidings.profiles.schemas import MAX_ATTRIBUTE_DEPTH
from tidings.vocabulary import NAMESPACE_PATTERN, Channel

MAX_RULE_LENGTH = 4000
MAX_NESTING = 32
MAX_LIST_VALUES = 1000
MAX_KEY_LENGTH = 128
# Integers travel to SQLite as 64-bit values; beyond that they could not be compared.
MAX_INTEGER = 2**63 - 1
CONSENT_VALUES = ("in", "out", "unset")

DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 24 * 60, "w": 7 * 24 * 60}
# Bounds that keep every date a rule names, and every `now ± duration`, far inside what Python's
# datetime holds (years 1 to 9999): evaluating a rule never overflows, and a whole day (the date
# plus a day) still has an end.
MAX_DURATION_YEARS = 100
MAX_DURATION = timedelta(days=36_525)  # 100 years of 365.25 days
MIN_YEAR, MAX_YEAR = 1, 9998


class RuleError(ValueError):
    """A rule that does not parse or does not make sense, with where it goes wrong.

    `offset` counts characters from 0; `line` and `column` count from 1.
    """

    def __init__(self, message: str, source: str, offset: int) -> None:
        self.message = message
        self.offset = offset
        self.line, self.column = line_and_column(source, offset)
        where = (
            f"line {self.line}, column {self.column}" if "\n" in source else f"column {self.column}"
        )
        super().__init__(f"{message} at {where}")


def line_and_column(source: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of a 0-based character offset."""
    line = source.count("\n", 0, offset) + 1
    return line, offset - (source.rfind("\n", 0, offset) + 1) + 1


# ---------------------------------------------------------------- the tree


class Root(StrEnum):
    """What a path starts with: the part of the profile it reads."""

    ATTRIBUTES = "attributes"
    CONSENT = "consent"
    IDENTITIES = "identities"
    TIMEZONE = "timezone"
    LOCALE = "locale"
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_]+$")
DATE_ROOTS = frozenset({Root.CREATED_AT, Root.UPDATED_AT})
TEXT_ROOTS = frozenset({Root.TIMEZONE, Root.LOCALE})


@dataclass(frozen=True, slots=True)
class Path:
    """`keys`: the attribute keys, the consent channel, or the identity namespace (one)."""

    root: Root
    keys: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ".".join(
            [
                self.root.value,
                *(key if _PLAIN_KEY.match(key) else json.dumps(key) for key in self.keys),
            ]
        )


@dataclass(frozen=True, slots=True)
class DateValue:
    """A date written in the rule; `date_only` (no time of day) compares by whole UTC days."""

    at: datetime
    date_only: bool


@dataclass(frozen=True, slots=True)
class RelativeDate:
    """`now`, `now - 30d`: resolved when the rule is evaluated, as now + offset."""

    offset: timedelta


Scalar = str | int | float | bool | None
Value = Scalar | DateValue | RelativeDate


class Op(StrEnum):
    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


ORDERING = frozenset({Op.LT, Op.LE, Op.GT, Op.GE})


@dataclass(frozen=True, slots=True)
class Compare:
    path: Path
    op: Op
    value: Value


@dataclass(frozen=True, slots=True)
class InList:
    path: Path
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Exists:
    path: Path


@dataclass(frozen=True, slots=True)
class Contains:
    path: Path
    value: str | int | float


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]


Node = Compare | InList | Exists | Contains | Not | And | Or


@dataclass(frozen=True, slots=True)
class Rule:
    source: str
    root: Node


# ---------------------------------------------------------------- tokens


class Kind(StrEnum):
    WORD = "word"
    STRING = "string"
    NUMBER = "number"
    DURATION = "duration"
    DATE = "date"
    OP = "operator"
    LPAREN = "("
    RPAREN = ")"
    LBRACKET = "["
    RBRACKET = "]"
    COMMA = ","
    DOT = "."
    PLUS = "+"
    MINUS = "-"
    END = "end"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str
    offset: int
    value: object = None

    def is_keyword(self, *words: str) -> bool:
        return self.kind is Kind.WORD and self.text.lower() in words

    def describe(self) -> str:
        if self.kind is Kind.END:
            return "the end of the rule"
        text = self.text if len(self.text) <= 24 else self.text[:21] + "..."
        return f"'{text}'"


_SPACE = re.compile(r"[ \t\r\n]+")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# After a dot a key may start with a digit: attributes.address.line1, attributes.2fa.
_SEGMENT = re.compile(r"[A-Za-z0-9_]+")
_DURATION = re.compile(r"([0-9]+)([mhdw])(?![A-Za-z0-9_])")
_DATE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_PUNCTUATION = {
    "(": Kind.LPAREN,
    ")": Kind.RPAREN,
    "[": Kind.LBRACKET,
    "]": Kind.RBRACKET,
    ",": Kind.COMMA,
    ".": Kind.DOT,
    "+": Kind.PLUS,
    "-": Kind.MINUS,
}
# Spellings from other languages, answered with the one this language uses.
_MISTAKES = {
    "&&": "use 'and'",
    "||": "use 'or'",
    "=": "use '==' to compare",
    "!": "use '!=' or 'not'",
    "'": "strings are written in double quotes",
}
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def tokenize(source: str) -> list[Token]:
    """The tokens of `source`, the last one END."""
    tokens: list[Token] = []
    position = 0
    length = len(source)
    while True:
        space = _SPACE.match(source, position)
        if space:
            position = space.end()
        if position >= length:
            tokens.append(Token(Kind.END, "", length))
            return tokens
        after_dot = bool(tokens) and tokens[-1].kind is Kind.DOT
        token = _next_token(source, position, after_dot)
        tokens.append(token)
        position = token.offset + len(token.text)


def _next_token(source: str, position: int, after_dot: bool) -> Token:
    char = source[position]
    if char == '"':
        return _string(source, position)
    if after_dot and (segment := _SEGMENT.match(source, position)):
        return Token(Kind.WORD, segment.group(), position)
    if word := _WORD.match(source, position):
        return Token(Kind.WORD, word.group(), position)
    if "0" <= char <= "9":
        return _numeric(source, position)
    for operator in _OPERATORS:
        if source.startswith(operator, position):
            return Token(Kind.OP, operator, position)
    if char in _PUNCTUATION:
        return Token(_PUNCTUATION[char], char, position)
    for spelling, advice in _MISTAKES.items():
        if source.startswith(spelling, position):
            raise RuleError(f"unexpected '{spelling}': {advice}", source, position)
    shown = f"'{char}'" if char.isprintable() else f"U+{ord(char):04X}"
    raise RuleError(f"unexpected character {shown}", source, position)


def _string(source: str, start: int) -> Token:
    chars: list[str] = []
    position = start + 1
    while position < len(source):
        char = source[position]
        if char == '"':
            value = "".join(chars)
            if any(char == "\0" or "\ud800" <= char <= "\udfff" for char in value):
                # Neither backend can hold them: refused here rather than by the database.
                raise RuleError("a string cannot hold NUL or lone surrogates", source, start)
            return Token(Kind.STRING, source[start : position + 1], start, value)
        if char == "\n":
            break
        if char == "\\":
            escape = source[position + 1 : position + 2]
            if escape in _ESCAPES:
                chars.append(_ESCAPES[escape])
                position += 2
                continue
            if escape == "u" and re.fullmatch(
                r"[0-9A-Fa-f]{4}", source[position + 2 : position + 6]
            ):
                chars.append(chr(int(source[position + 2 : position + 6], 16)))
                position += 6
                continue
            raise RuleError(
                'unknown escape in a string (use \\", \\\\, \\n, \\t or \\uXXXX)', source, position
            )
        chars.append(char)
        position += 1
    raise RuleError("a string is not closed with '\"'", source, start)


def _numeric(source: str, position: int) -> Token:
    if duration := _DURATION.match(source, position):
        amount, unit = int(duration.group(1)), duration.group(2)
        # Checked in whole minutes before a timedelta is made: a huge one would overflow.
        if amount * _UNIT_MINUTES[unit] > MAX_DURATION // timedelta(minutes=1):
            raise RuleError(
                f"a duration is at most {MAX_DURATION_YEARS} years "
                f"({MAX_DURATION.days}d, {MAX_DURATION.days // 7}w)",
                source,
                position,
            )
        delta = timedelta(**{DURATION_UNITS[unit]: amount})
        return Token(Kind.DURATION, duration.group(), position, delta)
    if date := _DATE.match(source, position):
        return Token(Kind.DATE, date.group(), position, _date_value(source, position, date.group()))
    number = _NUMBER.match(source, position)
    assert number is not None  # a digit starts a number
    text = number.group()
    follower = source[number.end() : number.end() + 1]
    if follower and (follower.isalnum() or follower in "_."):
        raise RuleError(
            f"unexpected '{follower}' after the number {text} (durations end in m, h, d or w)",
            source,
            number.end(),
        )
    value: int | float
    if re.fullmatch(r"[0-9]+", text):
        value = int(text)
        if value > MAX_INTEGER:
            raise RuleError("the number is out of range", source, position)
    else:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise RuleError("the number is out of range", source, position)
    return Token(Kind.NUMBER, text, position, value)


def _date_value(source: str, position: int, text: str) -> DateValue:
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RuleError(f"not a valid date: {exc}", source, position) from None
    if at.tzinfo is None:
        # A date without an offset is UTC, as stored dates are.
        at = at.replace(tzinfo=UTC)
    out_of_range = RuleError(
        f"a date is within the years {MIN_YEAR:04d} to {MAX_YEAR:04d} (in UTC)", source, position
    )
    try:
        at = at.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is before the year 1 in UTC.
        raise out_of_range from None
    if not MIN_YEAR <= at.year <= MAX_YEAR:
        raise out_of_range
    return DateValue(at=at, date_only="T" not in text)


# ---------------------------------------------------------------- parsing


@functools.lru_cache(maxsize=512)
def parse(source: str) -> Rule:
    """The rule `source` says, checked; a RuleError names the first problem and its position.

    Cached: the fan-out parses a stored rule at every page.
    """
    if len(source) > MAX_RULE_LENGTH:
        raise RuleError(
            f"the rule is longer than {MAX_RULE_LENGTH} characters", source, MAX_RULE_LENGTH
        )
    if not source.strip():
        raise RuleError("the rule is empty", source, 0)
    return Rule(source=source, root=_Parser(source, tokenize(source)).rule())


class _Parser:
    def __init__(self, source: str, tokens: list[Token]) -> None:
        self.source = source
        self.tokens = tokens
        self.index = 0

    # -- helpers

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind is not Kind.END:
            self.index += 1
        return token

    def error(self, message: str, token: Token | None = None) -> RuleError:
        return RuleError(message, self.source, (token or self.token).offset)

    def at(self, kind: Kind) -> bool:
        # A method, not `self.token.kind is …` inline: the type checker would keep a narrowing
        # from before an advance().
        return self.token.kind is kind

    def keyword(self, word: str) -> bool:
        if self.token.is_keyword(word):
            self.advance()
            return True
        return False

    # -- grammar

    def rule(self) -> Node:
        node = self.or_expr(0)
        if self.at(Kind.RPAREN):
            raise self.error("this ')' closes no '('")
        if not self.at(Kind.END):
            raise self.error(
                f"expected 'and', 'or' or the end of the rule, found {self.token.describe()}"
            )
        return node

    def or_expr(self, depth: int) -> Node:
        operands = [self.and_expr(depth, "the start of the rule")]
        while self.token.is_keyword("or"):
            self.advance()
            operands.append(self.and_expr(depth, "'or'"))
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expr(self, depth: int, after: str) -> Node:
        operands = [self.unary(depth, after)]
        while self.token.is_keyword("and"):
            self.advance()
            operands.append(self.unary(depth, "'and'"))
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def unary(self, depth: int, after: str) -> Node:
        if depth > MAX_NESTING:
            raise self.error(f"the rule nests deeper than {MAX_NESTING} levels")
        if self.keyword("not"):
            return Not(self.unary(depth + 1, "'not'"))
        if self.at(Kind.LPAREN):
            opening = self.advance()
            node = self.or_expr(depth + 1)
            if not self.at(Kind.RPAREN):
                raise self.error(
                    f"expected ')' to close the '(' at column "
                    f"{line_and_column(self.source, opening.offset)[1]}, "
                    f"found {self.token.describe()}"
                )
            self.advance()
            return node
        return self.condition(after)

    def condition(self, after: str) -> Node:
        path = self.path(after)
        token = self.token
        if token.kind is Kind.OP:
            self.advance()
            value_token = self.token
            value = self.value(f"'{token.text}'")
            return _checked_compare(self, path, Op(token.text), value, token, value_token)
        negated = False
        if token.is_keyword("not"):
            self.advance()
            negated = True
            if not self.token.is_keyword("in", "exists", "contains"):
                raise self.error(
                    f"expected 'in', 'exists' or 'contains' after 'not', "
                    f"found {self.token.describe()}"
                )
        operator = self.token
        node: Node
        if operator.is_keyword("in"):
            self.advance()
            node = _checked_in(self, path, self.list_value(), operator)
        elif operator.is_keyword("exists"):
            self.advance()
            node = _checked_exists(self, path, operator)
        elif operator.is_keyword("contains"):
            self.advance()
            value_token = self.token
            value = self.value("'contains'")
            node = _checked_contains(self, path, value, operator, value_token)
        else:
            raise self.error(
                f"expected an operator (==, !=, <, <=, >, >=, in, not in, contains, exists) "
                f"after '{path}', found {operator.describe()}"
            )
        return Not(node) if negated else node

    def path(self, after: str) -> Path:
        start = self.token
        if start.kind is not Kind.WORD or start.text.lower() in ("and", "or"):
            raise self.error(
                f"expected a field such as attributes.plan after {after}, found {start.describe()}"
            )
        self.advance()
        keys: list[tuple[str, Token]] = []
        while self.at(Kind.DOT):
            self.advance()
            key = self.token
            if key.kind is Kind.WORD:
                keys.append((key.text, key))
            elif key.kind is Kind.STRING:
                assert isinstance(key.value, str)
                keys.append((key.value, key))
            else:
                raise self.error(f"expected a name after '.', found {key.describe()}")
            self.advance()
        return _checked_path(self, start, keys)

    def value(self, after: str) -> Value:
        token = self.token
        if token.kind is Kind.DATE:
            self.advance()
            assert isinstance(token.value, DateValue)
            return token.value
        if token.is_keyword("now"):
            self.advance()
            if self.token.kind not in (Kind.PLUS, Kind.MINUS):
                return RelativeDate(timedelta(0))
            sign = self.advance()
            amount = self.token
            if amount.kind is not Kind.DURATION:
                raise self.error(
                    f"expected a duration such as 30d, 12h, 15m or 2w after '{sign.text}', "
                    f"found {amount.describe()}"
                )
            self.advance()
            assert isinstance(amount.value, timedelta)
            return RelativeDate(amount.value if sign.kind is Kind.PLUS else -amount.value)
        if token.kind is Kind.LBRACKET:
            raise self.error("a list of values goes with 'in' or 'not in'")
        return self.scalar(after)

    def scalar(self, after: str) -> Scalar:
        token = self.token
        if token.kind is Kind.STRING:
            self.advance()
            assert isinstance(token.value, str)
            return token.value
        if token.kind is Kind.NUMBER:
            self.advance()
            assert isinstance(token.value, int | float)
            return token.value
        if token.kind is Kind.MINUS and self.tokens[self.index + 1].kind is Kind.NUMBER:
            self.advance()
            number = self.advance().value
            assert isinstance(number, int | float)
            return -number
        if token.is_keyword("true", "false"):
            self.advance()
            return token.text.lower() == "true"
        if token.is_keyword("null"):
            self.advance()
            return None
        raise self.error(f"expected a value after {after}, found {token.describe()}")

    def list_value(self) -> tuple[tuple[Scalar, Token], ...]:
        if not self.at(Kind.LBRACKET):
            raise self.error(f'expected a list such as ["a", "b"], found {self.token.describe()}')
        opening = self.advance()
        if self.at(Kind.RBRACKET):
            raise self.error("a list needs at least one value", opening)
        values: list[tuple[Scalar, Token]] = []
        while True:
            if len(values) == MAX_LIST_VALUES:
                raise self.error(f"a list holds at most {MAX_LIST_VALUES} values")
            token = self.token
            if token.kind is Kind.DATE or token.is_keyword("now"):
                raise self.error("a list holds strings, numbers, true or false; not dates")
            values.append((self.scalar("'[' or ','"), token))
            if self.at(Kind.COMMA):
                self.advance()
                continue
            if self.at(Kind.RBRACKET):
                self.advance()
                return tuple(values)
            raise self.error(f"expected ',' or ']' in the list, found {self.token.describe()}")


# ---------------------------------------------------------------- checks


_NAMESPACE = re.compile(NAMESPACE_PATTERN)
# The characters JSON text escapes in a key. SQLite's JSON paths compare a key as it is written
# in the stored text, escapes and all, and cannot hold a '"': such a key would be found on
# PostgreSQL and not on SQLite, so no rule names it.
_UNNAMEABLE = re.compile(r'["\\\x00-\x1f]')
_CHANNELS = tuple(channel.value for channel in Channel)
_ROOTS = (
    "attributes.<name>, consent.<channel>, identities.<namespace>, timezone, locale, "
    "created_at or updated_at"
)


def _checked_path(parser: _Parser, start: Token, keys: list[tuple[str, Token]]) -> Path:
    try:
        root = Root(start.text)
    except ValueError:
        raise parser.error(f"unknown field '{start.text}': a rule reads {_ROOTS}", start) from None
    names = tuple(name for name, _ in keys)
    if root is Root.ATTRIBUTES:
        if not keys:
            raise parser.error("name an attribute: attributes.<name>", parser.token)
        if len(keys) > MAX_ATTRIBUTE_DEPTH:
            raise parser.error(
                f"an attribute path has at most {MAX_ATTRIBUTE_DEPTH} keys",
                keys[MAX_ATTRIBUTE_DEPTH][1],
            )
        for name, token in keys:
            if not name or len(name) > MAX_KEY_LENGTH or _UNNAMEABLE.search(name):
                raise parser.error(
                    f"an attribute key has 1 to {MAX_KEY_LENGTH} characters and no '\"', "
                    "'\\' or control character",
                    token,
                )
        return Path(root, names)
    if root is Root.CONSENT:
        if len(keys) != 1 or names[0] not in _CHANNELS:
            token = keys[0][1] if keys else parser.token
            found = f"unknown consent channel '{names[0]}'" if keys else "name a channel"
            raise parser.error(f"{found}: consent.{', consent.'.join(_CHANNELS)}", token)
        return Path(root, names)
    if root is Root.IDENTITIES:
        namespace = ".".join(names)
        if not keys or not _NAMESPACE.match(namespace):
            token = keys[0][1] if keys else parser.token
            raise parser.error(
                "name an identity namespace such as identities.email or identities.crmId", token
            )
        return Path(root, (namespace,))
    if keys:
        raise parser.error(f"{root.value} has no fields", keys[0][1])
    return Path(root)


def _describe(value: Value) -> str:
    if isinstance(value, DateValue | RelativeDate):
        return "a date"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _checked_compare(
    parser: _Parser, path: Path, op: Op, value: Value, op_token: Token, value_token: Token
) -> Compare:
    root = path.root
    if root is Root.IDENTITIES:
        raise parser.error(f"{path} only takes 'exists' or 'not exists'", op_token)
    if root in DATE_ROOTS:
        if not isinstance(value, DateValue | RelativeDate):
            raise parser.error(
                f"{path} compares with dates such as 2026-01-31 or now - 30d, "
                f"not {_describe(value)}",
                value_token,
            )
    elif root is Root.CONSENT:
        if op in ORDERING:
            raise parser.error(f"{path} takes ==, !=, in or not in", op_token)
        _check_consent(parser, path, value, value_token)
    elif root in TEXT_ROOTS:
        if not isinstance(value, str) and not (value is None and op not in ORDERING):
            raise parser.error(f"{path} compares with strings, not {_describe(value)}", value_token)
    elif op in ORDERING and (value is None or isinstance(value, bool)):
        raise parser.error(f"{_describe(value)} takes == or !=, not {op.value}", value_token)
    return Compare(path, op, value)


def _check_consent(parser: _Parser, path: Path, value: object, token: Token) -> None:
    if value not in CONSENT_VALUES or not isinstance(value, str):
        raise parser.error(f'{path} is "in", "out" or "unset"', token)


def _checked_in(
    parser: _Parser, path: Path, values: tuple[tuple[Scalar, Token], ...], operator: Token
) -> InList:
    root = path.root
    if root is Root.IDENTITIES or root in DATE_ROOTS:
        raise parser.error(f"{path} does not take 'in'", operator)
    for value, token in values:
        if root is Root.CONSENT:
            _check_consent(parser, path, value, token)
        elif root in TEXT_ROOTS and not isinstance(value, str):
            raise parser.error(f"{path} compares with strings, not {_describe(value)}", token)
        elif value is None:
            raise parser.error(
                "a list holds strings, numbers, true or false; compare with null by == or !=",
                token,
            )
    return InList(path, tuple(value for value, _ in values))


def _checked_exists(parser: _Parser, path: Path, operator: Token) -> Exists:
    if path.root not in (Root.ATTRIBUTES, Root.IDENTITIES):
        raise parser.error(
            f"'exists' applies to attributes and identities; write {path} != null", operator
        )
    return Exists(path)


def _checked_contains(
    parser: _Parser, path: Path, value: Value, operator: Token, value_token: Token
) -> Contains:
    if path.root is not Root.ATTRIBUTES and path.root not in TEXT_ROOTS:
        raise parser.error(f"{path} does not take 'contains'", operator)
    wanted_number = path.root is Root.ATTRIBUTES and isinstance(value, int | float)
    if not (isinstance(value, str) or wanted_number) or isinstance(value, bool):
        expected = "a string or a number" if path.root is Root.ATTRIBUTES else "a string"
        raise parser.error(f"'contains' takes {expected}, not {_describe(value)}", value_token)
    assert isinstance(value, str | int | float)
    return Contains(path, value)
