"""The audience rule language without a database: what parses into what, and where errors point."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tidings.audiences import rule_sql
from tidings.audiences.rules import (
    MAX_LIST_VALUES,
    MAX_NESTING,
    MAX_RULE_LENGTH,
    And,
    Compare,
    Contains,
    DateValue,
    Exists,
    InList,
    Not,
    Op,
    Or,
    Path,
    RelativeDate,
    Root,
    RuleError,
    parse,
    tokenize,
)
from tidings.profiles.models import profiles

PLAN = Path(Root.ATTRIBUTES, ("plan",))
AGE = Path(Root.ATTRIBUTES, ("age",))


def attr(*keys: str) -> Path:
    return Path(Root.ATTRIBUTES, keys)


@pytest.mark.parametrize(
    ("source", "tree"),
    [
        ('attributes.plan == "gold"', Compare(PLAN, Op.EQ, "gold")),
        ("attributes.age >= 18", Compare(AGE, Op.GE, 18)),
        ("attributes.age < -2.5", Compare(AGE, Op.LT, -2.5)),
        ("attributes.age != 1e3", Compare(AGE, Op.NE, 1000.0)),
        ("attributes.vip == TRUE", Compare(attr("vip"), Op.EQ, True)),
        ("attributes.vip != null", Compare(attr("vip"), Op.NE, None)),
        (
            'attributes.address.city == "Lyon"',
            Compare(attr("address", "city"), Op.EQ, "Lyon"),
        ),
        ("attributes.2fa == false", Compare(attr("2fa"), Op.EQ, False)),
        (
            'attributes."first name" == "A\\"da\\u00e9\\n"',
            Compare(attr("first name"), Op.EQ, 'A"daé\n'),
        ),
        (
            'attributes . a . "b.c" exists',
            Exists(attr("a", "b.c")),
        ),
        ('attributes.plan in ["gold", 2, true]', InList(PLAN, ("gold", 2, True))),
        ('attributes.plan NOT IN ["gold"]', Not(InList(PLAN, ("gold",)))),
        ("attributes.vip exists", Exists(attr("vip"))),
        ("attributes.vip not exists", Not(Exists(attr("vip")))),
        ("identities.phone exists", Exists(Path(Root.IDENTITIES, ("phone",)))),
        ("identities.crm.id exists", Exists(Path(Root.IDENTITIES, ("crm.id",)))),
        ('identities."crm-id" exists', Exists(Path(Root.IDENTITIES, ("crm-id",)))),
        ('attributes.tags contains "vip"', Contains(attr("tags"), "vip")),
        ("attributes.codes not contains 3", Not(Contains(attr("codes"), 3))),
        ('consent.email == "in"', Compare(Path(Root.CONSENT, ("email",)), Op.EQ, "in")),
        (
            'consent.sms in ["out", "unset"]',
            InList(Path(Root.CONSENT, ("sms",)), ("out", "unset")),
        ),
        ('timezone == "Europe/Paris"', Compare(Path(Root.TIMEZONE), Op.EQ, "Europe/Paris")),
        ("locale == null", Compare(Path(Root.LOCALE), Op.EQ, None)),
        ('locale contains "fr"', Contains(Path(Root.LOCALE), "fr")),
        (
            "created_at > now - 30d",
            Compare(Path(Root.CREATED_AT), Op.GT, RelativeDate(timedelta(days=-30))),
        ),
        (
            "updated_at <= now+2h",
            Compare(Path(Root.UPDATED_AT), Op.LE, RelativeDate(timedelta(hours=2))),
        ),
        ("created_at < NOW", Compare(Path(Root.CREATED_AT), Op.LT, RelativeDate(timedelta(0)))),
        (
            "created_at >= now - 15m",
            Compare(Path(Root.CREATED_AT), Op.GE, RelativeDate(timedelta(minutes=-15))),
        ),
        (
            "created_at >= now - 2w",
            Compare(Path(Root.CREATED_AT), Op.GE, RelativeDate(timedelta(weeks=-2))),
        ),
        (
            "created_at >= 2026-01-31",
            Compare(
                Path(Root.CREATED_AT),
                Op.GE,
                DateValue(datetime(2026, 1, 31, tzinfo=UTC), date_only=True),
            ),
        ),
        (
            "attributes.renewal < 2026-01-31T10:00:00+02:00",
            Compare(
                attr("renewal"),
                Op.LT,
                DateValue(datetime(2026, 1, 31, 8, tzinfo=UTC), date_only=False),
            ),
        ),
        (
            "attributes.renewal < 2026-01-31T10:00",
            Compare(
                attr("renewal"),
                Op.LT,
                DateValue(datetime(2026, 1, 31, 10, tzinfo=UTC), date_only=False),
            ),
        ),
    ],
)
def test_conditions_parse_into_their_tree(source: str, tree: object):
    assert parse(source).root == tree


def test_not_binds_tighter_than_and_which_binds_tighter_than_or():
    a, b, c = (Exists(attr(name)) for name in "abc")
    assert parse("attributes.a exists or attributes.b exists and not attributes.c exists").root == (
        Or((a, And((b, Not(c)))))
    )
    assert parse("not attributes.a exists and attributes.b exists").root == And((Not(a), b))
    assert parse("(attributes.a exists or attributes.b exists) AND attributes.c exists").root == (
        And((Or((a, b)), c))
    )
    assert parse("not not attributes.a exists").root == Not(Not(a))
    three = "attributes.a exists or attributes.b exists or attributes.c exists"
    assert parse(three).root == Or((a, b, c))


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        ("attributes.age >=", "expected a value after '>=', found the end of the rule", 18),
        ("attributes.age >= and", "expected a value after '>='", 19),
        ("foo.bar == 1", "unknown field 'foo'", 1),
        ("Attributes.plan exists", "unknown field 'Attributes'", 1),
        ('consent.fax == "in"', "unknown consent channel 'fax'", 9),
        ('consent == "in"', "name a channel", 9),
        ('consent.email.status == "in"', "unknown consent channel", 9),
        ('consent.email == "yes"', 'consent.email is "in", "out" or "unset"', 18),
        ('consent.email in ["in", "maybe"]', '"in", "out" or "unset"', 25),
        ('consent.email > "in"', "takes ==, !=, in or not in", 15),
        ("consent.email exists", "'exists' applies to attributes and identities", 15),
        ("created_at > 5", "compares with dates such as 2026-01-31", 14),
        ('updated_at == "2026-01-01"', "not a string", 15),
        ("created_at in [1]", "does not take 'in'", 12),
        ("created_at == null", "not null", 15),
        ("created_at > 2026-02-30", "not a valid date", 14),
        ("created_at > now - 5", "expected a duration such as 30d", 20),
        ("created_at > now - 5y", "unexpected 'y' after the number 5", 21),
        ("timezone exists", "write timezone != null", 10),
        ("timezone > 3", "compares with strings, not a number", 12),
        ("locale in [1]", "compares with strings", 12),
        ("timezone.zone == 1", "timezone has no fields", 10),
        ('identities.email == "a@b.c"', "only takes 'exists' or 'not exists'", 18),
        ("identities.email contains 1", "does not take 'contains'", 18),
        ("identities exists", "name an identity namespace", 12),
        ("identities.9x exists", "name an identity namespace", 12),
        ("attributes exists", "name an attribute", 12),
        ("attributes. == 1", "expected a name after '.'", 13),
        ('attributes."" exists', "an attribute key has 1 to 128 characters", 12),
        ('attributes."a\\"b" exists', "no '\"'", 12),
        ('attributes."a\\\\b" exists', "no '\"', '\\' or control character", 12),
        ('attributes."a\\nb" exists', "or control character", 12),
        ('attributes."a\\u001fb" exists', "or control character", 12),
        ('attributes.x."tab\tkey" exists', "or control character", 14),
        ("created_at > now - 5218w", "a duration is at most 100 years (36525d, 5217w)", 20),
        ("created_at > now - 36526d", "a duration is at most 100 years", 20),
        ("created_at > now - 876601h", "a duration is at most 100 years", 20),
        ("created_at > now - 52596001m", "a duration is at most 100 years", 20),
        ("created_at > now - 99999999999999999999999w", "at most 100 years", 20),
        ("created_at == 9999-12-31", "a date is within the years 0001 to 9998 (in UTC)", 15),
        ("created_at == 9999-01-01T00:00:00Z", "within the years 0001 to 9998", 15),
        ("created_at == 9998-12-31T23:30:00-01:00", "within the years 0001 to 9998", 15),
        ("created_at < 0001-01-01T00:00:00+01:00", "within the years 0001 to 9998", 14),
        ("attributes.d > 0000-01-01", "not a valid date", 16),
        ("attributes.vip > true", "a boolean takes == or !=, not >", 18),
        ("attributes.vip < null", "null takes == or !=", 18),
        ("attributes.tags contains true", "'contains' takes a string or a number", 26),
        ("attributes.tags contains [1]", "a list of values goes with 'in'", 26),
        ("attributes.x in []", "a list needs at least one value", 17),
        ("attributes.x in [null]", "compare with null by == or !=", 18),
        ("attributes.x in [2026-01-01]", "not dates", 18),
        ('attributes.x in ["a" "b"]', "expected ',' or ']' in the list", 22),
        ("attributes.x in 1", 'expected a list such as ["a", "b"]', 17),
        ("attributes.x == [1]", "a list of values goes with 'in'", 17),
        ("attributes.x = 1", "use '==' to compare", 14),
        ("attributes.x == 1 && attributes.y exists", "use 'and'", 19),
        ("attributes.x == 'a'", "strings are written in double quotes", 17),
        ("attributes.x ! exists", "use '!=' or 'not'", 14),
        ("attributes.x == 1 @", "unexpected character '@'", 19),
        ('attributes.x == "open', "a string is not closed", 17),
        ('attributes.x == "a\\qb"', "unknown escape", 19),
        ('attributes.x == "a\\u0000"', "cannot hold NUL or lone surrogates", 17),
        ('attributes.x == "\\ud800"', "cannot hold NUL or lone surrogates", 17),
        ('attributes."\x00" exists', "cannot hold NUL", 12),
        ("attributes.x == \u0663", "unexpected character '\u0663'", 17),
        ("attributes.x == \x00", "unexpected character U+0000", 17),
        ("attributes.x == \ud800", "unexpected character U+D800", 17),
        ("attributes.x == 99999999999999999999", "the number is out of range", 17),
        ("attributes.x == 1e999", "the number is out of range", 17),
        ("attributes.x == 1.2.3", "unexpected '.' after the number 1.2", 20),
        ("attributes.x 5", "expected an operator (==, !=", 14),
        ("attributes.x", "expected an operator", 13),
        ("attributes.x not == 1", "expected 'in', 'exists' or 'contains' after 'not'", 18),
        ("attributes.x exists attributes.y exists", "expected 'and', 'or' or the end", 21),
        ("attributes.x exists and", "expected a field such as attributes.plan after 'and'", 24),
        ("or attributes.x exists", "after the start of the rule, found 'or'", 1),
        ("not", "after 'not', found the end of the rule", 4),
        ("(attributes.x exists", "expected ')' to close the '(' at column 1", 21),
        ("attributes.x exists)", "this ')' closes no '('", 20),
        ("()", "expected a field", 2),
        ("   ", "the rule is empty", 1),
        ("", "the rule is empty", 1),
    ],
)
def test_errors_say_what_and_where(source: str, message: str, column: int):
    with pytest.raises(RuleError) as caught:
        parse(source)
    error = caught.value
    assert message in error.message
    assert (error.line, error.column, error.offset) == (1, column, column - 1)
    assert str(error) == f"{error.message} at column {column}"


def test_errors_on_later_lines_give_the_line():
    source = 'attributes.plan == "gold"\n  and\n  consent.email == "maybe"'
    with pytest.raises(RuleError) as caught:
        parse(source)
    assert (caught.value.line, caught.value.column) == (3, 20)
    assert caught.value.offset == source.index('"maybe"')
    assert str(caught.value).endswith("at line 3, column 20")


def test_limits():
    long = "attributes.a exists or " * 200 + "attributes.a exists"
    assert len(long) > MAX_RULE_LENGTH
    with pytest.raises(RuleError, match="longer than 4000 characters") as caught:
        parse(long)
    assert caught.value.offset == MAX_RULE_LENGTH

    deep = "(" * MAX_NESTING + "attributes.a exists" + ")" * MAX_NESTING
    assert parse(deep).root == Exists(attr("a"))
    with pytest.raises(RuleError, match="nests deeper than 32 levels"):
        parse("(" + deep + ")")
    with pytest.raises(RuleError, match="nests deeper"):
        parse("not " * (MAX_NESTING + 1) + "attributes.a exists")

    values = ", ".join(["1"] * MAX_LIST_VALUES)
    assert len(parse(f"attributes.a in [{values}]").root.values) == MAX_LIST_VALUES  # type: ignore[union-attr]
    with pytest.raises(RuleError, match="at most 1000 values") as caught:
        parse(f"attributes.a in [{values}, 2]")
    assert caught.value.column == len(f"attributes.a in [{values}, ") + 1

    ten = ".".join(["k"] * 10)
    assert parse(f"attributes.{ten} exists")
    with pytest.raises(RuleError, match="at most 10 keys"):
        parse(f"attributes.{ten}.k exists")


def test_durations_and_dates_at_their_bounds():
    for source, offset in [
        ("now - 5217w", -timedelta(weeks=5217)),
        ("now + 36525d", timedelta(days=36525)),
        ("now - 876600h", -timedelta(hours=876600)),
        ("now + 52596000m", timedelta(minutes=52596000)),
    ]:
        assert parse(f"created_at > {source}").root == Compare(
            Path(Root.CREATED_AT), Op.GT, RelativeDate(offset)
        )
    earliest = parse("created_at > 0001-01-01T01:00:00+01:00").root
    assert earliest == Compare(
        Path(Root.CREATED_AT), Op.GT, DateValue(datetime(1, 1, 1, tzinfo=UTC), date_only=False)
    )
    latest = parse("created_at < 9998-12-31").root
    assert latest == Compare(
        Path(Root.CREATED_AT), Op.LT, DateValue(datetime(9998, 12, 31, tzinfo=UTC), True)
    )


@pytest.mark.parametrize(
    "now",
    [datetime(1, 1, 1, tzinfo=UTC), datetime.max.replace(tzinfo=UTC)],
    ids=["earliest", "latest"],
)
@pytest.mark.parametrize(
    "dialect", [sqlite.dialect(), postgresql.psycopg.dialect()], ids=["sqlite", "postgresql"]
)
def test_evaluating_at_any_time_never_overflows(now: datetime, dialect: sa.Dialect):
    for source in (
        "created_at > now - 5217w and updated_at < now + 5217w",
        "attributes.d > now - 36525d or attributes.d < now + 36525d",
        "created_at == 9998-12-31 and attributes.d <= 0001-01-01",
    ):
        clause = rule_sql.condition(parse(source), dialect.name, now)
        assert "WHERE" in str(sa.select(profiles.c.id).where(clause).compile(dialect=dialect))


def test_keys_that_are_keywords_and_paths_as_text():
    assert parse("attributes.and.or.not.in == 1").root == Compare(
        attr("and", "or", "not", "in"), Op.EQ, 1
    )
    assert (
        str(Path(Root.ATTRIBUTES, ("address", "first name"))) == 'attributes.address."first name"'
    )
    assert str(Path(Root.CREATED_AT)) == "created_at"


def test_tokens_carry_their_offsets():
    tokens = tokenize('attributes.x >= now-30d or "s"')
    assert [(token.kind.value, token.offset) for token in tokens] == [
        ("word", 0),
        (".", 10),
        ("word", 11),
        ("operator", 13),
        ("word", 16),
        ("-", 19),
        ("duration", 20),
        ("word", 24),
        ("string", 27),
        ("end", 30),
    ]


GOOD = [
    'attributes.plan == "gold" and attributes.age >= 18',
    'attributes.tags contains "vip" or attributes.codes contains 2',
    'attributes.plan in ["gold", 1, 2.5, true, false] and attributes.plan not in ["x"]',
    "attributes.a == null or attributes.b != null or attributes.c exists",
    "attributes.signup >= 2026-01-01 and attributes.signup < now - 1d",
    "attributes.signup == 2026-01-01T10:00:00Z and attributes.signup != now",
    'consent.email == "in" and consent.sms != "out" and consent.push in ["unset"]',
    'timezone == "Europe/Paris" and locale != null and locale contains "fr" and locale > "a"',
    'timezone in ["UTC"] and locale == null',
    "created_at == 2026-01-01 and updated_at != 2026-01-01 and created_at <= 2026-01-02",
    "created_at > 2026-01-01T00:00:00Z and updated_at < now + 1w",
    "identities.email exists and not identities.phone exists",
    'not (attributes.plan == "gold" or attributes.vip == true)',
]


@pytest.mark.parametrize("source", GOOD)
@pytest.mark.parametrize(
    "dialect", [sqlite.dialect(), postgresql.psycopg.dialect()], ids=["sqlite", "postgresql"]
)
def test_every_condition_compiles_for_both_backends(source: str, dialect: sa.Dialect):
    now = datetime(2026, 2, 1, tzinfo=UTC)
    clause = rule_sql.condition(parse(source), dialect.name, now)
    compiled = str(sa.select(profiles.c.id).where(clause).compile(dialect=dialect))
    assert "WHERE" in compiled
