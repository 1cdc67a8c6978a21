"""Consent and the suppression list at delivery: who a marketing or a transactional message
may go to, and the reason kept for each one that does not go."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Tenant
from tests.integration.helpers import create_configuration
from tests.integration.test_delivery import (
    RecordingAdapter,
    deliverer_for,
    drain,
    states,
    trigger,
)
from tests.integration.test_executions import live_campaign, recipient
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration

MARKETING_CONTENT = {"subject": "Sale", "html": "<a href='{{ unsubscribe_url }}'>stop</a>"}


def marketing(tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    return live_campaign(tenant, category="marketing", content=MARKETING_CONTENT, **overrides)


def set_policy(tenant: Tenant, policy: str | None) -> None:
    response = tenant.client.patch("/v1/workspace", json={"unset_consent": policy})
    assert response.status_code == 200, response.text
    assert response.json()["unset_consent"] == policy


def suppress(tenant: Tenant, value: str, type_: str = "manual") -> None:
    response = tenant.client.post("/v1/suppressions", json={"value": value, "type": type_})
    assert response.status_code == 201, response.text


def set_consent(tenant: Tenant, address: str, status: str | None) -> None:
    body: dict[str, Any] = {"attributes": {"firstName": address.split("@")[0]}}
    if status is not None:
        body["consent"] = {"email": status}
    response = tenant.client.put(f"/v1/profiles/email/{address}", json=body)
    assert response.status_code in (200, 201), response.text


def outcomes(tenant: Tenant, execution: str) -> dict[str, tuple[str, str | None]]:
    return {
        recipient_id: (row["state"], row["reason"])
        for recipient_id, row in states(tenant, execution).items()
    }


def sent_to(adapter: RecordingAdapter, tenant: Tenant, execution: str) -> set[str]:
    ids = {row["id"] for row in states(tenant, execution).values()}
    return {message.to for message in adapter.sent if message.message_id in ids}


@pytest.fixture
def audience(tenant: Tenant) -> list[dict[str, Any]]:
    """One recipient per rule, stored before any campaign is triggered."""
    set_consent(tenant, "out@example.com", "out")
    set_consent(tenant, "unset@example.com", None)
    set_consent(tenant, "in@example.com", "in")
    for address in ("listed@example.com", "ada@blocked.example", "complaint@example.com"):
        set_consent(tenant, address, "in")
    set_consent(tenant, "bounced@example.com", "in")
    suppress(tenant, "listed@example.com")
    suppress(tenant, "blocked.example")
    suppress(tenant, "complaint@example.com", "spam_complaint")
    suppress(tenant, "bounced@example.com", "hard_bounce")
    return [
        recipient("out@example.com"),
        recipient("unset@example.com"),
        recipient("in@example.com"),
        recipient("listed@example.com"),
        recipient("ada@blocked.example"),
        recipient("complaint@example.com"),
        recipient("bounced@example.com"),
        recipient("external@example.com", external=True),
    ]


NO_CONSENT = ("excluded", "no_consent")
SENT = ("sent", None)
SUPPRESSED_ADDRESS = ("excluded", "suppressed_address")
SUPPRESSED_DOMAIN = ("excluded", "suppressed_domain")


def test_marketing_under_a_workspace_that_denies_unset_consent(
    tenant: Tenant, audience: list[dict[str, Any]]
):
    set_policy(tenant, "deny")
    adapter = RecordingAdapter()
    execution = trigger(tenant, marketing(tenant), *audience)
    drain(deliverer_for(tenant.runtime, adapter))
    assert outcomes(tenant, execution) == {
        "out@example.com": NO_CONSENT,
        "unset@example.com": NO_CONSENT,
        "in@example.com": SENT,
        "listed@example.com": SUPPRESSED_ADDRESS,
        "ada@blocked.example": SUPPRESSED_DOMAIN,
        "complaint@example.com": SUPPRESSED_ADDRESS,
        "bounced@example.com": SUPPRESSED_ADDRESS,
        "external@example.com": NO_CONSENT,
    }
    assert sent_to(adapter, tenant, execution) == {"in@example.com"}
    counts = tenant.client.get(f"/v1/executions/{execution}").json()["counts"]
    assert counts == {"sent": 1, "excluded": 7}


def test_marketing_under_a_workspace_that_allows_unset_consent(
    tenant: Tenant, audience: list[dict[str, Any]]
):
    set_policy(tenant, "allow")
    adapter = RecordingAdapter()
    # The workspace's "allow" wins over a server that denies.
    execution = trigger(tenant, marketing(tenant), *audience)
    drain(deliverer_for(tenant.runtime, adapter, unset_consent="deny"))
    assert outcomes(tenant, execution) == {
        "out@example.com": NO_CONSENT,
        "unset@example.com": SENT,
        "in@example.com": SENT,
        "listed@example.com": SUPPRESSED_ADDRESS,
        "ada@blocked.example": SUPPRESSED_DOMAIN,
        "complaint@example.com": SUPPRESSED_ADDRESS,
        "bounced@example.com": SUPPRESSED_ADDRESS,
        "external@example.com": SENT,
    }
    assert sent_to(adapter, tenant, execution) == {
        "unset@example.com",
        "in@example.com",
        "external@example.com",
    }


def test_without_a_workspace_policy_the_setting_decides(
    tenant: Tenant, audience: list[dict[str, Any]]
):
    set_policy(tenant, None)
    campaign = marketing(tenant)
    denied = trigger(tenant, campaign, *audience)
    drain(deliverer_for(tenant.runtime, RecordingAdapter(), unset_consent="deny"))
    allowed = trigger(tenant, campaign, *audience)
    drain(deliverer_for(tenant.runtime, RecordingAdapter()))  # the default: allow
    for recipient_id in ("unset@example.com", "external@example.com"):
        assert outcomes(tenant, denied)[recipient_id] == NO_CONSENT
        assert outcomes(tenant, allowed)[recipient_id] == SENT


def test_transactional_ignores_consent_but_not_suppressions(
    tenant: Tenant, audience: list[dict[str, Any]]
):
    set_policy(tenant, "deny")
    adapter = RecordingAdapter()
    execution = trigger(tenant, live_campaign(tenant), *audience)
    drain(deliverer_for(tenant.runtime, adapter))
    assert outcomes(tenant, execution) == {
        "out@example.com": SENT,
        "unset@example.com": SENT,
        "in@example.com": SENT,
        "listed@example.com": SUPPRESSED_ADDRESS,
        "ada@blocked.example": SUPPRESSED_DOMAIN,
        "complaint@example.com": SUPPRESSED_ADDRESS,
        "bounced@example.com": SUPPRESSED_ADDRESS,
        "external@example.com": SENT,
    }
    assert sent_to(adapter, tenant, execution) == {
        "out@example.com",
        "unset@example.com",
        "in@example.com",
        "external@example.com",
    }


def test_a_transactional_configuration_may_send_to_complaint_suppressions_only(
    tenant: Tenant, audience: list[dict[str, Any]]
):
    adapter = RecordingAdapter()
    opted_in = create_configuration(
        tenant.client, category="transactional", allow_complaint_suppressed=True
    )
    assert opted_in["email"]["allow_complaint_suppressed"] is True
    execution = trigger(
        tenant, live_campaign(tenant, channel_configuration_id=opted_in["id"]), *audience
    )
    # The setting means nothing to marketing.
    marketing_opted_in = create_configuration(
        tenant.client, category="marketing", allow_complaint_suppressed=True
    )
    sale = trigger(
        tenant,
        marketing(tenant, channel_configuration_id=marketing_opted_in["id"]),
        recipient("complaint@example.com"),
    )
    drain(deliverer_for(tenant.runtime, adapter))
    rows = outcomes(tenant, execution)
    assert rows["complaint@example.com"] == SENT
    assert rows["bounced@example.com"] == SUPPRESSED_ADDRESS
    assert rows["listed@example.com"] == SUPPRESSED_ADDRESS
    assert rows["ada@blocked.example"] == SUPPRESSED_DOMAIN
    assert "bounced@example.com" not in sent_to(adapter, tenant, execution)
    assert outcomes(tenant, sale)["complaint@example.com"] == SUPPRESSED_ADDRESS


def test_a_complaint_under_a_suppressed_domain_stays_blocked(tenant: Tenant):
    """The deciding suppression is the one no policy lets through: a complaint on the address
    does not open a domain suppressed for another reason."""
    suppress(tenant, "blocked.example", "hard_bounce")
    suppress(tenant, "both@blocked.example", "spam_complaint")
    opted_in = create_configuration(
        tenant.client, category="transactional", allow_complaint_suppressed=True
    )
    execution = trigger(
        tenant,
        live_campaign(tenant, channel_configuration_id=opted_in["id"]),
        recipient("both@blocked.example"),
        recipient("Other@Sub.Blocked.Example"),
    )
    drain(deliverer_for(tenant.runtime, RecordingAdapter()))
    assert outcomes(tenant, execution) == {
        "both@blocked.example": SUPPRESSED_DOMAIN,
        "other@sub.blocked.example": SUPPRESSED_DOMAIN,
    }


def test_the_workspace_policy_is_an_admin_setting(tenant: Tenant):
    assert tenant.client.get("/v1/workspace").json()["unset_consent"] is None
    writer = tenant.client_with(Scope.PROFILES_WRITE)
    assert writer.patch("/v1/workspace", json={"unset_consent": "deny"}).status_code == 403
    for body in ({"unset_consent": "maybe"}, {"name": "renamed"}):
        assert tenant.client.patch("/v1/workspace", json=body).status_code == 422
    set_policy(tenant, "deny")
    unchanged = tenant.client.patch("/v1/workspace", json={})
    assert unchanged.json()["unset_consent"] == "deny"
    assert tenant.client.get("/v1/workspace").json()["unset_consent"] == "deny"
    set_policy(tenant, None)
