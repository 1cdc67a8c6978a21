"""Channel configurations: validation, secrets never echoed, PATCH merges."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant, problem_fields
from tests.integration.helpers import create_configuration, create_ready_campaign
from tidings.channels import service as channels

pytestmark = pytest.mark.integration


def test_email_configuration_hides_the_smtp_password(tenant: Tenant):
    client = tenant.client
    created = create_configuration(
        client, smtp_url="smtp://mailer:s3cret@relay.example.com:587", reply_to="help@example.com"
    )
    assert created["email"]["smtp_url"] == "smtp://mailer@relay.example.com:587"
    assert created["secrets_set"] == ["smtp_password"]
    assert "s3cret" not in client.get(f"/v1/channel-configurations/{created['id']}").text
    stored = channels.get(tenant.runtime.db, tenant.workspace_id, created["id"])
    full = channels.join_secrets(channels.Channel.EMAIL, stored["settings"], stored["secrets"])
    assert full["smtp_url"] == "smtp://mailer:s3cret@relay.example.com:587"


def test_writing_back_what_was_read_keeps_the_smtp_password(tenant: Tenant):
    client = tenant.client
    created = create_configuration(client, smtp_url="smtp://mailer:s3cret@relay.example.com:587")
    url = f"/v1/channel-configurations/{created['id']}"
    echoed = client.patch(url, json={"email": created["email"]}).json()
    assert echoed["secrets_set"] == ["smtp_password"]
    moved = client.patch(url, json={"email": {"smtp_url": "smtp://mailer@other.example.com"}})
    assert moved.json()["secrets_set"] == []


def test_sms_secret_is_write_only_and_kept_across_patches(tenant: Tenant):
    client = tenant.client
    created = create_configuration(
        client,
        channel="sms",
        category="transactional",
        provider="twilio",
        account_sid="AC123",
        auth_token="tok-secret",
    )
    assert "auth_token" not in created["sms"]
    assert created["secrets_set"] == ["auth_token"]
    patched = client.patch(
        f"/v1/channel-configurations/{created['id']}", json={"sms": {"from_number": "+14155550199"}}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["sms"]["from_number"] == "+14155550199"
    assert patched.json()["secrets_set"] == ["auth_token"]
    assert "tok-secret" not in patched.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": {"from_address": "not-an-address"}}, "email.from_address"),
        ({"email": {"from_address": "a@example.com", "smtp_url": "http://x"}}, "email.smtp_url"),
        ({"email": {"from_address": "a@example.com", "colour": "red"}}, "email.colour"),
        (
            {"email": {"from_address": "a@example.com", "headers": {"Subject": "x"}}},
            "email.headers",
        ),
        ({"email": {"from_address": "a@example.com"}, "sms": {}}, "body"),
        ({}, "body"),
    ],
)
def test_invalid_configuration_is_refused_naming_the_field(tenant: Tenant, body, field):
    response = tenant.client.post(
        "/v1/channel-configurations",
        json={"name": "x", "channel": "email", "category": "marketing", **body},
    )
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)


def test_twilio_needs_credentials(tenant: Tenant):
    response = tenant.client.post(
        "/v1/channel-configurations",
        json={
            "name": "t",
            "channel": "sms",
            "category": "marketing",
            "sms": {"provider": "twilio"},
        },
    )
    assert response.status_code == 422
    assert "auth_token" in response.json()["errors"][0]["message"]


def test_patch_validates_the_merged_settings_and_keeps_the_channel(tenant: Tenant):
    client = tenant.client
    created = create_configuration(client)
    url = f"/v1/channel-configurations/{created['id']}"
    bad = client.patch(url, json={"email": {"from_address": "nope"}})
    assert bad.status_code == 422
    assert problem_fields(bad) == ["email.from_address"]
    assert client.patch(url, json={"channel": "sms"}).status_code == 422
    renamed = client.patch(
        url, json={"name": "Newsletter", "email": {"open_tracking": True}}
    ).json()
    assert renamed["name"] == "Newsletter"
    assert renamed["email"]["open_tracking"] is True
    assert renamed["email"]["from_address"] == "news@example.com"


def test_category_is_locked_while_a_live_campaign_uses_it(tenant: Tenant):
    client = tenant.client
    campaign = create_ready_campaign(client)
    client.post(f"/v1/campaigns/{campaign['id']}/activate")
    url = f"/v1/channel-configurations/{campaign['channel_configuration_id']}"
    assert client.patch(url, json={"category": "transactional"}).status_code == 409


def test_duplicate_names_and_filters(tenant: Tenant):
    client = tenant.client
    first = create_configuration(client)
    again = client.post(
        "/v1/channel-configurations",
        json={
            "name": first["name"],
            "channel": "email",
            "category": "marketing",
            "email": {"from_address": "x@example.com"},
        },
    )
    assert again.status_code == 422
    assert problem_fields(again) == ["name"]
    create_configuration(client, channel="push", category="transactional")
    listed = client.get("/v1/channel-configurations", params={"channel": "push"}).json()
    assert [c["channel"] for c in listed["items"]] == ["push"]


def test_a_lost_uniqueness_race_is_a_409_not_a_500(tenant: Tenant, monkeypatch):
    # Simulate two requests that both passed the name check before either inserted.
    first = create_configuration(tenant.client)
    monkeypatch.setattr(channels, "_name_taken", lambda *args, **kwargs: False)
    response = tenant.client.post(
        "/v1/channel-configurations",
        json={
            "name": first["name"],
            "channel": "email",
            "category": "marketing",
            "email": {"from_address": "x@example.com"},
        },
    )
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
