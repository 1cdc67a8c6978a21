"""Unsubscribe through a real mailbox's eyes: List-Unsubscribe read from the received message,
RFC 8058's one-click POST sent to it, against a real `tidings serve`."""

from __future__ import annotations

import re
import stat
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Mailbox
from tests.e2e.test_serve import KEY, Server, start_server, stop_server

pytestmark = pytest.mark.e2e


def live_marketing_campaign(client: httpx.Client) -> str:
    configuration = client.post(
        "/v1/channel-configurations",
        json={
            "name": "Newsletter",
            "channel": "email",
            "category": "marketing",
            "email": {"from_address": "news@example.com", "from_name": "Example News"},
        },
    ).json()
    campaign = client.post(
        "/v1/campaigns",
        json={
            "name": "Spring sale",
            "category": "marketing",
            "channel": "email",
            "channel_configuration_id": configuration["id"],
            "content": {
                "subject": "20% off",
                "html": '<p>Sale!</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
            },
            "audience": {"identity_namespace": "email", "create_new_profiles": True},
        },
    ).json()
    activated = client.post(f"/v1/campaigns/{campaign['id']}/activate")
    assert activated.status_code == 200, activated.text
    campaign_id: str = campaign["id"]
    return campaign_id


def trigger(client: httpx.Client, campaign_id: str, address: str) -> str:
    response = client.post(
        "/v1/executions",
        json={
            "campaign_id": campaign_id,
            "recipients": [{"identity": {"namespace": "email", "id": address}}],
        },
    )
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


def counts_when_done(client: httpx.Client, execution_id: str) -> dict[str, int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = client.get(f"/v1/executions/{execution_id}").json()
        if status["status"] == "completed":
            counts: dict[str, int] = status["counts"]
            return counts
        time.sleep(0.1)
    raise AssertionError(f"execution {execution_id} did not complete")


def one_click(url: str) -> httpx.Response:
    """What a mailbox provider sends (RFC 8058): a POST with no cookies, no credentials, and
    no following of redirects."""
    with httpx.Client(follow_redirects=False, timeout=10) as mailbox_provider:
        return mailbox_provider.post(
            url,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )


def test_one_click_unsubscribe_from_the_received_header(
    tmp_path: Path, mailing_server: Server, mailbox: tuple[Mailbox, int]
):
    inbox, smtp_port = mailbox
    with mailing_server.client() as client:
        campaign_id = live_marketing_campaign(client)
        trigger(client, campaign_id, "ada@example.com")
        [message] = inbox.wait_for(1)

        header = str(message["List-Unsubscribe"])
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        found = re.fullmatch(r"<(http://127\.0\.0\.1:\d+/unsubscribe/[A-Za-z0-9_-]{67})>", header)
        assert found is not None, header
        url = found.group(1)
        assert url.startswith(mailing_server.base_url)
        html = message.get_body(("html",)).get_content()
        assert f'href="{url}"' in html

        # Opening the link (as a scanner would) asks and changes nothing.
        with httpx.Client(follow_redirects=False, timeout=10) as browser:
            page = browser.get(url)
        assert page.status_code == 200 and '<form method="post">' in page.text
        profile = client.get("/v1/profiles/email/ada@example.com").json()
        assert profile["consent"]["email"]["status"] == "unset"

        response = one_click(url)
        assert response.status_code == 200, response.text
        assert "set-cookie" not in response.headers
        consent = client.get("/v1/profiles/email/ada@example.com").json()["consent"]["email"]
        assert (consent["status"], consent["source"]) == ("out", "one_click")
        assert consent["updated_at"]

        # The next marketing message is not sent.
        later = trigger(client, campaign_id, "ada@example.com")
        assert counts_when_done(client, later) == {"excluded": 1}
    assert len(inbox.messages) == 1

    # The generated key is private and outlives the process: the link still opens.
    key_file = tmp_path / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    stop_server(mailing_server)
    restarted = start_server(
        tmp_path, TIDINGS_BOOTSTRAP_API_KEY=KEY, TIDINGS_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}"
    )
    try:
        moved = url.replace(mailing_server.base_url, restarted.base_url)
        again = one_click(moved)
        assert again.status_code == 200, again.text
        tampered = one_click(moved[:-1] + ("A" if moved[-1] != "A" else "B"))
        assert tampered.status_code == 404
    finally:
        stop_server(restarted)
