"""The AJO-compatible execution API: AJO's wire format over the same execution service."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Tenant
from tests.integration.test_executions import live_campaign
from tidings.executions.models import messages
from tidings.workspaces import service as workspaces

pytestmark = pytest.mark.integration


def ajo_headers(tenant: Tenant) -> dict[str, str]:
    workspace = workspaces.get_workspace(tenant.runtime.db, tenant.workspace_id)
    return {
        "x-sandbox-name": workspace["name"],
        "x-api-key": "integration-client",
        "x-gw-ims-org-id": "ORG@AdobeOrg",
    }


def unitary_body(campaign_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "requestId": "ajo-req-1",
        "campaignId": campaign_id,
        "recipients": [
            {
                "type": "aep",
                "userId": "jane@example.com",
                "namespace": "email",
                "mergePolicyName": "Default Timebased",
                "profile": {"person": {"name": {"firstName": "Jane"}}},
                "context": {"order": {"id": "O-1"}},
            },
            {
                "type": "external",
                "userId": "guest@example.com",
                "namespace": "email",
                "channelData": {"emailAddress": "guest+orders@example.com"},
                "context": {"order": {"id": "O-2"}},
            },
        ],
    }
    body.update(overrides)
    return body


def test_unitary_execution_in_ajo_format(tenant: Tenant):
    campaign = live_campaign(tenant)
    response = tenant.client.post(
        "/ajo/im/executions/unitary",
        json=unitary_body(campaign["id"]),
        headers=ajo_headers(tenant),
    )
    assert response.status_code == 202, response.text
    payload = response.json()
    assert set(payload) == {
        "executionId",
        "requestId",
        "createdAt",
        "createdBy",
        "modifiedAt",
        "modifiedBy",
    }
    assert payload["requestId"] == "ajo-req-1"
    with tenant.runtime.db.read() as conn:
        rows = {
            row["recipient_id"]: row
            for row in conn.execute(
                messages.select().where(messages.c.execution_id == payload["executionId"])
            ).mappings()
        }
    assert rows["jane@example.com"]["profile_data"] == {"person": {"name": {"firstName": "Jane"}}}
    assert rows["jane@example.com"]["profile_id"] is not None
    # External recipients are personalized from the call alone: no stored profile.
    assert rows["guest@example.com"]["profile_id"] is None
    assert rows["guest@example.com"]["address"] == "guest+orders@example.com"
    assert tenant.client.get("/v1/profiles/email/guest@example.com").status_code == 404
    # The same requestId again is a replay, as on the native API.
    again = tenant.client.post(
        "/ajo/im/executions/unitary",
        json=unitary_body(campaign["id"]),
        headers=ajo_headers(tenant),
    )
    assert again.json()["executionId"] == payload["executionId"]


@pytest.mark.parametrize(
    ("mutate", "status", "context_key"),
    [
        (lambda body: body.pop("requestId"), 400, "requestId"),
        (lambda body: body.update(recipients=[]), 400, "recipients"),
        (lambda body: body["recipients"][0].update(type="crm"), 400, "recipients.0.type"),
        (lambda body: body.update(campaignId="nope"), 400, "campaign_id"),
    ],
)
def test_errors_use_ajo_error_response(tenant: Tenant, mutate, status, context_key):
    campaign = live_campaign(tenant)
    body = unitary_body(campaign["id"])
    mutate(body)
    response = tenant.client.post(
        "/ajo/im/executions/unitary", json=body, headers=ajo_headers(tenant)
    )
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) == {"type", "title", "status", "report"}
    assert error["status"] == status
    assert context_key in error["report"]["additionalContext"]
    assert all(isinstance(v, str) for v in error["report"]["additionalContext"].values())


def test_sandbox_must_be_the_keys_workspace(tenant: Tenant):
    campaign = live_campaign(tenant)
    headers = {**ajo_headers(tenant), "x-sandbox-name": "prod"}
    wrong = tenant.client.post(
        "/ajo/im/executions/unitary", json=unitary_body(campaign["id"]), headers=headers
    )
    assert wrong.status_code == 403
    missing = tenant.client.post(
        "/ajo/im/executions/unitary",
        json=unitary_body(campaign["id"]),
        headers={"x-api-key": "x"},
    )
    assert missing.status_code == 400
    assert "x-sandbox-name" in missing.json()["report"]["additionalContext"]
    del tenant.client.headers["Authorization"]
    try:
        anonymous = tenant.client.post(
            "/ajo/im/executions/unitary",
            json=unitary_body(campaign["id"]),
            headers=ajo_headers(tenant),
        )
    finally:
        tenant.client.headers["Authorization"] = f"Bearer {tenant.admin_key}"
    assert anonymous.status_code == 401
    assert anonymous.json()["status"] == 401


def high_throughput_campaign(tenant: Tenant) -> dict[str, Any]:
    # Personalized from the call's context alone, as review requires of such campaigns.
    return live_campaign(
        tenant,
        content={
            "subject": "Order {{ context.order.id }}",
            "html": "<p>Order {{ context.order.id }} is confirmed</p>",
        },
        audience={"identity_namespace": "email", "high_throughput": True},
    )


def test_high_throughput_takes_external_recipients_only(tenant: Tenant):
    campaign = high_throughput_campaign(tenant)
    mixed = tenant.client.post(
        "/ajo/im/executions/highthroughput",
        json=unitary_body(campaign["id"]),
        headers=ajo_headers(tenant),
    )
    assert mixed.status_code == 400
    assert "recipients.0.type" in mixed.json()["report"]["additionalContext"]
    external = unitary_body(
        campaign["id"], requestId="ht-1", recipients=unitary_body(campaign["id"])["recipients"][1:]
    )
    accepted = tenant.client.post(
        "/ajo/im/executions/highthroughput", json=external, headers=ajo_headers(tenant)
    )
    assert accepted.status_code == 202, accepted.text


def test_high_throughput_serves_high_throughput_campaigns_only(tenant: Tenant):
    ordinary = live_campaign(tenant)
    body = unitary_body(ordinary["id"], recipients=unitary_body(ordinary["id"])["recipients"][1:])
    refused = tenant.client.post(
        "/ajo/im/executions/highthroughput", json=body, headers=ajo_headers(tenant)
    )
    assert refused.status_code == 400
    assert "campaign_id" in refused.json()["report"]["additionalContext"]
    # And a high-throughput campaign reads no stored profile, whichever API triggers it.
    fast = high_throughput_campaign(tenant)
    aep = tenant.client.post(
        "/ajo/im/executions/unitary",
        json=unitary_body(fast["id"], requestId="ht-aep"),
        headers=ajo_headers(tenant),
    )
    assert aep.status_code == 400
    assert "recipients.0.external" in aep.json()["report"]["additionalContext"]


def test_health(tenant: Tenant):
    assert tenant.client.get("/ajo/im/health").json() == {"status": "UP"}
