"""Every route, walked: workspace A's key reaches nothing of B's, and each route wants its scope.

The routes come from the app itself, so a route added later is walked (or must be classified
below) without anyone remembering to add a test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.integration.seed import Seeded, seed_workspace
from tidings.db.schema import metadata
from tidings.signing import ID_BYTES, decode, encode, uuid_bytes
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration

# Routes no API key opens, and why they are outside both walks.
EXEMPT = {
    "/openapi.json": "the public API description",
    "/docs": "the API's documentation page",
    "/docs/oauth2-redirect": "the documentation page's helper",
    "/redoc": "the API's documentation page",
    "/healthz": "liveness probe, no workspace data",
    "/readyz": "readiness probe, no workspace data",
    "/metrics": "operator scrape endpoint, process-wide counters, no key",
    "/ajo/im/health": "AJO-compatible health probe, no workspace data",
    "/webhooks/": "provider callbacks, verified by the provider's signature (tests: feedback, sms)",
    "/unsubscribe/": "signed links: the token is the credential (test_signed_links)",
    "/t/": "signed tracking links: the token is the credential (test_signed_links)",
    "/dev/mailbox": "the dev mailbox: loopback hosts only, behind the console's sign-in",
}
# The console's pages (any path): signed-in users, not API keys; the console's own tests.
CONSOLE_MODULE = "tidings.console"


def is_exempt(path: str, route: APIRoute) -> bool:
    if route.endpoint.__module__.startswith(CONSOLE_MODULE):
        return True
    return path in EXEMPT or any(
        path.startswith(prefix) for prefix in EXEMPT if prefix.endswith("/")
    )


ANY_KEY = frozenset(Scope)
READ_CAMPAIGNS = frozenset({Scope.CAMPAIGNS_READ})
WRITE_CAMPAIGNS = frozenset({Scope.CAMPAIGNS_WRITE})
TRIGGER = frozenset({Scope.EXECUTIONS_TRIGGER})
READ_PROFILES = frozenset({Scope.PROFILES_READ})
WRITE_PROFILES = frozenset({Scope.PROFILES_WRITE})
REPORTS = frozenset({Scope.REPORTS_READ})
ADMIN = frozenset({Scope.ADMIN})
# What each route asks of a key: any one of these scopes (admin opens everything). A route
# missing here fails test_every_route_is_classified: a new route must say what it wants.
SCOPES: dict[tuple[str, str], frozenset[Scope]] = {
    ("GET", "/v1/workspace"): ANY_KEY,
    ("PATCH", "/v1/workspace"): ADMIN,
    ("GET", "/v1/api-keys"): ADMIN,
    ("POST", "/v1/api-keys"): ADMIN,
    ("DELETE", "/v1/api-keys/{key_id}"): ADMIN,
    ("POST", "/v1/channel-configurations"): ADMIN,
    ("GET", "/v1/channel-configurations"): READ_CAMPAIGNS,
    ("GET", "/v1/channel-configurations/{configuration_id}"): READ_CAMPAIGNS,
    ("PATCH", "/v1/channel-configurations/{configuration_id}"): ADMIN,
    ("POST", "/v1/campaigns"): WRITE_CAMPAIGNS,
    ("GET", "/v1/campaigns"): READ_CAMPAIGNS,
    ("GET", "/v1/campaigns/{campaign_id}"): READ_CAMPAIGNS,
    ("PATCH", "/v1/campaigns/{campaign_id}"): WRITE_CAMPAIGNS,
    ("DELETE", "/v1/campaigns/{campaign_id}"): WRITE_CAMPAIGNS,
    ("GET", "/v1/campaigns/{campaign_id}/review"): READ_CAMPAIGNS,
    ("POST", "/v1/campaigns/{campaign_id}/activate"): WRITE_CAMPAIGNS,
    ("POST", "/v1/campaigns/{campaign_id}/stop"): WRITE_CAMPAIGNS,
    ("POST", "/v1/campaigns/{campaign_id}/archive"): WRITE_CAMPAIGNS,
    ("POST", "/v1/campaigns/{campaign_id}/duplicate"): WRITE_CAMPAIGNS,
    ("GET", "/v1/campaigns/{campaign_id}/versions"): READ_CAMPAIGNS,
    ("POST", "/v1/campaigns/{campaign_id}/versions"): WRITE_CAMPAIGNS,
    ("DELETE", "/v1/campaigns/{campaign_id}/versions/draft"): WRITE_CAMPAIGNS,
    ("GET", "/v1/campaigns/{campaign_id}/versions/{number}"): READ_CAMPAIGNS,
    ("POST", "/v1/campaigns/{campaign_id}/preview"): READ_CAMPAIGNS,
    ("POST", "/v1/campaigns/{campaign_id}/proofs"): WRITE_CAMPAIGNS,
    ("GET", "/v1/campaigns/{campaign_id}/rule-sets"): READ_CAMPAIGNS,
    ("PUT", "/v1/campaigns/{campaign_id}/rule-sets"): WRITE_CAMPAIGNS,
    ("GET", "/v1/campaigns/{campaign_id}/report"): REPORTS,
    ("GET", "/v1/campaigns/{campaign_id}/report.csv"): REPORTS,
    ("POST", "/v1/executions"): TRIGGER,
    ("GET", "/v1/executions/{execution_id}"): TRIGGER | REPORTS,
    ("DELETE", "/v1/executions/{execution_id}"): TRIGGER,
    ("GET", "/v1/executions/{execution_id}/messages"): TRIGGER | REPORTS,
    ("GET", "/v1/executions/{execution_id}/report"): REPORTS,
    ("GET", "/v1/executions/{execution_id}/report.csv"): REPORTS,
    ("GET", "/v1/messages"): REPORTS,
    ("POST", "/ajo/im/executions/unitary"): TRIGGER,
    ("POST", "/ajo/im/executions/highthroughput"): TRIGGER,
    ("POST", "/ajo/im/executions/audience"): TRIGGER,
    ("GET", "/ajo/im/executions/audience/{execution_id}"): TRIGGER | REPORTS,
    ("GET", "/ajo/im/executions/schedules/{schedule_id}"): TRIGGER | REPORTS,
    ("DELETE", "/ajo/im/executions/schedules/{schedule_id}"): TRIGGER,
    ("POST", "/v1/profiles/imports"): WRITE_PROFILES,
    ("GET", "/v1/profile-imports"): READ_PROFILES,
    ("GET", "/v1/profile-imports/{import_id}"): READ_PROFILES,
    ("PUT", "/v1/profiles/{namespace}/{identity}"): WRITE_PROFILES,
    ("PATCH", "/v1/profiles/{namespace}/{identity}"): WRITE_PROFILES,
    ("GET", "/v1/profiles/{namespace}/{identity}"): READ_PROFILES,
    ("DELETE", "/v1/profiles/{namespace}/{identity}"): WRITE_PROFILES,
    ("POST", "/v1/profiles/merge"): WRITE_PROFILES,
    ("PUT", "/v1/profiles/{namespace}/{identity}/push-tokens"): WRITE_PROFILES,
    ("GET", "/v1/profiles/{namespace}/{identity}/push-tokens"): READ_PROFILES,
    ("DELETE", "/v1/profiles/{namespace}/{identity}/push-tokens"): WRITE_PROFILES,
    ("GET", "/v1/profiles/{namespace}/{identity}/consent-history"): READ_PROFILES,
    ("POST", "/v1/audiences"): WRITE_CAMPAIGNS,
    ("GET", "/v1/audiences"): READ_PROFILES | READ_CAMPAIGNS,
    ("POST", "/v1/audiences/estimate"): READ_PROFILES | READ_CAMPAIGNS,
    ("GET", "/v1/audiences/{audience_id}"): READ_PROFILES | READ_CAMPAIGNS,
    ("PATCH", "/v1/audiences/{audience_id}"): WRITE_CAMPAIGNS,
    ("DELETE", "/v1/audiences/{audience_id}"): WRITE_CAMPAIGNS,
    ("POST", "/v1/audiences/{audience_id}/members"): WRITE_CAMPAIGNS,
    ("POST", "/v1/audiences/{audience_id}/members/remove"): WRITE_CAMPAIGNS,
    ("GET", "/v1/suppressions"): READ_PROFILES,
    ("POST", "/v1/suppressions"): WRITE_PROFILES,
    ("POST", "/v1/suppressions/import"): WRITE_PROFILES,
    ("GET", "/v1/suppressions/{suppression_id}"): READ_PROFILES,
    ("DELETE", "/v1/suppressions/{suppression_id}"): WRITE_PROFILES,
    ("DELETE", "/v1/suppressions"): WRITE_PROFILES,
    ("POST", "/v1/rule-sets"): WRITE_CAMPAIGNS,
    ("GET", "/v1/rule-sets"): READ_CAMPAIGNS,
    ("GET", "/v1/rule-sets/{rule_set_id}"): READ_CAMPAIGNS,
    ("PATCH", "/v1/rule-sets/{rule_set_id}"): WRITE_CAMPAIGNS,
    ("DELETE", "/v1/rule-sets/{rule_set_id}"): WRITE_CAMPAIGNS,
    ("GET", "/v1/webhooks"): ADMIN,
    ("POST", "/v1/webhooks"): ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("PATCH", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("DELETE", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}"): ADMIN,
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay"): ADMIN,
}
# Routes whose path names something in the caller's own workspace by a value anyone may know
# (an email address), where A's key creates A's own object: allowed, as long as B's stays
# as it was.
UPSERTS = {
    ("PUT", "/v1/profiles/{namespace}/{identity}"),
    ("PATCH", "/v1/profiles/{namespace}/{identity}"),
    ("PUT", "/v1/profiles/{namespace}/{identity}/push-tokens"),
}


def api_routes(client: TestClient) -> Iterator[tuple[str, str, APIRoute]]:
    for context in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        route = context.route
        if not isinstance(route, APIRoute):
            continue
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                yield method, context.path, route


def keyed_routes(client: TestClient) -> list[tuple[str, str, APIRoute]]:
    return [(m, p, r) for m, p, r in api_routes(client) if not is_exempt(p, r)]


def dependency_names(dependant: Dependant) -> set[str]:
    names = set()
    for dependency in dependant.dependencies:
        names.add(getattr(dependency.call, "__name__", ""))
        names |= dependency_names(dependency)
    return names


def sandbox_headers(tenant: Tenant) -> dict[str, str]:
    name = workspaces.get_workspace(tenant.runtime.db, tenant.workspace_id)["name"]
    return {"x-sandbox-name": name}


# ---------------------------------------------------------------------------- scope walk


def test_every_route_is_classified(tenant: Tenant):
    routes = {(method, path) for method, path, _ in keyed_routes(tenant.client)}
    assert routes - set(SCOPES) == set(), "classify these routes in SCOPES (or EXEMPT)"
    assert set(SCOPES) - routes == set(), "these routes are gone: drop them from SCOPES"


def test_the_table_agrees_with_the_routes_own_scope_checks(tenant: Tenant):
    checked = 0
    for method, path, route in keyed_routes(tenant.client):
        declared = {
            name.removeprefix("require_")
            for name in dependency_names(route.dependant)
            if name.startswith("require_")
        }
        scopes = {s.value.replace(":", "_") for s in SCOPES.get((method, path), ())}
        if len(declared) == 1 and declared <= {s.value.replace(":", "_") for s in Scope}:
            assert declared == scopes, (method, path, declared, scopes)
            checked += 1
    assert checked > 40


def fill(path: str, seeded: Seeded) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in seeded.ids, f"seed a {name} for {path} (tests/integration/seed.py)"
        return seeded.ids[name]

    return re.sub(r"\{(\w+)\}", value, path)


def test_a_key_without_the_scope_gets_403_and_one_with_it_gets_past(tenant: Tenant):
    seeded = seed_workspace(tenant.client, tenant.workspace_id, tenant.runtime.secret_key)
    headers = sandbox_headers(tenant)
    anonymous = TestClient(tenant.client.app)
    wrong: list[str] = []
    for method, path, _ in keyed_routes(tenant.client):
        allowed = SCOPES[(method, path)]
        url = fill(path, seeded)
        missing = anonymous.request(method, url, headers=headers)
        if missing.status_code != 401:
            wrong.append(f"{method} {path} without a key: {missing.status_code}")
        others = [scope for scope in Scope if scope not in allowed and scope is not Scope.ADMIN]
        if allowed != ANY_KEY:
            with tenant.client_with(*others) as lacking:
                answer = lacking.request(method, url, headers=headers, json={})
            if answer.status_code != 403:
                wrong.append(f"{method} {path} lacking {sorted(allowed)}: {answer.status_code}")
        for scope in allowed:
            with tenant.client_with(scope) as holding:
                answer = holding.request(method, url, headers=headers, json={})
            if answer.status_code in (401, 403):
                wrong.append(f"{method} {path} with {scope}: {answer.status_code} {answer.text}")
    assert not wrong, "\n".join(wrong)


# ------------------------------------------------------------------------- tenancy walk


def snapshot(tenant: Tenant) -> dict[str, list[str]]:
    """Every row of a workspace, in every table that has a workspace_id."""
    rows: dict[str, list[str]] = {}
    with tenant.runtime.db.read() as conn:
        for table in metadata.sorted_tables:
            column = table.c.get("workspace_id")
            if column is None and table.name == "workspaces":
                column = table.c.id
            if column is None:
                continue
            found = conn.execute(sa.select(table).where(column == tenant.workspace_id))
            rows[table.name] = sorted(repr(tuple(row)) for row in found)
    return rows


Body = Callable[[Seeded, Seeded], Any]
# Bodies that get a route past its input checks to the lookup of B's object; other writes
# send {} (their bodies are all optional) and must still find nothing.
BODIES: dict[tuple[str, str], Body] = {
    ("PATCH", "/v1/channel-configurations/{configuration_id}"): lambda b, a: {"name": "taken"},
    ("PATCH", "/v1/campaigns/{campaign_id}"): lambda b, a: {"name": "taken"},
    ("POST", "/v1/campaigns/{campaign_id}/proofs"): lambda b, a: {"to": "mallory@example.com"},
    ("PUT", "/v1/campaigns/{campaign_id}/rule-sets"): lambda b, a: {"rule_set_ids": []},
    ("PATCH", "/v1/profiles/{namespace}/{identity}"): lambda b, a: {
        "attributes": {"firstName": "Mallory"}
    },
    ("PUT", "/v1/profiles/{namespace}/{identity}"): lambda b, a: {
        "attributes": {"firstName": "Mallory"}
    },
    ("PUT", "/v1/profiles/{namespace}/{identity}/push-tokens"): lambda b, a: {
        "app_id": "com.example.app",
        "platform": "android",
        "token": "mallory",
    },
    ("POST", "/v1/audiences/{audience_id}/members"): lambda b, a: {
        "members": [{"namespace": "email", "id": a.address}]
    },
    ("POST", "/v1/audiences/{audience_id}/members/remove"): lambda b, a: {
        "members": [{"namespace": "email", "id": b.address}]
    },
    ("PATCH", "/v1/audiences/{audience_id}"): lambda b, a: {"name": "taken"},
    ("PATCH", "/v1/rule-sets/{rule_set_id}"): lambda b, a: {"name": "taken"},
    ("PATCH", "/v1/webhooks/{webhook_id}"): lambda b, a: {"enabled": False},
}
QUERIES: dict[tuple[str, str], Body] = {
    ("DELETE", "/v1/profiles/{namespace}/{identity}/push-tokens"): lambda b, a: {
        "token": b.ids["push_token"]
    },
}
# Routes without ids in the path that name B's objects in their body: refused all the same.
BY_BODY: list[tuple[str, str, Body]] = [
    (
        "POST",
        "/v1/executions",
        lambda b, a: {
            "campaign_id": b.ids["campaign_id"],
            "recipients": [{"identity": {"namespace": "email", "id": a.address}}],
        },
    ),
    (
        "POST",
        "/v1/executions",
        lambda b, a: {"campaign_id": a.ids["campaign_id"], "audience_id": b.ids["audience_id"]},
    ),
    (
        "POST",
        "/ajo/im/executions/unitary",
        lambda b, a: {
            "campaignId": b.ids["campaign_id"],
            "recipients": [{"userId": a.address, "namespace": "email"}],
        },
    ),
    (
        "POST",
        "/v1/profiles/merge",
        lambda b, a: {
            "into": {"namespace": "email", "id": a.address},
            "from": {"namespace": "email", "id": b.address},
        },
    ),
]


# Lists that need a filter: filtered on B's objects, they must come back empty.
LIST_QUERIES: dict[str, Callable[[Seeded], dict[str, str]]] = {
    "/v1/messages": lambda b: {"execution_id": b.ids["execution_id"]},
}


@pytest.fixture
def two_workspaces(tenant: Tenant, other_tenant: Tenant) -> tuple[Tenant, Seeded, Tenant, Seeded]:
    seeded_a = seed_workspace(tenant.client, tenant.workspace_id, tenant.runtime.secret_key)
    seeded_b = seed_workspace(
        other_tenant.client, other_tenant.workspace_id, other_tenant.runtime.secret_key
    )
    return tenant, seeded_a, other_tenant, seeded_b


def test_a_key_of_one_workspace_reaches_nothing_of_another(two_workspaces):
    a, seeded_a, b, seeded_b = two_workspaces
    before = snapshot(b)
    headers = sandbox_headers(a)
    leaks: list[str] = []
    walked = 0
    for method, path, body in BY_BODY:
        answer = a.client.request(method, path, headers=headers, json=body(seeded_b, seeded_a))
        if answer.status_code < 300 or answer.status_code >= 500:
            leaks.append(f"{method} {path} naming B's objects: {answer.status_code}")
    # Upserts last: they make A's own profile of B's address, which later reads would find.
    routes = sorted(keyed_routes(a.client), key=lambda route: route[:2] in UPSERTS)
    for method, path, _ in routes:
        if "{" not in path:
            continue
        url = fill(path, seeded_b)
        body = BODIES.get((method, path), lambda b, a: {})(seeded_b, seeded_a)
        query = QUERIES.get((method, path), lambda b, a: None)(seeded_b, seeded_a)
        answer = a.client.request(method, url, headers=headers, json=body, params=query)
        walked += 1
        if (method, path) in UPSERTS:
            if answer.status_code >= 500:
                leaks.append(f"{method} {path}: {answer.status_code}")
            continue
        if answer.status_code not in (403, 404):
            leaks.append(f"{method} {url}: {answer.status_code} {answer.text[:200]}")
    assert not leaks, "\n".join(leaks)
    assert walked > 40
    assert snapshot(b) == before


def test_lists_show_nothing_of_another_workspace(two_workspaces):
    a, seeded_a, _, seeded_b = two_workspaces
    headers = sandbox_headers(a)
    secrets = {name: value for name, value in seeded_b.ids.items() if len(value) > 8}
    secrets["address"] = seeded_b.address
    listed = 0
    shown: list[str] = []
    for method, path, _ in keyed_routes(a.client):
        if method != "GET" or "{" in path:
            continue
        params = LIST_QUERIES.get(path, lambda b: None)(seeded_b)
        answer = a.client.get(path, headers=headers, params=params)
        assert answer.status_code == 200, (path, answer.text)
        listed += 1
        shown += [f"{path} shows B's {name}" for name, v in secrets.items() if v in answer.text]
        own = [name for name in ("campaign_id", "audience_id") if seeded_a.ids[name] in answer.text]
        if path in ("/v1/campaigns", "/v1/audiences"):
            assert own, f"{path} does not show A's own objects: the check would prove nothing"
    assert not shown, "\n".join(shown)
    assert listed >= 8


def test_drafts_naming_another_workspaces_objects_never_go_live(two_workspaces):
    """A draft may name ids it does not yet resolve; review resolves them in the draft's own
    workspace, so another workspace's configuration or audience never backs a live campaign."""
    a, _, _, seeded_b = two_workspaces
    references = [
        {"category": "transactional", "channel_configuration_id": seeded_b.ids["configuration_id"]},
        {
            "category": "marketing",
            "audience": {"identity_namespace": "email", "audience_id": seeded_b.ids["audience_id"]},
        },
    ]
    for reference in references:
        body = {
            "name": f"Borrowed {reference['category']}",
            "channel": "email",
            "content": {"subject": "Hi", "html": "<p>Hi</p>"},
            **reference,
        }
        created = a.client.post("/v1/campaigns", json=body)
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]
        activated = a.client.post(f"/v1/campaigns/{campaign_id}/activate")
        assert activated.status_code == 422, activated.text
        assert a.client.get(f"/v1/campaigns/{campaign_id}").json()["status"] == "draft"


def swap_workspace(token: str, workspace_id: str) -> str:
    """The token with its workspace id replaced (bytes 1-16 of every Tidings link token),
    keeping the MAC: what a replay of a link into another workspace looks like."""
    raw = decode(token)
    assert raw is not None
    return encode(raw[:1] + uuid_bytes(workspace_id) + raw[1 + ID_BYTES :])


def test_signed_links_replayed_into_another_workspace_are_refused(two_workspaces):
    a, seeded_a, b, seeded_b = two_workspaces
    before_a, before_b = snapshot(a), snapshot(b)
    visitor = TestClient(a.client.app)
    for token_of, other in ((seeded_b, a), (seeded_a, b)):
        unsubscribe = swap_workspace(token_of.ids["unsubscribe_token"], other.workspace_id)
        click = swap_workspace(token_of.ids["click_token"], other.workspace_id)
        opened = swap_workspace(token_of.ids["open_token"], other.workspace_id)
        assert visitor.get(f"/unsubscribe/{unsubscribe}").status_code == 404
        assert visitor.post(f"/unsubscribe/{unsubscribe}").status_code == 404
        assert visitor.get(f"/t/c/{click}", follow_redirects=False).status_code == 404
        # The pixel answers every fetch with the image; a refused token records nothing.
        assert visitor.get(f"/t/o/{opened}").status_code == 200
        tampered = token_of.ids["unsubscribe_token"][:-2] + "AA"
        assert visitor.post(f"/unsubscribe/{tampered}").status_code == 404
    assert (snapshot(a), snapshot(b)) == (before_a, before_b)
    # The genuine link still works, and only in its own workspace.
    assert visitor.post(f"/unsubscribe/{seeded_b.ids['unsubscribe_token']}").status_code == 200
    assert snapshot(a) == before_a
    assert snapshot(b) != before_b
