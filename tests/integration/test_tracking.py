"""Open and click tracking in-process: rewritten at delivery, followed and fetched anonymously."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.integration.helpers import create_configuration
from tests.integration.test_delivery import RecordingAdapter, deliverer_for, drain, states, trigger
from tests.integration.test_executions import recipient
from tidings.channels.adapters import OutboundMessage
from tidings.tracking import service
from tidings.tracking.api import PIXEL
from tidings.tracking.models import USER_AGENT_CHARS, message_events
from tidings.tracking.tokens import TrackingTokens

pytestmark = pytest.mark.integration

HTML = (
    "<html><body><p>Hi {{ profile.firstName }}</p>"
    '<a href="https://shop.example/p/{{ context.sku }}?utm=mail&amp;x=1">See it</a> '
    '<a href="mailto:help@example.com">help</a> '
    "<a href='{{ unsubscribe_url }}'>stop</a>"
    "</body></html>"
)
CONTENT = {
    "subject": "Sale",
    "html": HTML,
    "text": "See https://shop.example/p/{{ context.sku }} - stop: {{ unsubscribe_url }}",
}
CLICK = re.compile(r'href="https://tidings\.test(/t/c/[A-Za-z0-9_-]+)"')
OPEN = re.compile(r'src="https://tidings\.test(/t/o/[A-Za-z0-9_-]+)"')
UNSUBSCRIBE = re.compile(r"https://tidings\.test/unsubscribe/[A-Za-z0-9_-]+")


def anonymous(tenant: Tenant) -> TestClient:
    """A mail client or a browser: no API key, no cookies, redirects not followed."""
    return TestClient(tenant.client.app, follow_redirects=False)


def campaign_with(
    tenant: Tenant, content: dict[str, Any] = CONTENT, **tracking: bool
) -> dict[str, Any]:
    configuration = create_configuration(tenant.client, category="marketing", **tracking)
    body = {
        "name": "Tracked",
        "category": "marketing",
        "channel": "email",
        "channel_configuration_id": configuration["id"],
        "content": content,
        "audience": {"identity_namespace": "email", "create_new_profiles": True},
    }
    campaign = tenant.client.post("/v1/campaigns", json=body).json()
    activated = tenant.client.post(f"/v1/campaigns/{campaign['id']}/activate")
    assert activated.status_code == 200, activated.text
    result: dict[str, Any] = activated.json()
    return result


def deliver(tenant: Tenant, campaign: dict[str, Any], sku: str = "42") -> OutboundMessage:
    adapter = RecordingAdapter()
    execution = trigger(
        tenant,
        campaign,
        recipient("ada@example.com", profile={"firstName": "Ada"}),
        context={"sku": sku},
    )
    drain(deliverer_for(tenant.runtime, adapter))
    row = states(tenant, execution)["ada@example.com"]
    assert row["state"] == "sent", row
    # Delivery takes whatever is due in the database, other tests' messages included.
    (message,) = [m for m in adapter.sent if m.message_id == row["id"]]
    return message


def events(tenant: Tenant) -> list[dict[str, Any]]:
    with tenant.runtime.db.read() as conn:
        rows = conn.execute(
            message_events.select()
            .where(message_events.c.workspace_id == tenant.workspace_id)
            .order_by(message_events.c.id)
        ).mappings()
        return [dict(row) for row in rows]


def test_a_tracked_link_redirects_to_its_destination_and_records_the_click(tenant: Tenant):
    campaign = campaign_with(tenant, click_tracking=True)
    message = deliver(tenant, campaign, sku="A&B 7")
    html = message.content["html"]
    (path,) = CLICK.findall(html)
    # mailto: and the unsubscribe link stay as written; there is no pixel.
    assert 'href="mailto:help@example.com"' in html
    assert UNSUBSCRIBE.search(html)
    assert OPEN.search(html) is None
    # The plain-text part keeps its links.
    assert "https://shop.example/p/A&B 7" in message.content["text"]

    response = anonymous(tenant).get(path, headers={"User-Agent": "Mail/1.0 " + "x" * 400})
    assert response.status_code == 302
    # The template escaped "&" in the context value, which the link means as "&"; the space
    # is percent-encoded, as a browser following the link itself would.
    assert response.headers["location"] == "https://shop.example/p/A&B%207?utm=mail&x=1"
    assert response.headers["cache-control"].startswith("no-store")
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in response.headers
    (event,) = events(tenant)
    assert event == {
        **event,
        "message_id": message.message_id,
        "campaign_id": campaign["id"],
        "kind": "click",
        "link_index": 0,
        "url": "https://shop.example/p/A&B 7?utm=mail&x=1",
    }
    assert event["user_agent"] == ("Mail/1.0 " + "x" * 400)[:USER_AGENT_CHARS]
    # Every click counts: the second one is a second event.
    assert anonymous(tenant).get(path).status_code == 302
    with tenant.runtime.db.read() as conn:
        counts = service.counts(conn, [message.message_id])
    assert counts == {message.message_id: {"click": 2}}


def test_a_text_part_derived_from_the_html_keeps_the_links_as_written(tenant: Tenant):
    html_only = {key: value for key, value in CONTENT.items() if key != "text"}
    message = deliver(tenant, campaign_with(tenant, html_only, click_tracking=True))
    assert CLICK.search(message.content["html"])
    text = message.content["text"]
    assert "https://shop.example/p/42?utm=mail&x=1" in text
    assert "/t/c/" not in text


def test_a_tampered_link_is_a_404_page_and_never_a_redirect(tenant: Tenant):
    message = deliver(tenant, campaign_with(tenant, click_tracking=True))
    (path,) = CLICK.findall(message.content["html"])
    token = path.rsplit("/", 1)[1]
    flipped = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    for bad in (flipped, token[:-2], token + "AA", "x", "A" * 5000):
        response = anonymous(tenant).get(f"/t/c/{bad}")
        assert response.status_code == 404, bad
        assert "location" not in response.headers
        assert response.headers["content-type"].startswith("text/html")
        assert "not valid" in response.text
    assert events(tenant) == []


def test_the_pixel_is_a_gif_that_records_an_open(tenant: Tenant):
    message = deliver(tenant, campaign_with(tenant, open_tracking=True))
    html = message.content["html"]
    assert 'href="https://shop.example/p/42?utm=mail&amp;x=1"' in html  # clicks are off
    (path,) = OPEN.findall(html)
    assert html.index(path) < html.index("</body>")
    response = anonymous(tenant).get(path)
    assert response.status_code == 200
    assert response.content == PIXEL
    assert response.headers["content-type"] == "image/gif"
    assert "no-store" in response.headers["cache-control"]
    (event,) = events(tenant)
    assert (event["kind"], event["message_id"], event["link_index"], event["url"]) == (
        "open",
        message.message_id,
        None,
        None,
    )
    # An invalid token gets the same image and records nothing.
    bad = anonymous(tenant).get(path[:-3] + "AAA")
    assert (bad.status_code, bad.content) == (200, PIXEL)
    assert len(events(tenant)) == 1


def test_both_on_rewrite_links_and_add_the_pixel(tenant: Tenant):
    message = deliver(tenant, campaign_with(tenant, click_tracking=True, open_tracking=True))
    assert len(CLICK.findall(message.content["html"])) == 1
    assert len(OPEN.findall(message.content["html"])) == 1


def test_with_tracking_off_the_html_is_exactly_as_rendered(tenant: Tenant):
    message = deliver(tenant, campaign_with(tenant))
    unsubscribe = UNSUBSCRIBE.search(message.content["html"])
    assert unsubscribe is not None
    assert message.content["html"] == (
        "<html><body><p>Hi Ada</p>"
        '<a href="https://shop.example/p/42?utm=mail&amp;x=1">See it</a> '
        '<a href="mailto:help@example.com">help</a> '
        f"<a href='{unsubscribe.group(0)}'>stop</a>"
        "</body></html>"
    )


def test_a_token_naming_another_workspace_records_nothing_there(
    tenant: Tenant, other_tenant: Tenant
):
    message = deliver(tenant, campaign_with(tenant, click_tracking=True))
    tokens = TrackingTokens(tenant.runtime.secret_key)
    ids = tokens.ids(other_tenant.workspace_id, message.message_id)
    token = tokens.click_token(ids, 0, "https://shop.example/")
    assert token is not None
    # Signed by this server, so it leads where it says; but the message is not the other
    # workspace's, so no event is recorded in either.
    assert anonymous(tenant).get(f"/t/c/{token}").status_code == 302
    assert anonymous(tenant).get(f"/t/o/{tokens.open_token(ids)}").status_code == 200
    assert events(tenant) == []
    assert events(other_tenant) == []


def test_a_failing_write_is_logged_and_the_recipient_still_gets_there(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    message = deliver(tenant, campaign_with(tenant, click_tracking=True, open_tracking=True))
    (click,) = CLICK.findall(message.content["html"])
    (pixel,) = OPEN.findall(message.content["html"])

    def broken(*args: Any, **kwargs: Any) -> bool:
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk full"))

    monkeypatch.setattr(service, "record", broken)
    with caplog.at_level(logging.ERROR, logger="tidings.tracking"):
        assert anonymous(tenant).get(click).status_code == 302
        assert anonymous(tenant).get(pixel).status_code == 200
    assert [r.message for r in caplog.records if r.name == "tidings.tracking"] == [
        f"could not record the click of message {message.message_id}",
        f"could not record the open of message {message.message_id}",
    ]


def test_the_routes_need_no_api_key_and_appear_in_openapi(tenant: Tenant):
    spec = anonymous(tenant).get("/openapi.json").json()
    assert set(spec["paths"]["/t/c/{token}"]) == {"get"}
    assert set(spec["paths"]["/t/o/{token}"]) == {"get"}
    assert "security" not in spec["paths"]["/t/c/{token}"]["get"]
