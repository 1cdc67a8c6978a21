"""The native execution API: validation before the 202, durable acceptance, idempotency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import Tenant, problem_fields
from tests.integration.helpers import create_configuration
from tidings.executions.models import executions, messages
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration


def live_campaign(tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    client = tenant.client
    category = overrides.get("category", "transactional")
    configuration = create_configuration(client, category=category)
    body: dict[str, Any] = {
        "name": "Order confirmation",
        "category": category,
        "channel": "email",
        "channel_configuration_id": configuration["id"],
        "content": {
            "subject": "Order {{ context.order.id }}",
            "html": "<p>Hi {{ profile.firstName }}, order {{ context.order.id }}</p>",
        },
        "audience": {"identity_namespace": "email", "create_new_profiles": True},
    }
    body.update(overrides)
    campaign = client.post("/v1/campaigns", json=body).json()
    activated = client.post(f"/v1/campaigns/{campaign['id']}/activate")
    assert activated.status_code == 200, activated.text
    return activated.json()


def recipient(address: str, **extra: Any) -> dict[str, Any]:
    return {"identity": {"namespace": "email", "id": address}, **extra}


def test_a_unitary_execution_is_on_disk_before_the_202(tenant: Tenant):
    campaign = live_campaign(tenant)
    trigger = tenant.client_with(Scope.EXECUTIONS_TRIGGER)
    response = trigger.post(
        "/v1/executions",
        json={
            "campaign_id": campaign["id"],
            "context": {"order": {"id": "A-1"}, "shop": "Main"},
            "recipients": [
                recipient("Ada@Example.com", context={"order": {"id": "A-2"}}),
                recipient("grace@example.com", profile={"firstName": "Grace"}),
            ],
        },
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["accepted"] == 2
    with tenant.runtime.db.read() as conn:
        rows = (
            conn.execute(
                messages.select().where(messages.c.execution_id == accepted["execution_id"])
            )
            .mappings()
            .all()
        )
        execution = (
            conn.execute(executions.select().where(executions.c.id == accepted["execution_id"]))
            .mappings()
            .one()
        )
    assert execution["version_id"] is not None
    by_recipient = {row["recipient_id"]: row for row in rows}
    assert set(by_recipient) == {"ada@example.com", "grace@example.com"}
    assert {row["state"] for row in rows} == {"queued"}
    # Each recipient's context is merged over the shared one.
    assert by_recipient["ada@example.com"]["context"] == {"order": {"id": "A-2"}, "shop": "Main"}
    assert by_recipient["grace@example.com"]["context"]["order"] == {"id": "A-1"}
    assert by_recipient["ada@example.com"]["address"] == "ada@example.com"
    # Unknown recipients became profiles, as the campaign allows.
    assert tenant.client.get("/v1/profiles/email/grace@example.com").json()["attributes"] == {
        "firstName": "Grace"
    }
    status = trigger.get(f"/v1/executions/{accepted['execution_id']}").json()
    assert status["counts"] == {"queued": 2}
    assert status["status"] == "running"
    assert status["version"] == 1
    listed = trigger.get(f"/v1/executions/{accepted['execution_id']}/messages").json()
    assert {m["recipient"]["id"] for m in listed["items"]} == set(by_recipient)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"recipients": []}, "recipients"),
        ({"recipients": [recipient(f"r{i}@example.com") for i in range(21)]}, "recipients"),
        (
            {"recipients": [recipient("a@example.com"), recipient("A@example.com")]},
            "recipients.1.identity.id",
        ),
        (
            {"recipients": [{"identity": {"namespace": "phone", "id": "+14155550100"}}]},
            "recipients.0.identity.namespace",
        ),
        ({"recipients": [recipient("not-an-address")]}, "recipients.0.identity.id"),
        (
            {"recipients": [recipient("a@example.com", channel_data={"email": "nope"})]},
            "recipients.0.channel_data.email",
        ),
        (
            {"recipients": [recipient("a@example.com")], "context": {"blob": "x" * 200_001}},
            "context",
        ),
        ({"recipients": [recipient("a@example.com")], "campaign_id": "missing"}, "campaign_id"),
        ({}, "recipients"),
    ],
)
def test_invalid_triggers_are_refused_before_anything_is_stored(tenant: Tenant, body, field):
    campaign = live_campaign(tenant)
    response = tenant.client.post("/v1/executions", json={"campaign_id": campaign["id"], **body})
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)
    with tenant.runtime.db.read() as conn:
        count = conn.execute(
            executions.select().where(executions.c.workspace_id == tenant.workspace_id)
        ).all()
    assert count == []


def test_unknown_recipients_are_refused_unless_the_campaign_creates_profiles(tenant: Tenant):
    campaign = live_campaign(
        tenant, audience={"identity_namespace": "email", "create_new_profiles": False}
    )
    tenant.client.put("/v1/profiles/email/known@example.com", json={})
    response = tenant.client.post(
        "/v1/executions",
        json={
            "campaign_id": campaign["id"],
            "recipients": [recipient("known@example.com"), recipient("stranger@example.com")],
        },
    )
    assert response.status_code == 422
    assert problem_fields(response) == ["recipients.1.identity.id"]


def test_only_live_campaigns_inside_their_window_take_triggers(tenant: Tenant):
    campaign = live_campaign(tenant)
    tenant.client.post(f"/v1/campaigns/{campaign['id']}/stop")
    response = tenant.client.post(
        "/v1/executions",
        json={"campaign_id": campaign["id"], "recipients": [recipient("a@example.com")]},
    )
    assert response.status_code == 422
    assert "stopped" in response.json()["errors"][0]["message"]


def test_the_same_request_id_replays_and_a_different_body_is_refused(tenant: Tenant):
    campaign = live_campaign(tenant)
    body = {
        "campaign_id": campaign["id"],
        "request_id": "order-42",
        "recipients": [recipient("a@example.com")],
        "context": {"order": {"id": 42}},
    }
    first = tenant.client.post("/v1/executions", json=body)
    again = tenant.client.post("/v1/executions", json=body)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    changed = tenant.client.post("/v1/executions", json={**body, "context": {"order": {"id": 43}}})
    assert changed.status_code == 422
    assert problem_fields(changed) == ["request_id"]
    header_key = tenant.client.post(
        "/v1/executions",
        json={k: v for k, v in body.items() if k != "request_id"},
        headers={"Idempotency-Key": "order-42"},
    )
    assert header_key.json() == first.json()
    with tenant.runtime.db.read() as conn:
        stored = conn.execute(
            executions.select().where(executions.c.workspace_id == tenant.workspace_id)
        ).all()
    assert len(stored) == 1


def test_concurrent_duplicates_make_exactly_one_execution(tenant: Tenant):
    campaign = live_campaign(tenant)
    body = {
        "campaign_id": campaign["id"],
        "request_id": "burst-1",
        "recipients": [recipient("burst@example.com")],
    }
    barrier = threading.Barrier(8)

    def send(_: int) -> tuple[int, dict[str, Any]]:
        barrier.wait()
        response = tenant.client.post("/v1/executions", json=body)
        return response.status_code, response.json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))
    statuses = sorted(status for status, _ in results)
    assert set(statuses) <= {202, 409}, results
    ids = {payload["execution_id"] for status, payload in results if status == 202}
    assert len(ids) == 1
    with tenant.runtime.db.read() as conn:
        stored = conn.execute(
            executions.select().where(executions.c.workspace_id == tenant.workspace_id)
        ).all()
    assert len(stored) == 1


def test_triggering_needs_its_scope_and_reading_needs_trigger_or_reports(tenant: Tenant):
    campaign = live_campaign(tenant)
    body = {"campaign_id": campaign["id"], "recipients": [recipient("a@example.com")]}
    reader = tenant.client_with(Scope.CAMPAIGNS_READ)
    assert reader.post("/v1/executions", json=body).status_code == 403
    accepted = tenant.client.post("/v1/executions", json=body).json()
    assert reader.get(f"/v1/executions/{accepted['execution_id']}").status_code == 403
    reports = tenant.client_with(Scope.REPORTS_READ)
    assert reports.get(f"/v1/executions/{accepted['execution_id']}").status_code == 200
