"""Step 7 end to end: a real `tidings serve`, a real SMTP server, triggers through the API."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Mailbox
from tests.e2e.test_serve import Server

pytestmark = pytest.mark.e2e


def live_email_campaign(client: httpx.Client, category: str = "transactional") -> dict[str, Any]:
    configuration = client.post(
        "/v1/channel-configurations",
        json={
            "name": f"Shop {category}",
            "channel": "email",
            "category": category,
            "email": {"from_address": "shop@example.com", "from_name": "Café Shop"},
        },
    ).json()
    campaign = client.post(
        "/v1/campaigns",
        json={
            "name": "Order confirmation",
            "category": category,
            "channel": "email",
            "channel_configuration_id": configuration["id"],
            "content": {
                "subject": "Merci {{ profile.firstName }}: commande {{ context.order.id }}",
                "html": "<h1>Bonjour {{ profile.firstName }}</h1>"
                "<p>{{ context.note }}</p>"
                "{% for item in context.order.items %}<li>{{ item }}</li>{% endfor %}",
            },
            "audience": {"identity_namespace": "email", "create_new_profiles": True},
        },
    ).json()
    activated = client.post(f"/v1/campaigns/{campaign['id']}/activate")
    assert activated.status_code == 200, activated.text
    return activated.json()


def trigger_in_chunks(
    client: httpx.Client, campaign_id: str, addresses: list[str], order_id: str = "1"
) -> list[str]:
    """Triggers one message per address in calls of 20 recipients; returns the execution ids."""
    executions = []
    for start in range(0, len(addresses), 20):
        response = client.post(
            "/v1/executions",
            json={
                "campaign_id": campaign_id,
                "context": {"order": {"id": order_id, "items": []}},
                "recipients": [
                    {"identity": {"namespace": "email", "id": address}}
                    for address in addresses[start : start + 20]
                ],
            },
        )
        assert response.status_code == 202, response.text
        executions.append(response.json()["execution_id"])
    return executions


def test_triggered_emails_arrive_personalized_and_escaped(
    mailing_server: Server, mailbox: tuple[Mailbox, int]
):
    inbox, _ = mailbox
    with mailing_server.client() as client:
        client.put(
            "/v1/profiles/email/ada@example.com",
            json={"attributes": {"firstName": "Ada <script>"}},
        )
        campaign = live_email_campaign(client)
        body = {
            "campaign_id": campaign["id"],
            "request_id": "order-1001",
            "context": {"order": {"id": "1001", "items": ["thé", "café"]}},
            "recipients": [
                {
                    "identity": {"namespace": "email", "id": "ada@example.com"},
                    "context": {"note": "<b>fragile</b>"},
                },
                {
                    "identity": {"namespace": "email", "id": "zoe@example.com"},
                    "profile": {"firstName": "Zoë"},
                },
            ],
        }
        response = client.post("/v1/executions", json=body)
        assert response.status_code == 202, response.text
        execution_id = response.json()["execution_id"]
        received = inbox.wait_for(2)
        by_rcpt = {str(message["To"]): message for message in received}
        ada = by_rcpt["ada@example.com"]
        assert ada["Subject"] == "Merci Ada <script>: commande 1001"
        assert "Café Shop" in str(ada["From"])
        html = ada.get_body(("html",)).get_content()
        assert "<h1>Bonjour Ada &lt;script&gt;</h1>" in html
        # minijinja's HTML escaping also encodes "/" (as &#x2f;).
        assert "<p>&lt;b&gt;fragile&lt;&#x2f;b&gt;</p>" in html
        assert "<b>" not in html
        assert "<li>thé</li><li>café</li>" in html
        text = ada.get_body(("plain",)).get_content()
        assert "Bonjour Ada <script>" in text
        zoe = next(m for rcpt, m in by_rcpt.items() if rcpt.startswith("zo"))
        assert zoe["Subject"].startswith("Merci Zoë")

        # The API reports what happened, and a replay sends nothing more.
        deadline = time.monotonic() + 10
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = client.get(f"/v1/executions/{execution_id}").json()
            if status["status"] == "completed":
                break
            time.sleep(0.1)
        assert status["counts"] == {"sent": 2}
        replay = client.post("/v1/executions", json=body)
        assert replay.json()["execution_id"] == execution_id
    time.sleep(1)
    assert len(inbox.messages) == 2


def test_cli_trigger_is_delivered_by_the_running_server(
    mailing_server: Server, mailbox: tuple[Mailbox, int]
):
    inbox, _ = mailbox
    with mailing_server.client() as client:
        campaign = live_email_campaign(client)
    result = mailing_server.cli(
        "trigger",
        campaign["id"],
        "--to",
        "cli@example.com",
        "--context",
        '{"order": {"id": "C-7", "items": []}}',
    )
    assert "1 message(s) accepted" in result.stdout
    message = inbox.wait_for(1)[0]
    assert message["Subject"] == "Merci : commande C-7"
    assert inbox.envelopes[0][1] == ["cli@example.com"]


def test_ajo_unitary_trigger_arrives(mailing_server: Server, mailbox: tuple[Mailbox, int]):
    inbox, _ = mailbox
    with mailing_server.client() as client:
        campaign = live_email_campaign(client)
        response = client.post(
            "/ajo/im/executions/unitary",
            headers={"x-sandbox-name": "default", "x-api-key": "client", "x-gw-ims-org-id": "O"},
            json={
                "requestId": "ajo-e2e-1",
                "campaignId": campaign["id"],
                "recipients": [
                    {
                        "type": "external",
                        "userId": "jane@example.com",
                        "namespace": "email",
                        "profile": {"firstName": "Jane"},
                        "context": {"order": {"id": "AJO-9", "items": ["tea"]}, "note": "hi"},
                    }
                ],
            },
        )
        assert response.status_code == 202, response.text
        assert response.json()["requestId"] == "ajo-e2e-1"
    message = inbox.wait_for(1)[0]
    assert message["Subject"] == "Merci Jane: commande AJO-9"
    assert inbox.envelopes[0][1] == ["jane@example.com"]
