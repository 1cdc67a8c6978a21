"""Rule audiences: the same profiles match on both backends; API, estimates, executions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Tenant, problem_fields
from tests.integration.test_audience_executions import (
    execution_row,
    fan_out,
    marketing_campaign,
    message_rows,
)
from tidings.audiences import rule_sql, rules
from tidings.audiences import service as audiences
from tidings.audiences.models import audiences as audience_table
from tidings.clock import utcnow
from tidings.executions import fanout
from tidings.profiles import service as profiles_service
from tidings.profiles.models import profiles
from tidings.profiles.schemas import ProfileUpsert
from tidings.runtime import Runtime
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration

# The people every evaluation test reads, stored once per backend.
PEOPLE: dict[str, dict[str, Any]] = {
    "ada": {
        "identity": ("email", "ada@example.com"),
        "identities": [{"namespace": "phone", "id": "+14155550101"}],
        "attributes": {
            "plan": "gold",
            "age": 36,
            "score": 9.5,
            "vip": True,
            "tags": ["vip", "beta"],
            "address": {"city": "London", "zip": "N1"},
            "signup": "2026-01-15T10:30:00Z",
            "birthday": "1990-05-01",
            "first name": "Ada",
            # Object keys that look like array indexes.
            "ranks": {"0": "first", "-1": "last"},
        },
        "consent": {"email": "in", "sms": "out"},
        "timezone": "Europe/London",
        "locale": "en-GB",
    },
    "bob": {
        "identity": ("email", "bob@example.com"),
        "identities": [{"namespace": "crmId", "id": "C-2"}],
        "attributes": {
            "plan": "silver",
            "age": 17,
            "score": 3,
            "vip": False,
            "tags": ["beta"],
            "codes": [1, 2, 3],
            "address": {"city": "Paris"},
            "signup": "2025-12-31",
            "birthday": "1990-05-01T23:59:59Z",
        },
        "consent": {"email": "out"},
        "timezone": "Europe/Paris",
        "locale": "fr-FR",
    },
    "cy": {
        "identity": ("email", "cy@example.com"),
        "identities": [],
        # A string that looks like a number, a plan in another case, a date that is not one,
        # and (stored below) a JSON null.
        "attributes": {"plan": "Gold", "age": "36", "signup": "not a date", "tags": "vip"},
        "consent": {"push": "in"},
        "timezone": None,
        "locale": None,
    },
    "dee": {
        "identity": ("phone", "+14155550104"),
        "identities": [],
        "attributes": {},
        "consent": {},
        "timezone": None,
        "locale": None,
    },
}
NOW = datetime(2026, 2, 1, tzinfo=UTC)


@dataclass
class Population:
    runtime: Runtime
    workspace_id: str
    names: dict[str, str]  # profile id -> name

    def matching(self, source: str, now: datetime = NOW) -> set[str]:
        rule = rules.parse(source)
        with self.runtime.db.read() as conn:
            query = sa.select(profiles.c.id).where(
                profiles.c.workspace_id == self.workspace_id,
                rule_sql.condition(rule, conn.dialect.name, now),
            )
            return {self.names[profile_id] for profile_id in conn.execute(query).scalars()}


def store_people(runtime: Runtime, workspace_id: str) -> dict[str, str]:
    names = {}
    for name, person in PEOPLE.items():
        namespace, value = person["identity"]
        body = ProfileUpsert.model_validate(
            {
                "identities": person["identities"],
                "attributes": person["attributes"],
                "consent": person["consent"],
                "timezone": person["timezone"],
                "locale": person["locale"],
            }
        )
        result = profiles_service.upsert(runtime.db, workspace_id, namespace, value, body)
        names[result.profile["id"]] = name
    cy = next(profile_id for profile_id, name in names.items() if name == "cy")
    with runtime.db.write() as conn:
        # A stored JSON null (the API removes an attribute set to null instead).
        conn.execute(
            profiles.update()
            .where(profiles.c.id == cy)
            .values(attributes={**PEOPLE["cy"]["attributes"], "nickname": None})
        )
    return names


@pytest.fixture(scope="module")
def people(runtime: Runtime) -> Iterator[Population]:
    workspace = workspaces.create_workspace(runtime.db, f"rules-{uuid.uuid4().hex[:12]}")
    yield Population(runtime, workspace["id"], store_people(runtime, workspace["id"]))


EVERYONE = {"ada", "bob", "cy", "dee"}
CASES: list[tuple[str, set[str]]] = [
    # strings: exact, case-sensitive, byte order
    ('attributes.plan == "gold"', {"ada"}),
    ('attributes.plan != "gold"', {"bob", "cy", "dee"}),
    ('attributes.plan > "Gold"', {"ada", "bob"}),
    ('attributes.plan < "a"', {"cy"}),
    ('attributes.plan >= "gold" and attributes.plan <= "silver"', {"ada", "bob"}),
    ('attributes.age == "36"', {"cy"}),
    # numbers: numeric, and never a string that looks like one
    ("attributes.age >= 18", {"ada"}),
    ("attributes.age < 18", {"bob"}),
    ("attributes.age == 36", {"ada"}),
    ("attributes.age != 36", {"bob", "cy", "dee"}),
    ("attributes.score > 5", {"ada"}),
    ("attributes.score == 3.0", {"bob"}),
    ("attributes.score <= 3", {"bob"}),
    ("attributes.score > -1e3", {"ada", "bob"}),
    # nested and quoted keys
    ('attributes.address.city == "London"', {"ada"}),
    ("attributes.address.zip exists", {"ada"}),
    ('attributes."first name" == "Ada"', {"ada"}),
    # in
    ('attributes.address.city in ["London", "Paris"]', {"ada", "bob"}),
    ('attributes.age in [17, "36"]', {"bob", "cy"}),
    ('attributes.plan not in ["gold", "silver"]', {"cy", "dee"}),
    ("attributes.vip in [true]", {"ada"}),
    ("attributes.vip in [true, false]", {"ada", "bob"}),
    # booleans, null, exists
    ("attributes.vip == true", {"ada"}),
    ("attributes.vip == false", {"bob"}),
    ("attributes.vip != true", {"bob", "cy", "dee"}),
    ("attributes.vip exists", {"ada", "bob"}),
    ("attributes.vip not exists", {"cy", "dee"}),
    ("attributes.plan == null", {"dee"}),
    ("attributes.plan != null", {"ada", "bob", "cy"}),
    ("attributes.nickname exists", set()),
    ("attributes.nickname == null", EVERYONE),
    ("attributes.address exists", {"ada", "bob"}),
    # contains: substrings of strings, elements of arrays
    ('attributes.tags contains "vip"', {"ada", "cy"}),
    ('attributes.tags contains "beta"', {"ada", "bob"}),
    ('attributes.tags not contains "beta"', {"cy", "dee"}),
    ("attributes.codes contains 2", {"bob"}),
    ("attributes.codes contains 2.0", {"bob"}),
    ("attributes.codes contains 9", set()),
    ('attributes.plan contains "ol"', {"ada", "cy"}),
    ('attributes.address.city contains "ond"', {"ada"}),
    # identities
    ("identities.email exists", {"ada", "bob", "cy"}),
    ("identities.phone exists", {"ada", "dee"}),
    ("identities.crmId exists", {"bob"}),
    ("identities.email not exists", {"dee"}),
    ("identities.fax exists", set()),
    # consent, a channel never set being "unset"
    ('consent.email == "in"', {"ada"}),
    ('consent.email == "out"', {"bob"}),
    ('consent.email == "unset"', {"cy", "dee"}),
    ('consent.email != "out"', {"ada", "cy", "dee"}),
    ('consent.sms in ["out", "unset"]', EVERYONE),
    ('consent.push == "in"', {"cy"}),
    # time zone and locale
    ('timezone == "Europe/Paris"', {"bob"}),
    ('timezone != "Europe/Paris"', {"ada", "cy", "dee"}),
    ('locale in ["fr-FR", "en-GB"]', {"ada", "bob"}),
    ("locale == null", {"cy", "dee"}),
    ("locale != null", {"ada", "bob"}),
    ('timezone contains "Europe"', {"ada", "bob"}),
    ('locale > "en"', {"ada", "bob"}),
    # attributes holding dates: whole days against a date, seconds against an instant
    ("attributes.signup >= 2026-01-01", {"ada"}),
    ("attributes.signup < 2026-01-01", {"bob"}),
    ("attributes.signup == 2026-01-15", {"ada"}),
    ("attributes.signup == 2025-12-31", {"bob"}),
    ("attributes.signup != 2026-01-15", {"bob", "cy", "dee"}),
    ("attributes.signup > 2026-01-15T10:00:00Z", {"ada"}),
    ("attributes.signup < 2026-01-15T10:00:00Z", {"bob"}),
    ("attributes.signup == 2026-01-15T10:30:00Z", {"ada"}),
    ("attributes.signup == 2025-12-31T00:00:00Z", {"bob"}),
    ("attributes.signup > now - 30d", {"ada"}),
    ("attributes.signup > now - 60d", {"ada", "bob"}),
    ("attributes.signup < now", {"ada", "bob"}),
    ("attributes.birthday == 1990-05-01", {"ada", "bob"}),
    ("attributes.birthday > 1990-05-01T12:00:00Z", {"bob"}),
    ("attributes.plan > 2000-01-01", set()),
    # and, or, not, precedence
    ('attributes.plan == "gold" or identities.crmId exists', {"ada", "bob"}),
    ('not (attributes.plan == "gold" or consent.email == "out")', {"cy", "dee"}),
    ('attributes.plan == "gold" or attributes.plan == "silver" and attributes.age > 20', {"ada"}),
    ('(attributes.plan == "gold" or attributes.plan == "silver") and attributes.age < 20', {"bob"}),
    ("not attributes.age >= 18 and identities.email exists", {"bob", "cy"}),
    ("not not attributes.vip exists", {"ada", "bob"}),
    # a path steps through object keys only: array elements are not addressed (PostgreSQL's
    # jsonb_extract_path took "0" for an index), a key that looks like one is a key
    ('attributes.tags.0 == "vip"', set()),
    ("attributes.tags.0 exists", set()),
    ("attributes.codes.1 == 2", set()),
    ('attributes.codes."-1" == 3', set()),
    ("attributes.codes.0 != 1", EVERYONE),
    ('attributes.ranks.0 == "first"', {"ada"}),
    ('attributes.ranks."-1" == "last"', {"ada"}),
    ("attributes.ranks.1 exists", set()),
    # dates at the edges of what a rule may name; years before 1000 keep four digits
    ("attributes.birthday > 0999-01-01", {"ada", "bob"}),
    ("attributes.birthday < 0999-01-01T00:00:00Z", set()),
    ("attributes.signup > now - 5217w", {"ada", "bob"}),
    ("created_at > 0001-01-01 and created_at < 9998-12-31", EVERYONE),
    ("created_at >= 0001-01-01T00:00:00Z and updated_at <= 9998-12-31T23:59:59Z", EVERYONE),
    ("created_at == 9998-12-31", set()),
]


@pytest.mark.parametrize(("source", "expected"), CASES, ids=[case[0] for case in CASES])
def test_rules_match_the_same_profiles_on_both_backends(
    people: Population, source: str, expected: set[str]
):
    assert people.matching(source) == expected
    # `not` is the exact complement: no profile falls between a rule and its negation.
    assert people.matching(f"not ({source})") == EVERYONE - expected


def test_dates_of_profiles_are_relative_to_the_time_of_evaluation(people: Population):
    now = utcnow()
    today = now.date().isoformat()
    assert people.matching("created_at > now - 1h", now) == EVERYONE
    assert people.matching("created_at > now - 1h", now + timedelta(hours=2)) == set()
    assert people.matching("updated_at <= now", now + timedelta(seconds=5)) == EVERYONE
    assert people.matching(f"created_at == {today}", now) == EVERYONE
    assert people.matching(f"created_at >= {today} and created_at <= {today}", now) == EVERYONE
    assert people.matching(f"created_at < {today} or created_at > {today}", now) == set()
    assert people.matching("created_at < 2000-01-01", now) == set()
    assert people.matching("created_at > 2000-01-01T00:00:00Z", now) == EVERYONE


def test_evaluating_never_overflows_whatever_the_time(people: Population):
    """`now ± duration` beyond the years datetime holds compares as the earliest or latest
    instant it holds, instead of raising OverflowError."""
    dawn = datetime(1, 1, 2, tzinfo=UTC)
    end = datetime(9999, 12, 30, tzinfo=UTC)
    assert people.matching("created_at > now - 5217w", dawn) == EVERYONE
    assert people.matching("created_at < now + 5217w", end) == EVERYONE
    assert people.matching("created_at > now + 36525d", end) == set()
    assert people.matching("attributes.signup < now + 1w", end) == {"ada", "bob"}
    assert people.matching("attributes.signup > now - 876600h", dawn) == {"ada", "bob"}


def test_other_workspaces_profiles_never_match(tenant: Tenant, people: Population):
    # Ada's twin in another workspace.
    tenant.client.put("/v1/profiles/email/ada@example.com", json={"attributes": {"plan": "gold"}})
    created = create_rule(tenant, 'attributes.plan == "gold"')
    assert created["estimate"] == {"count": 1, "exact": True}
    assert people.matching('attributes.plan == "gold"') == {"ada"}


# ---------------------------------------------------------------- API


def create_rule(tenant: Tenant, rule: str, name: str | None = None) -> dict[str, Any]:
    response = tenant.client.post(
        "/v1/audiences", json={"name": name or f"rule-{uuid.uuid4().hex[:8]}", "rule": rule}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def put_profile(tenant: Tenant, address: str, **body: Any) -> str:
    response = tenant.client.put(f"/v1/profiles/email/{address}", json=body)
    assert response.status_code in (200, 201), response.text
    profile_id: str = response.json()["id"]
    return profile_id


def test_a_rule_audience_is_created_read_and_listed(tenant: Tenant):
    put_profile(tenant, "a@example.com", attributes={"plan": "gold"})
    put_profile(tenant, "b@example.com", attributes={"plan": "silver"})
    rule = 'attributes.plan == "gold"\n  and consent.email != "out"'
    created = create_rule(tenant, rule, name="Gold")
    assert created["kind"] == "rule"
    assert created["rule"] == rule
    assert created["member_count"] is None
    assert created["estimate"] == {"count": 1, "exact": True}
    assert created["rejected"] == []

    fetched = tenant.client.get(f"/v1/audiences/{created['id']}").json()
    assert fetched["estimate"] == {"count": 1, "exact": True}
    assert fetched["rule"] == rule
    put_profile(tenant, "c@example.com", attributes={"plan": "gold"})
    assert tenant.client.get(f"/v1/audiences/{created['id']}").json()["estimate"]["count"] == 2

    listed = tenant.client.get("/v1/audiences").json()["items"]
    assert [(item["kind"], item["rule"], item["estimate"]) for item in listed] == [
        ("rule", rule, None)
    ]
    # List audiences say so too.
    plain = tenant.client.post("/v1/audiences", json={"name": "plain"}).json()
    assert (plain["kind"], plain["rule"], plain["member_count"], plain["estimate"]) == (
        "list",
        None,
        0,
        None,
    )


@pytest.mark.parametrize(
    ("rule", "message", "line", "column"),
    [
        ("attributes.age >=", "expected a value after '>=', found the end of the rule", 1, 18),
        ('attributes.plan == "gold" and\nfoo.bar == 1', "unknown field 'foo'", 2, 1),
        ("", "the rule is empty", 1, 1),
        ("attributes.x exists or " * 200 + "attributes.x exists", "longer than 4000", 1, 4001),
        # Bounded so that evaluating never overflows (these were 500s once saved).
        ("created_at > now - 1000000w", "a duration is at most 100 years", 1, 20),
        ("attributes.d > now + 36526d", "a duration is at most 100 years", 1, 22),
        ("created_at == 9999-12-31", "a date is within the years 0001 to 9998", 1, 15),
        ("created_at < 0001-01-01T00:00:00+01:00", "within the years 0001 to 9998", 1, 14),
        ("created_at < 9998-12-31T23:00:00-02:00", "within the years 0001 to 9998", 1, 14),
        # Keys a JSON text escapes: SQLite's paths would not find them where PostgreSQL does.
        ('attributes."k\\\\b" == 1', "no '\"', '\\' or control character", 1, 12),
        ('attributes.x."tab\\tkey" == 1', "no '\"', '\\' or control character", 1, 14),
    ],
)
def test_an_invalid_rule_is_a_422_naming_the_rule_and_the_position(
    tenant: Tenant, rule: str, message: str, line: int, column: int
):
    response = tenant.client.post("/v1/audiences", json={"name": "bad", "rule": rule})
    assert response.status_code == 422, response.text
    assert problem_fields(response) == ["rule"]
    problem = response.json()
    [error] = problem["errors"]
    assert message in error["message"]
    assert (error["line"], error["column"]) == (line, column)
    assert problem["detail"].startswith("rule: ")
    assert f"column {column}" in problem["detail"]
    assert tenant.client.get("/v1/audiences").json()["items"] == []

    estimate = tenant.client.post("/v1/audiences/estimate", json={"rule": rule})
    assert estimate.status_code == 422
    assert estimate.json()["errors"][0]["column"] == column


def test_a_rule_audience_has_no_members(tenant: Tenant):
    put_profile(tenant, "a@example.com")
    both = tenant.client.post(
        "/v1/audiences",
        json={
            "name": "both",
            "rule": "attributes.x exists",
            "members": [{"namespace": "email", "id": "a@example.com"}],
        },
    )
    assert both.status_code == 422, both.text
    assert problem_fields(both) == ["members"]

    audience_id = create_rule(tenant, "identities.email exists")["id"]
    members = {"members": [{"namespace": "email", "id": "a@example.com"}]}
    for path in ("members", "members/remove"):
        refused = tenant.client.post(f"/v1/audiences/{audience_id}/{path}", json=members)
        assert refused.status_code == 409, refused.text
        assert "change its rule" in refused.json()["detail"]


def test_the_estimate_counts_without_saving(tenant: Tenant):
    for n in range(5):
        put_profile(tenant, f"p{n}@example.com", attributes={"n": n})
    answer = tenant.client.post("/v1/audiences/estimate", json={"rule": "attributes.n >= 2"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"count": 3, "exact": True}
    assert tenant.client.get("/v1/audiences").json()["items"] == []
    reader = tenant.client_with(Scope.PROFILES_READ)
    assert reader.post("/v1/audiences/estimate", json={"rule": "attributes.n < 2"}).json() == {
        "count": 2,
        "exact": True,
    }
    rule = rules.parse("attributes.n exists")
    with tenant.runtime.db.read() as conn:
        capped = audiences.count_matching(conn, tenant.workspace_id, rule, utcnow(), cap=3)
        assert capped == {"count": 3, "exact": False}
        exact = audiences.count_matching(conn, tenant.workspace_id, rule, utcnow(), cap=5)
        assert exact == {"count": 5, "exact": True}


def test_patch_changes_the_rule_name_and_description(tenant: Tenant):
    put_profile(tenant, "a@example.com", attributes={"plan": "gold"})
    put_profile(tenant, "b@example.com", attributes={"plan": "silver"})
    audience = create_rule(tenant, 'attributes.plan == "gold"', name="Gold")
    create_rule(tenant, "attributes.plan exists", name="Taken")
    url = f"/v1/audiences/{audience['id']}"

    changed = tenant.client.patch(url, json={"rule": "attributes.plan exists", "description": "x"})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["rule"], body["description"], body["name"]) == (
        "attributes.plan exists",
        "x",
        "Gold",
    )
    assert body["estimate"] == {"count": 2, "exact": True}
    assert body["updated_at"] > audience["updated_at"]

    bad = tenant.client.patch(url, json={"rule": "attributes.plan =="})
    assert bad.status_code == 422
    assert bad.json()["errors"][0] == {
        "field": "rule",
        "message": "expected a value after '==', found the end of the rule at column 19",
        "line": 1,
        "column": 19,
    }
    assert tenant.client.patch(url, json={"rule": None}).status_code == 422
    assert tenant.client.patch(url, json={"name": "Taken"}).status_code == 409
    cleared = tenant.client.patch(url, json={"description": None, "name": "Renamed"}).json()
    assert (cleared["name"], cleared["description"]) == ("Renamed", None)
    assert (
        tenant.client.patch(f"/v1/audiences/{uuid.uuid4()}", json={"name": "x"}).status_code == 404
    )

    listed = tenant.client.post("/v1/audiences", json={"name": "list"}).json()
    refused = tenant.client.patch(
        f"/v1/audiences/{listed['id']}", json={"rule": "attributes.x exists"}
    )
    assert refused.status_code == 409, refused.text
    renamed = tenant.client.patch(f"/v1/audiences/{listed['id']}", json={"name": "list 2"})
    assert renamed.json()["name"] == "list 2"


def test_rule_audiences_need_the_write_scope(tenant: Tenant):
    reader = tenant.client_with(Scope.CAMPAIGNS_READ)
    refused = reader.post("/v1/audiences", json={"name": "x", "rule": "attributes.x exists"})
    assert refused.status_code == 403
    audience = create_rule(tenant, "attributes.x exists")
    assert reader.get(f"/v1/audiences/{audience['id']}").status_code == 200
    assert reader.patch(f"/v1/audiences/{audience['id']}", json={"name": "y"}).status_code == 403


# ---------------------------------------------------------------- members and executions


def test_member_page_walks_a_rule_audience_by_profile_id(tenant: Tenant, other_tenant: Tenant):
    matching = [put_profile(tenant, f"m{n}@example.com", attributes={"n": n}) for n in range(7)]
    put_profile(tenant, "other@example.com", attributes={"n": "seven"})
    put_profile(other_tenant, "m1@example.com", attributes={"n": 1})
    audience_id = create_rule(tenant, "attributes.n >= 0")["id"]
    with tenant.runtime.db.read() as conn:
        walked: list[str] = []
        cursor = None
        while page := audiences.member_page(conn, audience_id, cursor, 3):
            assert len(page) <= 3
            walked.extend(page)
            cursor = page[-1]
        assert walked == sorted(matching)
        after = sorted(matching)[4]
        assert audiences.member_page(conn, audience_id, after, 10) == sorted(matching)[5:]
        assert audiences.member_page(conn, audience_id, None, 10, now=utcnow()) == sorted(matching)


def test_an_audience_execution_sends_to_the_profiles_the_rule_matches(tenant: Tenant):
    put_profile(tenant, "gold1@example.com", attributes={"plan": "gold", "firstName": "G1"})
    put_profile(tenant, "gold2@example.com", attributes={"plan": "gold"}, consent={"email": "in"})
    put_profile(tenant, "silver@example.com", attributes={"plan": "silver"})
    put_profile(tenant, "gold3@example.com", attributes={"plan": "gold"}, consent={"email": "out"})
    for n in range(5):
        put_profile(tenant, f"bulk{n}@example.com", attributes={"plan": "gold", "n": n})
    audience = create_rule(
        tenant, 'attributes.plan == "gold" and consent.email != "out" and created_at > now - 1d'
    )
    assert audience["estimate"] == {"count": 7, "exact": True}
    campaign = marketing_campaign(tenant, audience["id"])
    accepted = tenant.client.post("/v1/executions", json={"campaign_id": campaign["id"]})
    assert accepted.status_code == 202, accepted.text
    execution_id = accepted.json()["execution_id"]

    fan_out(tenant, execution_id, page=3)

    rows = message_rows(tenant, execution_id)
    expected = {"gold1@example.com", "gold2@example.com"} | {
        f"bulk{n}@example.com" for n in range(5)
    }
    assert sorted(row["recipient_id"] for row in rows) == sorted(expected)
    assert execution_row(tenant, execution_id)["recipient_count"] == 7
    view = tenant.client.get(f"/v1/executions/{execution_id}").json()
    assert view["recipients"] == 7


def test_a_rule_is_evaluated_at_the_time_the_execution_fired(tenant: Tenant):
    """Pages queued later still read `now` as the time of firing: nobody drops out (or in)
    half-way because the clock moved."""
    for n in range(4):
        put_profile(tenant, f"p{n}@example.com", attributes={"n": n})
    audience = create_rule(tenant, "created_at > now - 1h and attributes.n exists")
    campaign = marketing_campaign(tenant, audience["id"])
    execution_id = tenant.client.post(
        "/v1/executions", json={"campaign_id": campaign["id"]}
    ).json()["execution_id"]
    fired = utcnow()
    fanout.advance(tenant.runtime.db, fired, page_size=2, budget=1)
    assert execution_row(tenant, execution_id)["recipient_count"] == 2
    # Two hours on, `created_at > now - 1h` would match nobody; the execution still reads the
    # time it fired.
    fan_out(tenant, execution_id, at=fired + timedelta(hours=2), page=2)
    assert len(message_rows(tenant, execution_id)) == 4


def test_a_stored_rule_that_no_longer_parses_fails_its_execution_not_the_fan_out(
    tenant: Tenant, other_tenant: Tenant
):
    """A rule saved before the language was bounded (it parsed, and overflowed when
    evaluated) stays readable; its execution fails with the reason, and other workspaces'
    executions due after it are fanned out all the same."""
    put_profile(tenant, "old@example.com", attributes={"plan": "gold"})
    audience = create_rule(tenant, 'attributes.plan == "gold"')
    campaign = marketing_campaign(tenant, audience["id"])
    broken = tenant.client.post("/v1/executions", json={"campaign_id": campaign["id"]}).json()
    put_profile(other_tenant, "fine@example.com", attributes={"plan": "gold"})
    healthy = create_rule(other_tenant, 'attributes.plan == "gold"')
    other_campaign = marketing_campaign(other_tenant, healthy["id"])
    fine = other_tenant.client.post(
        "/v1/executions", json={"campaign_id": other_campaign["id"]}
    ).json()
    with tenant.runtime.db.write() as conn:
        conn.execute(
            sa.update(audience_table)
            .where(audience_table.c.id == audience["id"])
            .values(rule="created_at > now - 1000000w")
        )

    read = tenant.client.get(f"/v1/audiences/{audience['id']}")
    assert read.status_code == 200, read.text
    assert (read.json()["rule"], read.json()["estimate"]) == ("created_at > now - 1000000w", None)
    fan_out(other_tenant, fine["execution_id"])
    fan_out(tenant, broken["execution_id"])

    failed = execution_row(tenant, broken["execution_id"])
    assert failed["status"] == "failed"
    assert failed["failure"].startswith("the audience's rule cannot be evaluated: ")
    assert "a duration is at most 100 years" in failed["failure"]
    assert message_rows(tenant, broken["execution_id"]) == []
    view = tenant.client.get(f"/v1/executions/{broken['execution_id']}").json()
    assert (view["status"], view["failure"]) == ("failed", failed["failure"])
    assert execution_row(other_tenant, fine["execution_id"])["status"] == "accepted"
    assert len(message_rows(other_tenant, fine["execution_id"])) == 1
    # Changed by PATCH, the audience is whole again.
    patched = tenant.client.patch(
        f"/v1/audiences/{audience['id']}", json={"rule": "created_at > now - 5217w"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["estimate"] == {"count": 1, "exact": True}


def test_campaign_review_accepts_a_rule_audience(tenant: Tenant):
    audience = create_rule(tenant, "identities.email exists")
    campaign = marketing_campaign(tenant, audience["id"])
    assert campaign["status"] == "live"
