"""Request bodies and steps that many integration tests share."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

MARKETING_HTML = (
    "<h1>Hello {{ profile.firstName | default('there') }}</h1>"
    "<p>Your order {{ context.order.id }} ships soon.</p>"
    "{% for item in context.order.items %}<li>{{ item.name }} x{{ item.qty }}</li>{% endfor %}"
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a>'
)


def create_configuration(
    client: TestClient, *, category: str = "marketing", channel: str = "email", **settings: Any
) -> dict[str, Any]:
    channel_settings: dict[str, Any] = {
        "email": {"from_address": "news@example.com", "from_name": "Example News"},
        "sms": {"provider": "dev", "from_number": "+14155550100"},
        "push": {"provider": "dev", "app_id": "com.example.app"},
    }[channel]
    channel_settings.update(settings)
    response = client.post(
        "/v1/channel-configurations",
        json={
            "name": f"{channel}-{category}-{uuid.uuid4().hex[:8]}",
            "channel": channel,
            "category": category,
            channel: channel_settings,
        },
    )
    assert response.status_code == 201, response.text
    return response.json()


def email_campaign_body(configuration_id: str | None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Spring sale",
        "description": "Seasonal promotion",
        "tags": ["promo", "spring"],
        "category": "marketing",
        "channel": "email",
        "channel_configuration_id": configuration_id,
        "content": {
            "subject": "{{ profile.firstName }}, your order {{ context.order.id }}",
            "html": MARKETING_HTML,
        },
        "audience": {"identity_namespace": "email"},
    }
    body.update(overrides)
    return body


def create_ready_campaign(client: TestClient, **overrides: Any) -> dict[str, Any]:
    configuration = create_configuration(client)
    response = client.post(
        "/v1/campaigns", json=email_campaign_body(configuration["id"], **overrides)
    )
    assert response.status_code == 201, response.text
    return response.json()
