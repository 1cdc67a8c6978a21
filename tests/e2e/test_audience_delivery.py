"""Audience executions end to end: a real server fans a marketing campaign out to an audience
at its scheduled time, and the emails arrive; a cancelled schedule sends nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Mailbox
from tests.e2e.test_serve import Server

pytestmark = pytest.mark.e2e
AJO_HEADERS = {"x-sandbox-name": "default", "x-api-key": "client", "x-gw-ims-org-id": "O"}


def newsletter(client: httpx.Client, members: list[str]) -> dict[str, Any]:
    for address in members:
        response = client.put(
            f"/v1/profiles/email/{address}", json={"attributes": {"firstName": address[:3]}}
        )
        assert response.status_code in (200, 201), response.text
    audience = client.post(
        "/v1/audiences",
        json={
            "name": "Newsletter",
            "members": [{"namespace": "email", "id": address} for address in members],
        },
    ).json()
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
            "name": "Weekly",
            "category": "marketing",
            "channel": "email",
            "channel_configuration_id": configuration["id"],
            "content": {
                "subject": "{{ profile.firstName }}, issue {{ context.issue }}",
                "html": '<p>Hello {{ profile.firstName }}</p><a href="{{ unsubscribe_url }}">'
                "Unsubscribe</a>",
            },
            "audience": {"identity_namespace": "email", "audience_id": audience["id"]},
        },
    ).json()
    activated = client.post(f"/v1/campaigns/{campaign['id']}/activate")
    assert activated.status_code == 200, activated.text
    return activated.json()


def test_a_scheduled_audience_execution_arrives_and_a_cancelled_one_does_not(
    mailing_server: Server, mailbox: tuple[Mailbox, int]
):
    inbox, _ = mailbox
    members = [f"reader{index}@example.com" for index in range(25)]
    with mailing_server.client() as client:
        campaign = newsletter(client, members)
        soon = datetime.now(UTC) + timedelta(seconds=2)
        scheduled = client.post(
            "/ajo/im/executions/audience",
            headers=AJO_HEADERS,
            json={
                "campaignId": campaign["id"],
                "context": {"issue": 42},
                "schedule": {"executeAt": soon.isoformat()},
            },
        )
        assert scheduled.status_code == 202, scheduled.text
        assert scheduled.json()["scheduleStatus"] == "Scheduled"
        cancelled = client.post(
            "/v1/executions",
            json={
                "campaign_id": campaign["id"],
                "context": {"issue": 43},
                "execute_at": (soon + timedelta(seconds=1)).isoformat(),
            },
        ).json()["execution_id"]
        assert client.delete(f"/v1/executions/{cancelled}").json()["status"] == "cancelled"
        # Nothing leaves before its time.
        time.sleep(0.5)
        assert inbox.messages == []

        received = inbox.wait_for(len(members), timeout=30)
        assert sorted(str(message["To"]) for message in received) == sorted(members)
        assert {str(message["Subject"]).split(", ")[1] for message in received} == {"issue 42"}
        schedule_id = scheduled.json()["scheduleId"]
        view = client.get(f"/ajo/im/executions/schedules/{schedule_id}", headers=AJO_HEADERS)
        assert view.json()["scheduleStatus"] == "Triggered"
        assert view.json()["executionDetails"]["targetedProfileCount"] == len(members)
    time.sleep(2)
    assert len(inbox.messages) == len(members)
