"""Review of the audience step: the audience a marketing campaign names, high-throughput
transactional campaigns that personalize from the call's context alone."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Tenant, authorized_client, problem_fields
from tests.integration.helpers import create_configuration, email_campaign_body
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration


def campaign(tenant: Tenant, category: str = "marketing", **overrides: Any) -> dict[str, Any]:
    configuration = create_configuration(tenant.client, category=category)
    body = email_campaign_body(configuration["id"], category=category, **overrides)
    response = tenant.client.post("/v1/campaigns", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def review(tenant: Tenant, campaign_id: str) -> dict[str, Any]:
    response = tenant.client.get(f"/v1/campaigns/{campaign_id}/review")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def errors_on(result: dict[str, Any], field: str) -> list[str]:
    return [error["message"] for error in result["errors"] if error["field"] == field]


def test_a_marketing_campaign_must_name_an_audience_of_its_workspace(tenant: Tenant):
    other = workspaces.create_workspace(tenant.runtime.db, f"other-{uuid.uuid4().hex[:10]}")
    _, secret = workspaces.create_api_key(tenant.runtime.db, other["id"], "admin", [Scope.ADMIN])
    outsider = authorized_client(tenant.client.app, secret)
    foreign = outsider.post("/v1/audiences", json={"name": "theirs"}).json()
    mine = tenant.client.post("/v1/audiences", json={"name": "mine"}).json()

    for missing in ("no-such-audience", foreign["id"]):
        created = campaign(tenant, audience={"audience_id": missing})
        result = review(tenant, created["id"])
        assert result["ready"] is False
        assert errors_on(result, "audience.audience_id") == ["no such audience in this workspace"]
        refused = tenant.client.post(f"/v1/campaigns/{created['id']}/activate")
        assert refused.status_code == 422
        assert "audience.audience_id" in problem_fields(refused)

    created = campaign(tenant, audience={"audience_id": mine["id"]})
    result = review(tenant, created["id"])
    assert result["errors"] == [], result
    assert tenant.client.post(f"/v1/campaigns/{created['id']}/activate").status_code == 200


def test_a_transactional_campaign_with_an_audience_only_warns(tenant: Tenant):
    created = campaign(tenant, "transactional", audience={"audience_id": "no-such-audience"})
    result = review(tenant, created["id"])
    assert errors_on(result, "audience.audience_id") == []
    assert any(w["field"] == "audience.audience_id" for w in result["warnings"])


def test_high_throughput_content_may_not_read_the_profile(tenant: Tenant):
    created = campaign(
        tenant,
        "transactional",
        content={
            "subject": "{{ profile.firstName }}, order {{ context.order.id }}",
            "html": "<p>{{ profile.address.city }} {{ profile }}</p>",
            "text": "Order {{ context.order.id }}",
        },
        audience={"high_throughput": True},
    )
    assert created["audience"]["high_throughput"] is True
    result = review(tenant, created["id"])
    assert result["ready"] is False
    subject = errors_on(result, "content.subject")
    assert len(subject) == 1 and subject[0].startswith("profile.firstName is not available")
    html = errors_on(result, "content.html")
    assert len(html) == 2
    assert any(m.startswith("profile.address.city ") for m in html)
    assert any(m.startswith("profile is not available") for m in html)
    assert errors_on(result, "content.text") == []
    # The "no profile has it" warnings would only repeat the errors.
    assert not any("no profile of this workspace" in w["message"] for w in result["warnings"])

    fixed = tenant.client.patch(
        f"/v1/campaigns/{created['id']}",
        json={"content": {"subject": "Order {{ context.order.id }}", "html": "<p>Thanks</p>"}},
    )
    assert fixed.status_code == 200, fixed.text
    assert review(tenant, created["id"])["errors"] == []


def test_high_throughput_is_for_transactional_campaigns_only(tenant: Tenant):
    created = campaign(tenant, audience={"high_throughput": True})
    result = review(tenant, created["id"])
    assert errors_on(result, "audience.high_throughput") == [
        "only transactional campaigns can be high-throughput"
    ]


def test_high_throughput_round_trips_through_patch(tenant: Tenant):
    created = campaign(tenant, "transactional")
    assert created["audience"]["high_throughput"] is False
    url = f"/v1/campaigns/{created['id']}"
    patched = tenant.client.patch(url, json={"audience": {"high_throughput": True}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["audience"] == {
        "identity_namespace": "email",
        "create_new_profiles": False,
        "audience_id": None,
        "high_throughput": True,
    }
    # Other audience keys merge around it.
    tenant.client.patch(url, json={"audience": {"create_new_profiles": True}})
    audience = tenant.client.get(url).json()["audience"]
    assert audience["high_throughput"] is True
    assert audience["create_new_profiles"] is True
    bad = tenant.client.patch(url, json={"audience": {"high_throughput": "sometimes"}})
    assert bad.status_code == 422
    assert problem_fields(bad) == ["audience.high_throughput"]
    tenant.client.patch(url, json={"audience": {"high_throughput": False}})
    assert tenant.client.get(url).json()["audience"]["high_throughput"] is False
