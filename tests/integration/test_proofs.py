"""Proofs: one message of a campaign to a tester, through the real delivery engine, marked as a
proof: spared consent, quiet hours and caps, stopped by the suppression list."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Tenant, problem_fields
from tests.integration.helpers import create_configuration
from tests.integration.test_business_rules import rule_set
from tests.integration.test_delivery import RecordingAdapter, deliverer_for, drain, trigger
from tests.integration.test_delivery_rules import marketing, outcomes, set_consent, suppress
from tests.integration.test_executions import recipient
from tidings.executions.models import messages
from tidings.rules.models import frequency_counters
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration


def draft_campaign(tenant: Tenant, channel: str = "email", **overrides: Any) -> dict[str, Any]:
    configuration = create_configuration(tenant.client, category="marketing", channel=channel)
    content = {
        "email": {
            "subject": "Hi {{ profile.firstName }}",
            "html": "<p>Order {{ context.order.id }}</p><a href='{{ unsubscribe_url }}'>x</a>",
        },
        "sms": {"body": "Order {{ context.order.id }}"},
    }[channel]
    body = {
        "name": "Proofed",
        "category": "marketing",
        "channel": channel,
        "channel_configuration_id": configuration["id"],
        "content": content,
        **overrides,
    }
    response = tenant.client.post("/v1/campaigns", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def send_proof(tenant: Tenant, campaign: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = tenant.client.post(f"/v1/campaigns/{campaign['id']}/proofs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def message_row(tenant: Tenant, message_id: str) -> dict[str, Any]:
    with tenant.runtime.db.read() as conn:
        return dict(
            conn.execute(messages.select().where(messages.c.id == message_id)).mappings().one()
        )


def test_a_proof_of_a_draft_goes_through_the_engine_marked_and_prefixed(tenant: Tenant):
    campaign = draft_campaign(tenant)
    assert campaign["status"] == "draft"
    adapter = RecordingAdapter()
    proof = send_proof(
        tenant,
        campaign,
        to="Tester@Example.com",
        profile={"firstName": "Ada"},
        context={"order": {"id": "Q-7"}},
    )
    assert proof["state"] == "queued" and proof["proof_id"] == proof["message_id"]
    drain(deliverer_for(tenant.runtime, adapter))

    [sent] = [m for m in adapter.sent if m.message_id == proof["message_id"]]
    assert sent.to == "Tester@example.com"
    assert sent.content["subject"] == "[Proof] Hi Ada"
    assert "Order Q-7" in sent.content["html"]
    assert sent.settings["from_address"] == "news@example.com"
    row = message_row(tenant, proof["message_id"])
    assert (row["state"], row["is_proof"], row["profile_id"]) == ("sent", True, None)

    execution = tenant.client.get(f"/v1/executions/{proof['execution_id']}").json()
    assert (execution["kind"], execution["status"], execution["counts"]) == (
        "proof",
        "completed",
        {"sent": 1},
    )
    [listed] = tenant.client.get(f"/v1/executions/{proof['execution_id']}/messages").json()["items"]
    assert listed["is_proof"] is True and listed["id"] == proof["message_id"]


def test_a_proof_renders_the_draft_as_it_is_now(tenant: Tenant):
    campaign = draft_campaign(tenant)
    adapter = RecordingAdapter()
    deliverer = deliverer_for(tenant.runtime, adapter)
    first = send_proof(tenant, campaign, to="t@example.com", profile={"firstName": "A"})
    drain(deliverer)
    changed = tenant.client.patch(
        f"/v1/campaigns/{campaign['id']}", json={"content": {"subject": "Now {{ profile.x }}"}}
    )
    assert changed.status_code == 200, changed.text
    second = send_proof(tenant, campaign, to="t@example.com", profile={"x": "B"})
    drain(deliverer)
    subjects = {m.message_id: m.content["subject"] for m in adapter.sent}
    assert subjects[first["message_id"]] == "[Proof] Hi A"
    assert subjects[second["message_id"]] == "[Proof] Now B"


def test_a_proof_ignores_consent_and_caps_and_counts_toward_none(tenant: Tenant):
    rule_set(tenant, default=True, frequency_caps=[{"limit": 1, "period": "day"}])
    set_consent(tenant, "out@example.com", "out")
    set_consent(tenant, "in@example.com", "in")
    campaign = marketing(tenant)
    adapter = RecordingAdapter()
    deliverer = deliverer_for(tenant.runtime, adapter)

    # A stored profile who opted out personalizes proofs sent to its own address: sent.
    proofs = [
        send_proof(
            tenant,
            campaign,
            to="out@example.com",
            profile_identity={"namespace": "email", "id": "out@example.com"},
        )
        for _ in range(2)
    ]
    proofs += [send_proof(tenant, campaign, to="in@example.com") for _ in range(2)]
    drain(deliverer)
    assert [message_row(tenant, p["message_id"])["state"] for p in proofs] == ["sent"] * 4
    sent = {m.message_id: m for m in adapter.sent}
    assert sent[proofs[0]["message_id"]].content["subject"] == "[Proof] Sale"

    # The proofs spent nothing: the one message a day the cap allows still goes.
    execution = trigger(tenant, campaign, recipient("in@example.com"))
    drain(deliverer)
    assert outcomes(tenant, execution)["in@example.com"] == ("sent", None)
    with tenant.runtime.db.read() as conn:
        counted = conn.execute(
            sa.select(frequency_counters.c.sent).where(
                frequency_counters.c.workspace_id == tenant.workspace_id
            )
        ).scalars()
        assert list(counted) == [1]
    # ... and the real execution's counts hold only its own message.
    real = tenant.client.get(f"/v1/executions/{execution}").json()
    assert real["counts"] == {"sent": 1}


def test_a_hard_bounced_address_gets_no_proof(tenant: Tenant):
    suppress(tenant, "bounced@example.com", "hard_bounce")
    campaign = draft_campaign(tenant)
    adapter = RecordingAdapter()
    proof = send_proof(tenant, campaign, to="bounced@example.com")
    drain(deliverer_for(tenant.runtime, adapter))
    row = message_row(tenant, proof["message_id"])
    assert (row["state"], row["reason"]) == ("excluded", "suppressed_address")
    assert row["last_error"].startswith("hard_bounce")
    assert all(m.message_id != proof["message_id"] for m in adapter.sent)


def test_an_sms_proof_goes_to_a_number(tenant: Tenant):
    campaign = draft_campaign(tenant, channel="sms")
    adapter = RecordingAdapter()
    proof = send_proof(tenant, campaign, to="+14155550199", context={"order": {"id": 3}})
    drain(deliverer_for(tenant.runtime, adapter))
    [sent] = [m for m in adapter.sent if m.message_id == proof["message_id"]]
    assert (sent.to, sent.content["body"]) == ("+14155550199", "Order 3")


@pytest.mark.parametrize(
    ("channel", "body", "field"),
    [
        ("email", {"to": "not-an-address"}, "to"),
        ("sms", {"to": "ada@example.com"}, "to"),
        ("email", {"to": "a@example.com", "version": "live"}, "version"),
        ("email", {"to": "a@example.com", "version": "next"}, "version"),
        (
            "email",
            {
                "to": "a@example.com",
                "profile": {},
                "profile_identity": {"namespace": "email", "id": "a@example.com"},
            },
            "profile_identity",
        ),
        (
            "email",
            {"to": "a@example.com", "profile_identity": {"namespace": "email", "id": "n@x.io"}},
            "profile_identity",
        ),
        ("email", {"to": "a@example.com", "extra": 1}, "extra"),
    ],
)
def test_invalid_proofs_are_refused_naming_the_field(
    tenant: Tenant, channel: str, body: dict[str, Any], field: str
):
    campaign = draft_campaign(tenant, channel=channel)
    response = tenant.client.post(f"/v1/campaigns/{campaign['id']}/proofs", json=body)
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)


def test_a_proof_that_does_not_render_or_has_no_configuration_is_refused(tenant: Tenant):
    broken = draft_campaign(tenant, content={"subject": "{{ oops(", "html": "<p>x</p>"})
    response = tenant.client.post(f"/v1/campaigns/{broken['id']}/proofs", json={"to": "a@b.io"})
    assert response.status_code == 422, response.text
    assert problem_fields(response) == ["content.subject"]
    bare = draft_campaign(tenant, channel_configuration_id=None)
    response = tenant.client.post(f"/v1/campaigns/{bare['id']}/proofs", json={"to": "a@b.io"})
    assert response.status_code == 422, response.text
    assert problem_fields(response) == ["channel_configuration_id"]
    missing = tenant.client.post("/v1/campaigns/nope/proofs", json={"to": "a@b.io"})
    assert missing.status_code == 404


def test_proofs_need_campaigns_write(tenant: Tenant):
    campaign = draft_campaign(tenant)
    reader = tenant.client_with(Scope.CAMPAIGNS_READ)
    response = reader.post(f"/v1/campaigns/{campaign['id']}/proofs", json={"to": "a@b.io"})
    assert response.status_code == 403
    writer = tenant.client_with(Scope.CAMPAIGNS_WRITE)
    response = writer.post(f"/v1/campaigns/{campaign['id']}/proofs", json={"to": "a@b.io"})
    assert response.status_code == 202, response.text
    # A stored profile's attributes are profile data: profiles:read too.
    response = writer.post(
        f"/v1/campaigns/{campaign['id']}/proofs",
        json={"to": "a@b.io", "profile_identity": {"namespace": "email", "id": "a@b.io"}},
    )
    assert response.status_code == 403
