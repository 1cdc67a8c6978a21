"""`make run`'s first look: with no provider at all, a proof lands in the dev mailbox page."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx
import pytest

from tests.e2e.test_serve import Server, server  # noqa: F401 (the fixture)

pytestmark = pytest.mark.e2e
MEMBER = "viewer@example.com"
CREATE_USER = (sys.executable, "-m", "tidings", "users", "create")
PASSWORD = "a long console password"


def signed_in(server: Server) -> httpx.Client:  # noqa: F811
    """A console session of a viewer of the default workspace: the mailbox is behind sign-in."""
    subprocess.run(
        [*CREATE_USER, MEMBER, "--role", "viewer", "--password-stdin"],
        input=PASSWORD + "\n",
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    browser = httpx.Client(base_url=server.base_url, timeout=10)
    form = browser.get("/sign-in").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token, form
    signed = browser.post(
        "/sign-in", data={"email": MEMBER, "password": PASSWORD, "csrf_token": token.group(1)}
    )
    assert signed.status_code == 303, signed.text
    return browser


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
        # An API key is no console session: the mailbox asks for a sign-in.
        refused = client.get("/dev/mailbox")
        assert refused.status_code == 303 and refused.headers["location"].startswith("/sign-in")
        browser = signed_in(server)
        try:
            deadline = time.monotonic() + 20
            page = browser.get("/dev/mailbox")
            while message_id not in page.text and time.monotonic() < deadline:
                time.sleep(0.1)
                page = browser.get("/dev/mailbox")
            assert "[Proof] Hello Ada" in page.text, page.text
            detail = browser.get(f"/dev/mailbox/{message_id}")
            assert detail.status_code == 200 and '<iframe sandbox=""' in detail.text
        finally:
            browser.close()
        state = client.get(f"/v1/executions/{proof.json()['execution_id']}/messages").json()
        assert [m["state"] for m in state["items"]] == ["sent"]
