"""List audiences: members by identity, rejections, idempotent changes, paging, isolation."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Tenant, authorized_client, problem_fields
from tidings.audiences import service as audiences
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration


def profile(tenant: Tenant, email: str, **identities: str) -> str:
    body = {"identities": [{"namespace": ns, "id": value} for ns, value in identities.items()]}
    response = tenant.client.put(f"/v1/profiles/email/{email}", json=body)
    assert response.status_code in (200, 201), response.text
    profile_id: str = response.json()["id"]
    return profile_id


def email(value: str) -> dict[str, str]:
    return {"namespace": "email", "id": value}


def create(tenant: Tenant, name: str = "VIP", **body: object) -> dict[str, object]:
    response = tenant.client.post("/v1/audiences", json={"name": name, **body})
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def test_create_with_members_rejects_unknown_and_invalid_identities(tenant: Tenant):
    ada = profile(tenant, "ada@example.com", crmId="C-1")
    profile(tenant, "bob@example.com")
    created = create(
        tenant,
        description="Best customers",
        members=[
            email("Ada@Example.com"),
            email("nobody@example.com"),
            {"namespace": "crmId", "id": "C-1"},  # Ada again, through another identity
            email("not-an-address"),
            email("bob@example.com"),
            {"namespace": "phone", "id": "12"},
        ],
    )
    assert created["name"] == "VIP"
    assert created["description"] == "Best customers"
    assert created["kind"] == "list"
    assert created["member_count"] == 2
    rejected = created["rejected"]
    assert isinstance(rejected, list)
    assert [(r["index"], r["namespace"], r["id"]) for r in rejected] == [
        (1, "email", "nobody@example.com"),
        (3, "email", "not-an-address"),
        (5, "phone", "12"),
    ]
    assert rejected[0]["reason"] == "no profile has this identity"
    assert "not a valid email address" in rejected[1]["reason"]
    assert "E.164" in rejected[2]["reason"]
    # Nothing was created for the unknown identity.
    assert tenant.client.get("/v1/profiles/email/nobody@example.com").status_code == 404

    fetched = tenant.client.get(f"/v1/audiences/{created['id']}").json()
    assert fetched["member_count"] == 2
    assert "rejected" not in fetched
    with tenant.runtime.db.read() as conn:
        assert ada in audiences.member_page(conn, str(created["id"]), None, 10)


def test_adding_and_removing_members_is_idempotent(tenant: Tenant):
    profile(tenant, "a@example.com")
    profile(tenant, "b@example.com")
    audience = create(tenant)
    url = f"/v1/audiences/{audience['id']}/members"

    first = tenant.client.post(url, json={"members": [email("a@example.com")]})
    assert first.status_code == 200, first.text
    assert first.json() == {"added": 1, "rejected": []}
    again = tenant.client.post(
        url, json={"members": [email("a@example.com"), email("b@example.com")]}
    )
    assert again.json() == {"added": 1, "rejected": []}
    assert tenant.client.post(url, json={"members": [email("A@example.com")]}).json() == {
        "added": 0,
        "rejected": [],
    }
    assert tenant.client.get(f"/v1/audiences/{audience['id']}").json()["member_count"] == 2

    removed = tenant.client.post(
        f"{url}/remove", json={"members": [email("a@example.com"), email("ghost@example.com")]}
    )
    assert removed.status_code == 200, removed.text
    assert removed.json() == {
        "removed": 1,
        "rejected": [
            {
                "index": 1,
                "namespace": "email",
                "id": "ghost@example.com",
                "reason": "no profile has this identity",
            }
        ],
    }
    assert tenant.client.post(
        f"{url}/remove", json={"members": [email("a@example.com")]}
    ).json() == {"removed": 0, "rejected": []}
    assert tenant.client.get(f"/v1/audiences/{audience['id']}").json()["member_count"] == 1


def test_deleting_a_profile_removes_its_memberships(tenant: Tenant):
    profile(tenant, "gone@example.com")
    audience = create(tenant, members=[email("gone@example.com")])
    assert audience["member_count"] == 1
    assert tenant.client.delete("/v1/profiles/email/gone@example.com").status_code == 204
    assert tenant.client.get(f"/v1/audiences/{audience['id']}").json()["member_count"] == 0


def test_list_is_paginated_newest_first(tenant: Tenant):
    ids = [create(tenant, name=f"audience {n}")["id"] for n in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = tenant.client.get("/v1/audiences", params=params).json()
        seen.extend(item["id"] for item in page["items"])
        assert len(page["items"]) <= 2
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_duplicate_name_is_a_conflict(tenant: Tenant):
    create(tenant, name="Newsletter")
    duplicate = tenant.client.post("/v1/audiences", json={"name": "Newsletter"})
    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"].startswith("application/problem+json")


def test_delete_removes_the_audience(tenant: Tenant):
    profile(tenant, "a@example.com")
    audience = create(tenant, members=[email("a@example.com")])
    assert tenant.client.delete(f"/v1/audiences/{audience['id']}").status_code == 204
    assert tenant.client.get(f"/v1/audiences/{audience['id']}").status_code == 404
    assert tenant.client.delete(f"/v1/audiences/{audience['id']}").status_code == 404
    # The profile stays, and the name is free again.
    assert tenant.client.get("/v1/profiles/email/a@example.com").status_code == 200
    create(tenant)


def test_an_audience_a_live_campaign_targets_cannot_be_deleted(tenant: Tenant):
    from tests.integration.helpers import create_ready_campaign

    audience = create(tenant)
    campaign = create_ready_campaign(
        tenant.client, audience={"identity_namespace": "email", "audience_id": audience["id"]}
    )
    activated = tenant.client.post(f"/v1/campaigns/{campaign['id']}/activate")
    assert activated.status_code == 200, activated.text
    refused = tenant.client.delete(f"/v1/audiences/{audience['id']}")
    assert refused.status_code == 409
    assert tenant.client.post(f"/v1/campaigns/{campaign['id']}/stop").status_code == 200
    assert tenant.client.delete(f"/v1/audiences/{audience['id']}").status_code == 204


def test_another_workspace_sees_nothing(tenant: Tenant):
    profile(tenant, "a@example.com")
    audience = create(tenant, members=[email("a@example.com")])
    other = workspaces.create_workspace(tenant.runtime.db, f"other-{uuid.uuid4().hex[:10]}")
    _, secret = workspaces.create_api_key(tenant.runtime.db, other["id"], "admin", [Scope.ADMIN])
    outsider = authorized_client(tenant.client.app, secret)
    url = f"/v1/audiences/{audience['id']}"
    assert outsider.get(url).status_code == 404
    assert outsider.delete(url).status_code == 404
    assert (
        outsider.post(f"{url}/members", json={"members": [email("x@example.com")]}).status_code
        == 404
    )
    assert (
        outsider.post(
            f"{url}/members/remove", json={"members": [email("a@example.com")]}
        ).status_code
        == 404
    )
    assert outsider.get("/v1/audiences").json()["items"] == []
    # Profiles of another workspace are unknown identities here, and names are per workspace.
    theirs = outsider.post(
        "/v1/audiences", json={"name": "VIP", "members": [email("a@example.com")]}
    )
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["member_count"] == 0
    assert [r["index"] for r in theirs.json()["rejected"]] == [0]
    with tenant.runtime.db.read() as conn:
        assert audiences.exists(conn, tenant.workspace_id, str(audience["id"]))
        assert not audiences.exists(conn, other["id"], str(audience["id"]))


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("", {}, "name"),
        ("", {"name": ""}, "name"),
        ("", {"name": "x" * 201}, "name"),
        ("", {"name": "x", "colour": "red"}, "colour"),
        ("", {"name": "x", "members": [{"namespace": "9bad", "id": "x"}]}, "members.0.namespace"),
        ("", {"name": "x", "members": [{"namespace": "email", "id": ""}]}, "members.0.id"),
        ("", {"name": "x", "members": [email("a@example.com")] * 10_001}, "members"),
        ("/{id}/members", {"members": []}, "members"),
        ("/{id}/members", {}, "members"),
        ("/{id}/members/remove", {"members": [{"namespace": "email"}]}, "members.0.id"),
    ],
)
def test_bad_input_is_a_problem_naming_the_field(tenant: Tenant, path, body, field):
    audience = create(tenant, name="existing")
    response = tenant.client.post("/v1/audiences" + path.format(id=audience["id"]), json=body)
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)


def test_scopes(tenant: Tenant):
    audience = create(tenant)
    url = f"/v1/audiences/{audience['id']}"
    for scope in (Scope.PROFILES_READ, Scope.CAMPAIGNS_READ):
        reader = tenant.client_with(scope)
        assert reader.get(url).status_code == 200
        assert reader.get("/v1/audiences").status_code == 200
        assert reader.post("/v1/audiences", json={"name": "no"}).status_code == 403
        assert reader.delete(url).status_code == 403
    trigger_only = tenant.client_with(Scope.EXECUTIONS_TRIGGER)
    assert trigger_only.get(url).status_code == 403
    writer = tenant.client_with(Scope.CAMPAIGNS_WRITE)
    assert writer.post("/v1/audiences", json={"name": "yes"}).status_code == 201
    assert (
        writer.post(f"{url}/members", json={"members": [email("a@b.example")]}).status_code == 200
    )


def test_member_page_walks_members_in_profile_id_order(tenant: Tenant):
    emails = [f"m{n}@example.com" for n in range(7)]
    profile_ids = [profile(tenant, address) for address in emails]
    audience = create(tenant, members=[email(address) for address in reversed(emails)])
    other = create(tenant, name="other", members=[email(emails[0])])
    audience_id = str(audience["id"])
    with tenant.runtime.db.read() as conn:
        walked: list[str] = []
        cursor = None
        while True:
            page = audiences.member_page(conn, audience_id, cursor, 3)
            if not page:
                break
            assert len(page) <= 3
            walked.extend(page)
            cursor = page[-1]
        assert walked == sorted(profile_ids)
        assert (
            audiences.member_page(conn, audience_id, sorted(profile_ids)[4], 10)
            == sorted(profile_ids)[5:]
        )
        assert audiences.member_page(conn, str(other["id"]), None, 10) == [profile_ids[0]]
        assert audiences.member_page(conn, str(uuid.uuid4()), None, 10) == []


def test_many_members_in_one_call(tenant: Tenant):
    from tidings.profiles import service as profiles
    from tidings.profiles.schemas import ProfileUpsert

    for n in range(600):
        profiles.upsert(
            tenant.runtime.db, tenant.workspace_id, "email", f"p{n}@example.com", ProfileUpsert()
        )
    members = [email(f"p{n}@example.com") for n in range(650)]
    audience = create(tenant, members=members)
    assert audience["member_count"] == 600
    assert [r["index"] for r in audience["rejected"]] == list(range(600, 650))  # type: ignore[union-attr]
    removed = tenant.client.post(
        f"/v1/audiences/{audience['id']}/members/remove", json={"members": members[:550]}
    )
    assert removed.json()["removed"] == 550
