"""Inputs and timings that once produced 500s or lost data, on both backends."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Tenant, problem_fields
from tests.integration.helpers import create_configuration, create_ready_campaign
from tidings.bootstrap import prepare
from tidings.campaigns import service as campaigns
from tidings.profiles import service as profiles
from tidings.profiles.schemas import ProfileUpsert

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/campaigns/a%00b", None),
        ("GET", "/v1/campaigns?cursor=a%00", None),
        ("GET", "/v1/campaigns?q=a%00", None),
        ("GET", "/v1/channel-configurations/a%00b", None),
        ("PUT", "/v1/profiles/crmId/ab%00cd", {}),
        ("POST", "/v1/campaigns", {"name": "a\x00", "category": "marketing", "channel": "email"}),
        (
            "POST",
            "/v1/channel-configurations",
            {
                "name": "n\x00",
                "channel": "email",
                "category": "marketing",
                "email": {"from_address": "a@example.com"},
            },
        ),
    ],
)
def test_nul_characters_never_cause_a_500(tenant: Tenant, method, path, body):
    response = tenant.client.request(method, path, json=body)
    assert response.status_code < 500, response.text
    if response.status_code == 422:
        assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"a": "x\x00y"}, "attributes.a"),
        ({"a\x00": 1}, "attributes"),
        ({"n": [1, {"deep": float("inf")}]}, "attributes.n.1.deep"),
    ],
)
def test_unstorable_attributes_are_refused_on_every_backend(tenant: Tenant, attributes, field):
    # The JSON text carries what json.dumps writes for inf (Infinity), as 1e400 would parse.
    import json

    response = tenant.client.put(
        "/v1/profiles/email/a@example.com",
        content=json.dumps({"attributes": attributes}),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert problem_fields(response) == [field]


def test_out_of_range_dates_and_numbers_are_422(tenant: Tenant):
    campaign = create_ready_campaign(tenant.client)
    for schedule in (
        {"start_at": "0001-01-01T00:00:00+01:00"},
        {"end_at": "9999-12-31T23:30:00-01:00"},
    ):
        response = tenant.client.patch(
            f"/v1/campaigns/{campaign['id']}", json={"schedule": schedule}
        )
        assert response.status_code == 422, response.text
        assert problem_fields(response)[0].startswith("schedule.")
    preview = tenant.client.post(f"/v1/campaigns/{campaign['id']}/preview", json={"version": 2**40})
    assert preview.status_code == 422
    assert problem_fields(preview) == ["version"]


def test_header_injection_in_from_name_is_refused(tenant: Tenant):
    response = tenant.client.post(
        "/v1/channel-configurations",
        json={
            "name": "x",
            "channel": "email",
            "category": "marketing",
            "email": {"from_address": "a@example.com", "from_name": "Shop\r\nBcc: x@evil.test"},
        },
    )
    assert response.status_code == 422
    assert problem_fields(response) == ["email.from_name"]


def test_oversized_and_undecodable_bodies_are_problems(tenant: Tenant):
    huge = b'{"name": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    response = tenant.client.post(
        "/v1/campaigns", content=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert problem_fields(response) == ["body"]

    def chunks():
        for _ in range(40):
            yield b"x" * 100_000

    streamed = tenant.client.post(
        "/v1/campaigns", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    bad_utf8 = tenant.client.post(
        "/v1/campaigns", content=b'{"name": "\xff"}', headers={"Content-Type": "application/json"}
    )
    assert bad_utf8.status_code in (400, 422)
    assert problem_fields(bad_utf8) == ["body"]


def test_concurrent_consent_changes_are_both_kept(tenant: Tenant):
    db = tenant.runtime.db
    for attempt in range(8):
        address = f"race{attempt}@example.com"
        profiles.upsert(db, tenant.workspace_id, "email", address, ProfileUpsert())
        bodies = [ProfileUpsert(consent={"email": "in"}), ProfileUpsert(consent={"sms": "in"})]
        barrier = threading.Barrier(2)

        def put(
            body: ProfileUpsert, address: str = address, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            profiles.upsert(db, tenant.workspace_id, "email", address, body, merge=True)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(put, bodies))
        consent = profiles.get(db, tenant.workspace_id, "email", address)["consent"]
        assert (consent["email"]["status"], consent["sms"]["status"]) == ("in", "in")


def test_reads_see_one_snapshot_while_drafts_come_and_go(tenant: Tenant):
    client = tenant.client
    campaign = create_ready_campaign(client)
    client.post(f"/v1/campaigns/{campaign['id']}/activate")
    stop = threading.Event()
    failures: list[int] = []

    def read() -> None:
        while not stop.is_set():
            for path in (f"/v1/campaigns/{campaign['id']}", "/v1/campaigns"):
                status = client.get(path).status_code
                if status != 200:
                    failures.append(status)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for index in range(40):
            client.patch(f"/v1/campaigns/{campaign['id']}", json={"name": f"n{index}"})
            client.delete(f"/v1/campaigns/{campaign['id']}/versions/draft")
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert failures == []


def test_configuration_lock_follows_the_live_version_only(tenant: Tenant):
    client = tenant.client
    campaign = create_ready_campaign(client)
    first = campaign["channel_configuration_id"]
    client.post(f"/v1/campaigns/{campaign['id']}/activate")
    second = create_configuration(client)["id"]
    client.patch(f"/v1/campaigns/{campaign['id']}", json={"channel_configuration_id": second})
    client.post(f"/v1/campaigns/{campaign['id']}/activate")
    assert (
        client.patch(
            f"/v1/channel-configurations/{first}", json={"category": "transactional"}
        ).status_code
        == 200
    )
    assert (
        client.patch(
            f"/v1/channel-configurations/{second}", json={"category": "transactional"}
        ).status_code
        == 409
    )


def test_completion_drops_an_open_draft(tenant: Tenant):
    client = tenant.client
    end = datetime.now(UTC) + timedelta(hours=1)
    campaign = create_ready_campaign(client, schedule={"end_at": end.isoformat()})
    client.post(f"/v1/campaigns/{campaign['id']}/activate")
    client.patch(f"/v1/campaigns/{campaign['id']}", json={"name": "never ran"})
    campaigns.advance_schedules(tenant.runtime.db, end + timedelta(minutes=1))
    completed = client.get(f"/v1/campaigns/{campaign['id']}").json()
    assert completed["status"] == "completed"
    assert completed["draft_version"] is None
    assert completed["name"] == campaign["name"]


def test_profile_patch_merges_attributes(tenant: Tenant):
    client = tenant.client
    client.put(
        "/v1/profiles/email/m@example.com",
        json={"attributes": {"a": 1, "b": 2}, "timezone": "Europe/Paris"},
    )
    merged = client.patch(
        "/v1/profiles/email/m@example.com", json={"attributes": {"b": None, "c": 3}}
    ).json()
    assert merged["attributes"] == {"a": 1, "c": 3}
    assert merged["timezone"] == "Europe/Paris"
    created = client.patch("/v1/profiles/email/new@example.com", json={"attributes": {"x": 1}})
    assert created.status_code == 201


def test_processes_starting_together_prepare_once(tenant: Tenant):
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: prepare(tenant.runtime, run_migrations=True), range(4)))
