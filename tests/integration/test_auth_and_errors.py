"""Keys, scopes, workspace isolation, and RFC 9457 errors for malformed input."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant, authorized_client, problem_fields
from tests.integration.helpers import create_ready_campaign
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration


def test_requests_without_a_valid_key_are_refused(tenant: Tenant):
    anonymous = authorized_client(tenant.client.app, "tdg_not-a-real-key-at-all")
    response = anonymous.get("/v1/campaigns")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    del anonymous.headers["Authorization"]
    assert anonymous.get("/v1/campaigns").status_code == 401


@pytest.mark.parametrize(
    ("scopes", "method", "path", "allowed"),
    [
        ((Scope.CAMPAIGNS_READ,), "GET", "/v1/campaigns", True),
        ((Scope.CAMPAIGNS_READ,), "POST", "/v1/campaigns", False),
        ((Scope.CAMPAIGNS_WRITE,), "GET", "/v1/campaigns", False),
        ((Scope.PROFILES_READ,), "GET", "/v1/campaigns", False),
        ((Scope.PROFILES_READ,), "PUT", "/v1/profiles/email/a@example.com", False),
        ((Scope.PROFILES_WRITE,), "PUT", "/v1/profiles/email/a@example.com", True),
        ((Scope.CAMPAIGNS_WRITE,), "POST", "/v1/channel-configurations", False),
        ((Scope.CAMPAIGNS_READ,), "GET", "/v1/api-keys", False),
        ((Scope.ADMIN,), "GET", "/v1/api-keys", True),
    ],
)
def test_scopes_are_enforced(tenant: Tenant, scopes, method, path, allowed):
    client = tenant.client_with(*scopes)
    body = {"name": "x", "category": "marketing", "channel": "email"} if method == "POST" else {}
    response = client.request(method, path, json=body if method != "GET" else None)
    if allowed:
        assert response.status_code < 400, response.text
    else:
        assert response.status_code == 403, response.text


def test_any_valid_key_reads_its_workspace(tenant: Tenant):
    response = tenant.client_with(Scope.PROFILES_READ).get("/v1/workspace")
    assert response.status_code == 200
    assert response.json()["id"] == tenant.workspace_id


def test_preview_for_a_stored_profile_needs_profile_access(tenant: Tenant):
    campaign = create_ready_campaign(tenant.client)
    reader = tenant.client_with(Scope.CAMPAIGNS_READ)
    body = {"identity": {"namespace": "email", "id": "a@example.com"}}
    assert reader.post(f"/v1/campaigns/{campaign['id']}/preview", json=body).status_code == 403
    assert reader.post(f"/v1/campaigns/{campaign['id']}/preview", json={}).status_code == 200


def test_a_workspace_never_sees_another(tenant: Tenant):
    campaign = create_ready_campaign(tenant.client)
    tenant.client.put("/v1/profiles/email/own@example.com", json={})
    other = workspaces.create_workspace(tenant.runtime.db, f"other-{campaign['id'][-8:]}")
    _, secret = workspaces.create_api_key(tenant.runtime.db, other["id"], "admin", [Scope.ADMIN])
    outsider = authorized_client(tenant.client.app, secret)
    assert outsider.get(f"/v1/campaigns/{campaign['id']}").status_code == 404
    assert outsider.post(f"/v1/campaigns/{campaign['id']}/activate").status_code == 404
    assert outsider.patch(f"/v1/campaigns/{campaign['id']}", json={"name": "x"}).status_code == 404
    assert outsider.get("/v1/campaigns").json()["items"] == []
    config_id = campaign["channel_configuration_id"]
    assert outsider.get(f"/v1/channel-configurations/{config_id}").status_code == 404
    assert outsider.get("/v1/profiles/email/own@example.com").status_code == 404
    # Using another workspace's configuration is a review error, not a leak.
    mine = outsider.post(
        "/v1/campaigns",
        json={
            "name": "x",
            "category": "marketing",
            "channel": "email",
            "channel_configuration_id": config_id,
        },
    ).json()
    review = outsider.get(f"/v1/campaigns/{mine['id']}/review").json()
    assert any(
        e["field"] == "channel_configuration_id" and "no such" in e["message"]
        for e in review["errors"]
    )


def test_api_keys_are_shown_once_and_revocable(tenant: Tenant):
    client = tenant.client
    created = client.post("/v1/api-keys", json={"name": "ci", "scopes": ["campaigns:read"]})
    assert created.status_code == 201
    key = created.json()
    assert key["secret"].startswith("tdg_")
    listed = client.get("/v1/api-keys").json()["items"]
    assert all("secret" not in item for item in listed)
    assert key["id"] in {item["id"] for item in listed}
    ci = authorized_client(client.app, key["secret"])
    assert ci.get("/v1/campaigns").status_code == 200
    assert client.delete(f"/v1/api-keys/{key['id']}").json()["revoked_at"] is not None
    assert ci.get("/v1/campaigns").status_code == 401


@pytest.mark.parametrize(
    ("content", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b"[]", 422, "body"),
        (b'{"name": "x", "category": "marketing", "channel": "fax"}', 422, "channel"),
        (b'{"name": "", "category": "marketing", "channel": "email"}', 422, "name"),
        (b'{"name": "x", "category": "marketing", "channel": "email", "bogus": 1}', 422, "bogus"),
        (b'{"category": "marketing", "channel": "email"}', 422, "name"),
        (
            b'{"name": "x", "category": "marketing", "channel": "email",'
            b' "content": {"body": "hi"}}',
            422,
            "content.body",
        ),
        (
            b'{"name": "x", "category": "marketing", "channel": "email",'
            b' "schedule": {"start_at": "2030-01-01T00:00:00"}}',
            422,
            "schedule.start_at",
        ),
        (
            b'{"name": "x", "category": "marketing", "channel": "email",'
            b' "tags": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n",'
            b' "o", "p", "q", "r", "s", "t", "u"]}',
            422,
            "tags",
        ),
    ],
)
def test_malformed_bodies_get_a_problem_naming_the_field(tenant: Tenant, content, status, field):
    response = tenant.client.post(
        "/v1/campaigns", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert field in problem_fields(response)
    assert response.json()["status"] == status


def test_unknown_routes_and_methods_are_problems(tenant: Tenant):
    missing = tenant.client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    wrong = tenant.client.put("/v1/campaigns")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"].startswith("application/problem+json")


def test_openapi_and_health(tenant: Tenant):
    spec = tenant.client.get("/openapi.json").json()
    assert "/v1/campaigns/{campaign_id}/review" in spec["paths"]
    assert "/v1/channel-configurations" in spec["paths"]
    assert tenant.client.get("/healthz").json() == {"status": "ok"}
