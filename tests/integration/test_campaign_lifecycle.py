"""Lifecycle and versions: activate, schedule, stop, archive, delete, duplicate, new versions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Tenant, problem_fields
from tests.integration.helpers import create_ready_campaign
from tidings.campaigns import service as campaigns

pytestmark = pytest.mark.integration


def test_changing_a_live_campaign_opens_a_draft_version_that_replaces_it(tenant: Tenant):
    client = tenant.client
    campaign = create_ready_campaign(client)
    campaign_id = campaign["id"]
    assert client.post(f"/v1/campaigns/{campaign_id}/activate").json()["status"] == "live"

    edited = client.patch(
        f"/v1/campaigns/{campaign_id}", json={"content": {"subject": "New subject"}}
    )
    assert edited.status_code == 200, edited.text
    body = edited.json()
    assert body["status"] == "live"
    assert (body["live_version"], body["draft_version"]) == (1, 2)
    assert body["version"]["state"] == "draft"
    # The live version is untouched until the draft is activated.
    live = client.get(f"/v1/campaigns/{campaign_id}/versions/1").json()
    assert live["content"]["subject"] != "New subject"
    assert live["state"] == "live"

    activated = client.post(f"/v1/campaigns/{campaign_id}/activate").json()
    assert (activated["live_version"], activated["draft_version"]) == (2, None)
    states = [
        v["state"] for v in client.get(f"/v1/campaigns/{campaign_id}/versions").json()["items"]
    ]
    assert states == ["superseded", "live"]


def test_a_patch_that_changes_nothing_opens_no_draft_version(tenant: Tenant):
    client = tenant.client
    campaign = create_ready_campaign(client)
    client.post(f"/v1/campaigns/{campaign['id']}/activate")
    for body in (
        {},
        {"name": campaign["name"]},
        {"content": {"subject": campaign["content"]["subject"]}},
    ):
        unchanged = client.patch(f"/v1/campaigns/{campaign['id']}", json=body).json()
        assert unchanged["draft_version"] is None, body


def test_activating_without_a_draft_version_is_a_conflict(tenant: Tenant):
    campaign = create_ready_campaign(tenant.client)
    tenant.client.post(f"/v1/campaigns/{campaign['id']}/activate")
    again = tenant.client.post(f"/v1/campaigns/{campaign['id']}/activate")
    assert again.status_code == 409


def test_open_and_discard_a_draft_version(tenant: Tenant):
    client = tenant.client
    campaign = create_ready_campaign(client)
    client.post(f"/v1/campaigns/{campaign['id']}/activate")
    opened = client.post(f"/v1/campaigns/{campaign['id']}/versions")
    assert opened.status_code == 200
    assert opened.json()["number"] == 2
    assert client.post(f"/v1/campaigns/{campaign['id']}/versions").json()["number"] == 2
    discarded = client.delete(f"/v1/campaigns/{campaign['id']}/versions/draft").json()
    assert discarded["draft_version"] is None
    assert discarded["version"]["number"] == 1


def test_future_start_schedules_and_the_worker_starts_and_completes(tenant: Tenant):
    client = tenant.client
    start = datetime.now(UTC) + timedelta(hours=1)
    campaign = create_ready_campaign(
        client,
        schedule={
            "start_at": start.isoformat(),
            "end_at": (start + timedelta(hours=1)).isoformat(),
        },
    )
    scheduled = client.post(f"/v1/campaigns/{campaign['id']}/activate").json()
    assert scheduled["status"] == "scheduled"

    db = tenant.runtime.db
    campaigns.advance_schedules(db, datetime.now(UTC))
    assert client.get(f"/v1/campaigns/{campaign['id']}").json()["status"] == "scheduled"
    campaigns.advance_schedules(db, start + timedelta(minutes=1))
    assert client.get(f"/v1/campaigns/{campaign['id']}").json()["status"] == "live"
    campaigns.advance_schedules(db, start + timedelta(hours=2))
    completed = client.get(f"/v1/campaigns/{campaign['id']}").json()
    assert completed["status"] == "completed"
    assert completed["completed_at"] is not None
    assert client.post(f"/v1/campaigns/{campaign['id']}/archive").json()["status"] == "archived"


@pytest.mark.parametrize(
    ("steps", "action", "expected_status"),
    [
        ([], "stop", 409),
        ([], "archive", 409),
        (["activate"], "delete", 409),
        (["activate"], "archive", 409),
        (["activate", "stop"], "activate", 409),
        (["activate", "stop", "archive"], "stop", 409),
        (["activate", "stop"], "archive", 200),
        (["activate"], "stop", 200),
    ],
)
def test_transitions_follow_the_state_machine(tenant: Tenant, steps, action, expected_status):
    client = tenant.client
    campaign = create_ready_campaign(client)
    for step in steps:
        assert client.post(f"/v1/campaigns/{campaign['id']}/{step}").status_code == 200
    if action == "delete":
        response = client.delete(f"/v1/campaigns/{campaign['id']}")
    else:
        response = client.post(f"/v1/campaigns/{campaign['id']}/{action}")
    assert response.status_code == expected_status, response.text
    if expected_status == 409:
        assert response.headers["content-type"].startswith("application/problem+json")


def test_stopped_campaign_cannot_be_edited_but_can_be_duplicated(tenant: Tenant):
    client = tenant.client
    campaign = create_ready_campaign(client)
    client.post(f"/v1/campaigns/{campaign['id']}/activate")
    client.patch(f"/v1/campaigns/{campaign['id']}", json={"name": "pending edit"})
    stopped = client.post(f"/v1/campaigns/{campaign['id']}/stop").json()
    assert stopped["status"] == "stopped"
    assert stopped["draft_version"] is None
    assert client.patch(f"/v1/campaigns/{campaign['id']}", json={"name": "x"}).status_code == 409

    copy = client.post(f"/v1/campaigns/{campaign['id']}/duplicate")
    assert copy.status_code == 201
    duplicate = copy.json()
    assert duplicate["status"] == "draft"
    assert duplicate["name"] == "Spring sale (copy)"
    assert duplicate["duplicated_from_id"] == campaign["id"]
    assert duplicate["content"] == campaign["content"]
    assert client.get(f"/v1/campaigns/{duplicate['id']}/review").json()["ready"] is True


def test_draft_campaign_is_deleted_with_its_versions(tenant: Tenant):
    campaign = create_ready_campaign(tenant.client)
    assert tenant.client.delete(f"/v1/campaigns/{campaign['id']}").status_code == 204
    assert tenant.client.get(f"/v1/campaigns/{campaign['id']}").status_code == 404


def test_category_and_channel_are_fixed_after_activation(tenant: Tenant):
    client = tenant.client
    campaign = create_ready_campaign(client)
    changed = client.patch(f"/v1/campaigns/{campaign['id']}", json={"category": "transactional"})
    assert changed.json()["category"] == "transactional"
    client.patch(f"/v1/campaigns/{campaign['id']}", json={"category": "marketing"})
    client.post(f"/v1/campaigns/{campaign['id']}/activate")
    refused = client.patch(f"/v1/campaigns/{campaign['id']}", json={"channel": "sms"})
    assert refused.status_code == 422
    assert problem_fields(refused) == ["channel"]


def test_listing_filters_and_paginates(tenant: Tenant):
    client = tenant.client
    ids = []
    for index in range(5):
        tags = ["even"] if index % 2 == 0 else ["odd"]
        ids.append(create_ready_campaign(client, name=f"Campaign {index}", tags=tags)["id"])
    client.post(f"/v1/campaigns/{ids[0]}/activate")

    first = client.get("/v1/campaigns", params={"limit": 2}).json()
    assert [c["id"] for c in first["items"]] == [ids[4], ids[3]]
    rest = client.get("/v1/campaigns", params={"limit": 10, "cursor": first["next_cursor"]}).json()
    assert [c["id"] for c in rest["items"]] == [ids[2], ids[1], ids[0]]
    assert rest["next_cursor"] is None

    def listed(**params):
        return {c["id"] for c in client.get("/v1/campaigns", params=params).json()["items"]}

    assert listed(tag="even") == {ids[0], ids[2], ids[4]}
    assert listed(status="live") == {ids[0]}
    assert listed(status="draft", tag="odd") == {ids[1], ids[3]}
    assert listed(q="paign 3") == {ids[3]}
    assert listed(channel="sms") == set()
    assert listed(category="marketing") == set(ids)
    bad = client.get("/v1/campaigns", params={"status": "sleeping"})
    assert bad.status_code == 422
    assert problem_fields(bad) == ["status"]
