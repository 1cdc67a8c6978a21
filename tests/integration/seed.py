"""One object of every kind in a workspace, made through the API: what walks and fuzzing aim at."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient

from tests.integration.helpers import create_configuration
from tidings.tracking.tokens import TrackingTokens
from tidings.unsubscribe.tokens import UnsubscribeTokens


@dataclass
class Seeded:
    """The ids of one workspace's objects, by the name of the path parameter they fill."""

    workspace_id: str
    ids: dict[str, str] = field(default_factory=dict)
    address: str = ""


def _created(response: Any, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def seed_workspace(client: TestClient, workspace_id: str, secret_key: bytes) -> Seeded:
    """A live campaign with an execution and its message, a profile with a push token, an
    audience, a rule set, a suppression, a channel configuration and a second API key."""
    tag = uuid.uuid4().hex[:8]
    address = f"seed-{tag}@example.com"
    seeded = Seeded(workspace_id, address=address)
    configuration = create_configuration(client, category="transactional")
    campaign = _created(
        client.post(
            "/v1/campaigns",
            json={
                "name": f"Seeded {tag}",
                "category": "transactional",
                "channel": "email",
                "channel_configuration_id": configuration["id"],
                "content": {"subject": "Hi {{ profile.firstName }}", "html": "<p>Hello</p>"},
                "audience": {"identity_namespace": "email", "create_new_profiles": True},
            },
        )
    )
    _created(client.post(f"/v1/campaigns/{campaign['id']}/activate"), 200)
    _created(
        client.put(f"/v1/profiles/email/{address}", json={"attributes": {"firstName": "Ada"}}),
        201,
    )
    _created(
        client.put(
            f"/v1/profiles/email/{address}/push-tokens",
            json={"app_id": "com.example.app", "platform": "android", "token": f"tok-{tag}"},
        ),
    )
    execution = _created(
        client.post(
            "/v1/executions",
            json={
                "campaign_id": campaign["id"],
                "recipients": [{"identity": {"namespace": "email", "id": address}}],
            },
        ),
        202,
    )
    [message] = _created(client.get(f"/v1/executions/{execution['execution_id']}/messages"), 200)[
        "items"
    ]
    audience = _created(client.post("/v1/audiences", json={"name": f"Audience {tag}"}))
    rule_set = _created(client.post("/v1/rule-sets", json={"name": f"Rules {tag}"}))
    suppression = _created(
        client.post("/v1/suppressions", json={"value": f"sup-{tag}@example.com"})
    )["suppression"]
    key = _created(
        client.post("/v1/api-keys", json={"name": f"key {tag}", "scopes": ["campaigns:read"]})
    )
    seeded.ids.update(
        campaign_id=campaign["id"],
        number="1",
        execution_id=execution["execution_id"],
        schedule_id=execution["execution_id"],
        message_id=message["id"],
        configuration_id=configuration["id"],
        namespace="email",
        identity=address,
        audience_id=audience["id"],
        rule_set_id=rule_set["id"],
        suppression_id=suppression["id"],
        key_id=key["id"],
        push_token=f"tok-{tag}",
    )
    imported = client.post(
        "/v1/profiles/imports",
        content=f"email\nimported-{tag}@example.com\n".encode(),
        headers={"Content-Type": "text/csv"},
    )
    seeded.ids["import_id"] = _created(imported, 200)["import_id"]
    webhook = client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/tidings", "event_types": ["sent"]},
    )
    if webhook.status_code != 404:  # feedback webhooks, where this build has them
        seeded.ids["webhook_id"] = _created(webhook)["id"]
        # No delivery exists before an event is dispatched: an id of none still checks that
        # another workspace's webhook id is refused first.
        seeded.ids["delivery_id"] = str(uuid.uuid4())
    tracking = TrackingTokens(secret_key)
    message_ids = tracking.ids(workspace_id, message["id"])
    seeded.ids["unsubscribe_token"] = UnsubscribeTokens(secret_key).mint(
        workspace_id, message["id"], "email"
    )
    seeded.ids["click_token"] = tracking.click_token(message_ids, 0, "https://example.com/") or ""
    seeded.ids["open_token"] = tracking.open_token(message_ids)
    return seeded
