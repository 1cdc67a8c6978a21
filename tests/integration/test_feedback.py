"""Bounces and complaints end to end in-process: SES through a signed SNS delivery (certificate
and confirmations served over HTTPS on loopback), SendGrid's signed Event Webhook, and the
bounce mailbox over real SMTP; each changes message states, suppressions, soft-bounce counts
and consent once, in the message's workspace only."""

from __future__ import annotations

import base64
import json
import smtplib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.integration.test_delivery import RecordingAdapter, deliverer_for, drain, states, trigger
from tests.integration.test_executions import live_campaign, recipient
from tests.support.postgres import free_port
from tests.support.sns import FakeSns, fake_sns
from tests.unit.test_feedback_reports import arf, block, dsn
from tidings.feedback import sendgrid
from tidings.feedback.api import FeedbackPorts
from tidings.feedback.mailbox import BounceMailbox
from tidings.feedback.sns import HttpxPort, SnsVerifier

pytestmark = pytest.mark.integration

ADAPTER = RecordingAdapter()
PRIVATE = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(
    PRIVATE.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


@pytest.fixture(scope="module")
def sns() -> Iterator[FakeSns]:
    with fake_sns() as fake:
        yield fake


def webhooks(tenant: Tenant, sns: FakeSns, *, sendgrid_key: str | None = PUBLIC) -> TestClient:
    """A provider's view of the app (no API key), verifying against the local fakes."""
    app: Any = tenant.client.app
    app.state.feedback = FeedbackPorts(
        sns=SnsVerifier(HttpxPort(verify=sns.client_context()), host_pattern=r"127\.0\.0\.1:\d+"),
        sendgrid_key=sendgrid.public_key(sendgrid_key) if sendgrid_key else None,
    )
    return TestClient(app)


def address() -> str:
    # Unique per test: the address fallback looks across the session's shared database.
    return f"ada-{uuid.uuid4().hex[:10]}@example.org"


def send(tenant: Tenant, to: str, campaign: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sends one message to `to`; its row."""
    execution = trigger(tenant, campaign or live_campaign(tenant), recipient(to))
    drain(deliverer_for(tenant.runtime, ADAPTER))
    row = states(tenant, execution)[to]
    assert row["state"] == "sent", row
    return row


def message(tenant: Tenant, row: dict[str, Any]) -> dict[str, Any]:
    return states(tenant, row["execution_id"])[row["recipient_id"]]


def suppression(tenant: Tenant, value: str) -> dict[str, Any] | None:
    items = tenant.client.get("/v1/suppressions", params={"prefix": value}).json()["items"]
    return next((item for item in items if item["value"] == value), None)


def ses_message(kind: str, row: dict[str, Any] | None, to: str, **section: Any) -> str:
    mail: dict[str, Any] = {"messageId": f"ses-{uuid.uuid4()}", "destination": [to]}
    if row is not None:
        mail["commonHeaders"] = {"messageId": f"<{row['id']}@example.com>"}
    body: dict[str, Any] = {"notificationType": kind, "mail": mail}
    if kind == "Bounce":
        body["bounce"] = {
            "bounceType": section.get("bounce_type", "Permanent"),
            "bounceSubType": "General",
            "feedbackId": f"fb-{uuid.uuid4()}",
            "bouncedRecipients": [
                {"emailAddress": to, "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 unknown"}
            ],
        }
    elif kind == "Complaint":
        body["complaint"] = {
            "complainedRecipients": [{"emailAddress": to}],
            "complaintFeedbackType": "abuse",
            "feedbackId": f"fb-{uuid.uuid4()}",
        }
    else:
        body["delivery"] = {"recipients": [to], "smtpResponse": "250 2.0.0 OK"}
    return json.dumps(body)


def post_sns(client: TestClient, message: dict[str, Any]) -> Any:
    return client.post(
        "/webhooks/ses",
        content=json.dumps(message),
        headers={"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "x"},
    )


def test_ses_hard_bounce_bounces_the_message_and_suppresses_once(tenant: Tenant, sns: FakeSns):
    client = webhooks(tenant, sns)
    to = address()
    row = send(tenant, to)
    notification = sns.notification(ses_message("Bounce", row, to))
    first = post_sns(client, notification)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "received": 1,
        "applied": 1,
        "duplicate": 0,
        "unmatched": 0,
        "confirmed": False,
    }
    bounced = message(tenant, row)
    assert (bounced["state"], bounced["reason"]) == ("bounced", "hard_bounce")
    assert bounced["last_error"] == "smtp; 550 5.1.1 unknown"
    entry = suppression(tenant, to)
    assert entry is not None
    assert (entry["type"], entry["source"]) == ("hard_bounce", "ses")
    # SNS delivers again: nothing more happens.
    again = post_sns(client, notification)
    assert again.json()["duplicate"] == 1, again.json()
    assert message(tenant, row)["updated_at"] == bounced["updated_at"]


def test_ses_soft_bounces_count_towards_the_threshold(tenant: Tenant, sns: FakeSns):
    client = webhooks(tenant, sns)
    to = address()
    campaign = live_campaign(tenant)
    threshold = tenant.runtime.settings.soft_bounce_threshold
    for count in range(1, threshold + 1):
        row = send(tenant, to, campaign)
        notification = sns.notification(ses_message("Bounce", row, to, bounce_type="Transient"))
        for _ in range(2):  # a retried delivery counts once
            assert post_sns(client, notification).status_code == 200
        soft = message(tenant, row)
        assert (soft["state"], soft["reason"]) == ("sent", "soft_bounce")
        entry = suppression(tenant, to)
        if count < threshold:
            assert entry is None
    assert entry is not None
    assert (entry["type"], entry["soft_bounce_count"]) == ("soft_bounce", threshold)
    # A hard bounce later upgrades the soft-bounce suppression.
    post_sns(client, sns.notification(ses_message("Bounce", row, to)))
    assert suppression(tenant, to)["type"] == "hard_bounce"  # type: ignore[index]


def test_ses_delivery_then_complaint(tenant: Tenant, sns: FakeSns):
    client = webhooks(tenant, sns)
    to = address()
    tenant.client.put(f"/v1/profiles/email/{to}", json={"consent": {"email": "in"}})
    row = send(tenant, to)
    assert post_sns(client, sns.notification(ses_message("Delivery", row, to))).status_code == 200
    assert message(tenant, row)["state"] == "delivered"
    assert post_sns(client, sns.notification(ses_message("Complaint", row, to))).status_code == 200
    assert message(tenant, row)["state"] == "delivered"
    entry = suppression(tenant, to)
    assert entry is not None and entry["type"] == "spam_complaint"
    consent = tenant.client.get(f"/v1/profiles/email/{to}").json()["consent"]["email"]
    assert (consent["status"], consent["source"]) == ("out", "complaint")
    # A late hard bounce of a delivered message: bounced, the complaint suppression stays.
    post_sns(client, sns.notification(ses_message("Bounce", row, to)))
    assert message(tenant, row)["state"] == "bounced"
    assert suppression(tenant, to)["type"] == "spam_complaint"  # type: ignore[index]


def test_sns_subscription_is_confirmed_and_bad_messages_refused(tenant: Tenant, sns: FakeSns):
    client = webhooks(tenant, sns)
    subscription = sns.subscription()
    confirmed = post_sns(client, subscription)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["confirmed"] is True
    assert subscription["SubscribeURL"].removeprefix(sns.base) in sns.requests

    to = address()
    row = send(tenant, to)
    forged = {**sns.notification(ses_message("Bounce", row, to)), "Message": "{}"}
    refused = post_sns(client, forged)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    elsewhere = sns.notification(ses_message("Bounce", row, to))
    elsewhere["SigningCertURL"] = "https://sns.eu-west-1.amazonaws.com.evil.test/x.pem"
    assert post_sns(client, elsewhere).status_code == 403
    assert client.post("/webhooks/ses", content=b"not json").status_code == 422
    assert message(tenant, row)["state"] == "sent"
    assert suppression(tenant, to) is None


def post_sendgrid(client: TestClient, events: list[dict[str, Any]], **headers: str) -> Any:
    body = json.dumps(events).encode()
    stamp = "1700000000"
    der = PRIVATE.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    signed = {
        sendgrid.SIGNATURE_HEADER: base64.b64encode(der).decode(),
        sendgrid.TIMESTAMP_HEADER: stamp,
        "Content-Type": "application/json",
        **headers,
    }
    return client.post("/webhooks/sendgrid", content=body, headers=signed)


def test_sendgrid_events_end_to_end(tenant: Tenant, sns: FakeSns):
    client = webhooks(tenant, sns)
    bounced_to, delivered_to = address(), address()
    bounced, delivered = send(tenant, bounced_to), send(tenant, delivered_to)
    events = [
        {
            "event": "bounce",
            "email": bounced_to,
            "smtp-id": f"<{bounced['id']}@example.com>",
            "sg_event_id": f"sg-{uuid.uuid4()}",
            "status": "5.1.1",
            "reason": "550 5.1.1 unknown user",
        },
        # By the relay's id alone (RecordingAdapter answers p-<id>).
        {
            "event": "delivered",
            "email": delivered_to,
            "sg_message_id": f"p-{delivered['id']}.filter0001.16648.5515E0B88.0",
            "sg_event_id": f"sg-{uuid.uuid4()}",
        },
        {"event": "bounce", "email": "stranger@example.net", "sg_event_id": "sg-unknown"},
        {"event": "open", "email": bounced_to},
    ]
    answer = post_sendgrid(client, events)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "received": 3,
        "applied": 2,
        "duplicate": 0,
        "unmatched": 1,
        "confirmed": False,
    }
    assert message(tenant, bounced)["state"] == "bounced"
    assert message(tenant, delivered)["state"] == "delivered"
    entry = suppression(tenant, bounced_to)
    assert entry is not None and (entry["type"], entry["source"]) == ("hard_bounce", "sendgrid")
    assert post_sendgrid(client, events).json()["duplicate"] == 2

    # Signatures: another timestamp, none, and no key configured are all 403.
    refused = post_sendgrid(client, events, **{sendgrid.TIMESTAMP_HEADER: "1700000001"})
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert client.post("/webhooks/sendgrid", json=events).status_code == 403
    assert post_sendgrid(webhooks(tenant, sns, sendgrid_key=None), events).status_code == 403


def test_feedback_stays_in_the_message_workspace(
    tenant: Tenant, other_tenant: Tenant, sns: FakeSns
):
    client = webhooks(tenant, sns)
    to = address()
    mine, theirs = send(tenant, to), send(other_tenant, to)
    # By address alone, two workspaces sent to it: ambiguous, so ignored.
    anonymous = [{"event": "spamreport", "email": to, "sg_event_id": f"sg-{uuid.uuid4()}"}]
    assert post_sendgrid(client, anonymous).json()["unmatched"] == 1
    # Named by Message-ID: only that message's workspace.
    named = [{**anonymous[0], "smtp-id": f"<{mine['id']}@example.com>"}]
    assert post_sendgrid(client, named).json()["applied"] == 1
    assert suppression(tenant, to)["type"] == "spam_complaint"  # type: ignore[index]
    assert suppression(other_tenant, to) is None
    assert message(other_tenant, theirs)["state"] == "sent"


def test_address_fallback_finds_the_only_workspace(tenant: Tenant, sns: FakeSns):
    client = webhooks(tenant, sns)
    to = address()
    row = send(tenant, to)
    bounce = post_sns(client, sns.notification(ses_message("Bounce", None, to)))
    assert bounce.json()["applied"] == 1
    assert message(tenant, row)["state"] == "bounced"


def test_the_bounce_mailbox_takes_dsn_and_arf_over_smtp(tenant: Tenant):
    port = free_port()
    mailbox = BounceMailbox(tenant.runtime.db, host="127.0.0.1", port=port, soft_bounce_threshold=3)
    mailbox.start()
    try:
        bounced_to, complained_to = address(), address()
        bounced, complained = send(tenant, bounced_to), send(tenant, complained_to)
        report = dsn(block("failed", "5.1.1", bounced_to)).replace(
            b"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", bounced["id"].encode()
        )
        complaint = arf(rcpt=f"<{complained_to}>").replace(
            b"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", complained["id"].encode()
        )
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail("", ["bounces@example.com"], report)
            smtp.sendmail("", ["bounces@example.com"], complaint)
            smtp.sendmail("", ["bounces@example.com"], report)  # the same DSN again
            # Mail that is no report is taken (and dropped): refusing it would bounce a bounce.
            smtp.sendmail("someone@example.net", ["bounces@example.com"], b"Subject: hi\r\n\r\nhi")
    finally:
        mailbox.stop()
    assert message(tenant, bounced)["state"] == "bounced"
    entry = suppression(tenant, bounced_to)
    assert entry is not None and (entry["type"], entry["source"]) == ("hard_bounce", "dsn")
    entry = suppression(tenant, complained_to)
    assert entry is not None and (entry["type"], entry["source"]) == ("spam_complaint", "arf")
