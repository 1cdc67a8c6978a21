"""`make run`'s first look: with no provider at all, a proof lands in the dev mailbox page."""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_serve import Server, server  # noqa: F401 (the fixture)

pytestmark = pytest.mark.e2e


def test_a_proof_of_a_draft_shows_up_in_the_dev_mailbox(server: Server):  # noqa: F811
    with server.client() as client:
        configuration = client.post(
            "/v1/channel-configurations",
            json={
                "name": "News",
                "channel": "email",
                "category": "marketing",
                "email": {"from_address": "news@example.com"},
            },
        ).json()
        campaign = client.post(
            "/v1/campaigns",
            json={
                "name": "First look",
                "category": "marketing",
                "channel": "email",
                "channel_configuration_id": configuration["id"],
                "content": {
                    "subject": "Hello {{ profile.firstName }}",
                    "html": "<p>Hi</p><a href='{{ unsubscribe_url }}'>stop</a>",
                },
            },
        ).json()
        proof = client.post(
            f"/v1/campaigns/{campaign['id']}/proofs",
            json={"to": "me@example.com", "profile": {"firstName": "Ada"}},
        )
        assert proof.status_code == 202, proof.text
        message_id = proof.json()["message_id"]
        deadline = time.monotonic() + 20
        page = client.get("/dev/mailbox")
        while message_id not in page.text and time.monotonic() < deadline:
            time.sleep(0.1)
            page = client.get("/dev/mailbox")
        assert "[Proof] Hello Ada" in page.text, page.text
        detail = client.get(f"/dev/mailbox/{message_id}")
        assert detail.status_code == 200 and '<iframe sandbox=""' in detail.text
        state = client.get(f"/v1/executions/{proof.json()['execution_id']}/messages").json()
        assert [m["state"] for m in state["items"]] == ["sent"]
