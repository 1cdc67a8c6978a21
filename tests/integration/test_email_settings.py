"""Email configuration settings for deliverability: DKIM keys (write-only), pool size, rate."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.conftest import Tenant, problem_fields
from tests.integration.helpers import create_configuration
from tidings.channels import service as channels

pytestmark = pytest.mark.integration


def ed25519_pem() -> str:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode("ascii")
    )


def test_the_dkim_key_is_write_only_and_kept_across_patches(tenant: Tenant):
    client = tenant.client
    key = ed25519_pem()
    created = create_configuration(
        client,
        dkim_domain="Example.com",
        dkim_selector="mail2026",
        dkim_private_key=key,
        smtp_pool_size=2,
        smtp_rate_per_second=12.5,
    )
    assert created["secrets_set"] == ["dkim_private_key"]
    assert "dkim_private_key" not in created["email"]
    assert created["email"]["dkim_domain"] == "example.com"
    assert (created["email"]["smtp_pool_size"], created["email"]["smtp_rate_per_second"]) == (
        2,
        12.5,
    )
    url = f"/v1/channel-configurations/{created['id']}"
    assert "PRIVATE KEY" not in client.get(url).text

    echoed = client.patch(url, json={"email": created["email"]})
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["secrets_set"] == ["dkim_private_key"]
    stored = channels.get(tenant.runtime.db, tenant.workspace_id, created["id"])
    full = channels.join_secrets(channels.Channel.EMAIL, stored["settings"], stored["secrets"])
    assert full["dkim_private_key"] == key

    removed = client.patch(
        url,
        json={"email": {"dkim_domain": None, "dkim_selector": None, "dkim_private_key": None}},
    )
    assert removed.status_code == 200, removed.text
    assert removed.json()["secrets_set"] == []


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"dkim_private_key": "not a key"}, "email.dkim_private_key"),
        ({"dkim_selector": "bad selector"}, "email.dkim_selector"),
        ({"dkim_domain": "exa mple.com"}, "email.dkim_domain"),
        ({"smtp_pool_size": 0}, "email.smtp_pool_size"),
        ({"smtp_rate_per_second": -1}, "email.smtp_rate_per_second"),
        ({"smtp_url": "smtp://relay.example.com?starttls=maybe"}, "email.smtp_url"),
    ],
)
def test_invalid_settings_are_refused_naming_the_field(
    tenant: Tenant, settings: dict[str, Any], field: str
):
    complete = {"dkim_domain": "example.com", "dkim_selector": "mail"}
    if "dkim_private_key" in settings or "dkim_domain" in settings or "dkim_selector" in settings:
        complete["dkim_private_key"] = ed25519_pem()
    else:
        complete = {}
    body = {
        "name": "email",
        "channel": "email",
        "category": "marketing",
        "email": {"from_address": "news@example.com", **complete, **settings},
    }
    response = tenant.client.post("/v1/channel-configurations", json=body)
    assert response.status_code == 422, response.text
    assert problem_fields(response) == [field]
    # Ed25519 PKCS#8 keys start so: the key itself is never echoed.
    assert "MC4CAQAw" not in response.text


def test_dkim_needs_its_three_settings_together(tenant: Tenant):
    body = {
        "name": "email",
        "channel": "email",
        "category": "marketing",
        "email": {"from_address": "news@example.com", "dkim_private_key": ed25519_pem()},
    }
    response = tenant.client.post("/v1/channel-configurations", json=body)
    assert response.status_code == 422, response.text
    assert "together" in response.text
    assert "MC4CAQAw" not in response.text
