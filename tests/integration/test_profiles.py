"""Profiles: upsert by identity, identities in namespaces, consent history, deletion."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant, problem_fields

pytestmark = pytest.mark.integration


def test_put_creates_then_updates_the_same_profile(tenant: Tenant):
    client = tenant.client
    created = client.put(
        "/v1/profiles/email/Ada@Example.com",
        json={
            "identities": [
                {"namespace": "crmId", "id": "C-1"},
                {"namespace": "phone", "id": "+33612345678"},
            ],
            "attributes": {"firstName": "Ada", "address": {"city": "Paris"}},
            "consent": {"email": "in"},
            "timezone": "Europe/Paris",
            "locale": "fr-FR",
        },
    )
    assert created.status_code == 201, created.text
    profile = created.json()
    assert {(i["namespace"], i["id"]) for i in profile["identities"]} == {
        ("email", "ada@example.com"),
        ("crmId", "C-1"),
        ("phone", "+33612345678"),
    }
    assert profile["consent"]["email"]["status"] == "in"
    assert profile["consent"]["email"]["source"] == "api"
    assert profile["consent"]["sms"] == {"status": "unset", "updated_at": None, "source": None}

    # The same person found through another identity: same profile, attributes replaced,
    # consent merged channel by channel.
    updated = client.put(
        "/v1/profiles/crmId/C-1",
        json={"attributes": {"firstName": "Ada L."}, "consent": {"sms": "out"}},
    )
    assert updated.status_code == 200
    assert updated.json()["id"] == profile["id"]
    assert updated.json()["attributes"] == {"firstName": "Ada L."}
    assert updated.json()["consent"]["email"]["status"] == "in"
    assert updated.json()["consent"]["sms"]["status"] == "out"
    assert client.get("/v1/profiles/phone/+33612345678").json()["id"] == profile["id"]


def test_identities_of_two_profiles_conflict(tenant: Tenant):
    client = tenant.client
    client.put("/v1/profiles/email/a@example.com", json={})
    client.put("/v1/profiles/email/b@example.com", json={})
    clash = client.put(
        "/v1/profiles/email/a@example.com",
        json={"identities": [{"namespace": "email", "id": "b@example.com"}]},
    )
    assert clash.status_code == 409


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/profiles/email/not-an-email", {}, "id"),
        ("/v1/profiles/phone/0612345678", {}, "id"),
        ("/v1/profiles/email/a@example.com", {"timezone": "Mars/Olympus"}, "timezone"),
        ("/v1/profiles/email/a@example.com", {"consent": {"fax": "in"}}, "consent.fax"),
        ("/v1/profiles/email/a@example.com", {"consent": {"email": "yes"}}, "consent.email"),
        ("/v1/profiles/email/a@example.com", {"nickname": "x"}, "nickname"),
        (
            "/v1/profiles/email/a@example.com",
            {"identities": [{"namespace": "phone", "id": "12"}]},
            "identities.0.id",
        ),
        ("/v1/profiles/9bad/x", {}, "namespace"),
    ],
)
def test_invalid_profiles_are_refused_naming_the_field(tenant: Tenant, path, body, field):
    response = tenant.client.put(path, json=body)
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)


def test_every_problem_of_a_profile_is_reported_at_once(tenant: Tenant):
    response = tenant.client.put(
        "/v1/profiles/email/not-an-address",
        json={
            "identities": [{"namespace": "phone", "id": "12"}, {"namespace": "email", "id": "x"}],
            "timezone": "Nowhere/Else",
        },
    )
    assert problem_fields(response) == ["id", "identities.0.id", "identities.1.id", "timezone"]


def test_delete_forgets_the_profile_and_its_identities(tenant: Tenant):
    client = tenant.client
    client.put(
        "/v1/profiles/email/gone@example.com",
        json={"identities": [{"namespace": "crmId", "id": "G"}], "attributes": {"secret": 1}},
    )
    assert client.delete("/v1/profiles/email/gone@example.com").status_code == 204
    assert client.get("/v1/profiles/crmId/G").status_code == 404
    # The identities are free for a new profile.
    assert client.put("/v1/profiles/crmId/G", json={}).status_code == 201
