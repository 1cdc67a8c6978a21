"""Unsubscribe links end to end in-process: minted at delivery, GET asks, POST opts out."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.integration.test_delivery import RecordingAdapter, deliverer_for, drain, states, trigger
from tests.integration.test_executions import live_campaign, recipient
from tidings.channels.adapters import OutboundMessage
from tidings.executions.models import messages
from tidings.unsubscribe.tokens import UnsubscribeTokens
from tidings.vocabulary import Channel

pytestmark = pytest.mark.integration

MARKETING_CONTENT = {
    "subject": "Sale",
    "html": "<p>Hi</p><a href='{{ unsubscribe_url }}'>stop</a>",
    "text": "Stop: {{ unsubscribe_url }}",
}
LINK = re.compile(r"https://tidings\.test/unsubscribe/([A-Za-z0-9_-]+)")
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def anonymous(tenant: Tenant) -> TestClient:
    """What a mailbox provider or a browser is: no API key, no cookies, no redirects."""
    return TestClient(tenant.client.app, follow_redirects=False)


def send(tenant: Tenant, campaign: dict[str, Any], *recipients: dict[str, Any]) -> str:
    """Triggers and delivers; the execution id."""
    execution = trigger(tenant, campaign, *recipients)
    drain(deliverer_for(tenant.runtime, ADAPTER))
    return execution


ADAPTER = RecordingAdapter()


def sent_to(tenant: Tenant, execution: str, address: str) -> OutboundMessage:
    row = states(tenant, execution)[address]
    assert row["state"] == "sent", row
    return next(m for m in ADAPTER.sent if m.message_id == row["id"])


def path_of(message: OutboundMessage) -> str:
    """The link's path, read from the HTML; the text part and the header say the same."""
    found = LINK.search(message.content["html"])
    assert found is not None, message.content
    assert found.group(0) in message.content["text"]
    return "/unsubscribe/" + found.group(1)


def consent(tenant: Tenant, address: str) -> dict[str, Any]:
    response = tenant.client.get(f"/v1/profiles/email/{address}")
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()["consent"]["email"]
    return entry


def suppressions_of(tenant: Tenant) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = tenant.client.get("/v1/suppressions").json()["items"]
    return items


def test_marketing_email_carries_a_signed_link_and_one_click_headers(tenant: Tenant):
    marketing = live_campaign(tenant, category="marketing", content=MARKETING_CONTENT)
    transactional = live_campaign(
        tenant, content={"subject": "Receipt", "html": "<a href='{{ unsubscribe_url }}'>x</a>"}
    )
    first = send(tenant, marketing, recipient("ada@example.com"), recipient("bob@example.com"))
    receipt = send(tenant, transactional, recipient("ada@example.com"))

    ada = sent_to(tenant, first, "ada@example.com")
    path = path_of(ada)
    assert ada.headers == {
        "List-Unsubscribe": f"<https://tidings.test{path}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    token = path.rsplit("/", 1)[1]
    named = UnsubscribeTokens(tenant.runtime.secret_key).verify(token)
    assert named is not None
    assert (named.workspace_id, named.message_id, named.channel) == (
        tenant.workspace_id,
        ada.message_id,
        Channel.EMAIL,
    )
    # One link per message.
    assert path_of(sent_to(tenant, first, "bob@example.com")) != path
    # Transactional email gets a working link where its template asks, and no List-Unsubscribe.
    ada_receipt = sent_to(tenant, receipt, "ada@example.com")
    assert LINK.search(ada_receipt.content["html"])
    assert ada_receipt.headers == {}


def test_get_asks_and_changes_nothing_post_opts_out_once(tenant: Tenant):
    tenant.client.put("/v1/profiles/email/ada@example.com", json={"consent": {"email": "in"}})
    before = consent(tenant, "ada@example.com")
    marketing = live_campaign(tenant, category="marketing", content=MARKETING_CONTENT)
    transactional = live_campaign(tenant)
    path = path_of(
        sent_to(tenant, send(tenant, marketing, recipient("ada@example.com")), "ada@example.com")
    )
    browser = anonymous(tenant)

    for _ in range(2):  # a mail scanner, then the person
        page = browser.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<form method="post">' in page.text and "marketing email" in page.text
        assert page.headers["cache-control"] == "no-store"
        assert "set-cookie" not in page.headers
        assert consent(tenant, "ada@example.com") == before

    done = browser.post(path, headers=FORM, content=ONE_CLICK)
    assert done.status_code == 200, done.text
    assert "unsubscribed" in done.text
    assert "set-cookie" not in done.headers
    after = consent(tenant, "ada@example.com")
    assert after["status"] == "out" and after["source"] == "one_click"
    assert after["updated_at"] > before["updated_at"]
    # Idempotent: the second POST answers alike and leaves the change as recorded.
    again = browser.post(path, headers=FORM, content=ONE_CLICK)
    assert again.status_code == 200
    assert consent(tenant, "ada@example.com") == after

    later = trigger(tenant, marketing, recipient("ada@example.com"))
    receipt = trigger(tenant, transactional, recipient("ada@example.com"))
    drain(deliverer_for(tenant.runtime, ADAPTER))
    row = states(tenant, later)["ada@example.com"]
    assert (row["state"], row["reason"]) == ("excluded", "no_consent")
    assert states(tenant, receipt)["ada@example.com"]["state"] == "sent"


def test_the_pages_button_records_the_link_as_source(tenant: Tenant):
    marketing = live_campaign(tenant, category="marketing", content=MARKETING_CONTENT)
    path = path_of(
        sent_to(tenant, send(tenant, marketing, recipient("cy@example.com")), "cy@example.com")
    )
    assert consent(tenant, "cy@example.com")["status"] == "unset"
    # What the confirmation page's form sends: an empty form body.
    response = anonymous(tenant).post(path, headers=FORM, content=b"")
    assert response.status_code == 200
    entry = consent(tenant, "cy@example.com")
    assert (entry["status"], entry["source"]) == ("out", "unsubscribe_link")
    # Other channels are not touched.
    profile = tenant.client.get("/v1/profiles/email/cy@example.com").json()
    assert profile["consent"]["sms"]["status"] == "unset"


def test_an_external_recipient_is_suppressed_once(tenant: Tenant):
    marketing = live_campaign(tenant, category="marketing", content=MARKETING_CONTENT)
    transactional = live_campaign(tenant)
    execution = send(tenant, marketing, recipient("ext@example.com", external=True))
    assert states(tenant, execution)["ext@example.com"]["profile_id"] is None
    path = path_of(sent_to(tenant, execution, "ext@example.com"))
    for _ in range(2):
        response = anonymous(tenant).post(path, headers=FORM, content=ONE_CLICK)
        assert response.status_code == 200
    [entry] = suppressions_of(tenant)
    assert entry == {
        **entry,
        "value": "ext@example.com",
        "channel": "email",
        "kind": "address",
        "type": "manual",
        "source": "unsubscribe",
    }
    # No profile is created for them, and nothing more goes to the address.
    assert tenant.client.get("/v1/profiles/email/ext@example.com").status_code == 404
    later = trigger(tenant, transactional, recipient("ext@example.com", external=True))
    drain(deliverer_for(tenant.runtime, ADAPTER))
    assert states(tenant, later)["ext@example.com"]["reason"] == "suppressed_address"


def test_an_existing_suppression_keeps_its_type(tenant: Tenant):
    marketing = live_campaign(tenant, category="marketing", content=MARKETING_CONTENT)
    execution = send(tenant, marketing, recipient("hb@example.com", external=True))
    path = path_of(sent_to(tenant, execution, "hb@example.com"))
    added = tenant.client.post(
        "/v1/suppressions", json={"value": "example.com", "type": "spam_complaint"}
    )
    assert added.status_code in (200, 201), added.text
    assert anonymous(tenant).post(path, content=ONE_CLICK).status_code == 200
    assert [(s["value"], s["type"]) for s in suppressions_of(tenant)] == [
        ("example.com", "spam_complaint")
    ]


def test_a_merged_profile_is_followed(tenant: Tenant):
    marketing = live_campaign(tenant, category="marketing", content=MARKETING_CONTENT)
    execution = send(tenant, marketing, recipient("old@example.com"))
    path = path_of(sent_to(tenant, execution, "old@example.com"))
    tenant.client.put("/v1/profiles/email/new@example.com", json={"consent": {"email": "in"}})
    merged = tenant.client.post(
        "/v1/profiles/merge",
        json={
            "into": {"namespace": "email", "id": "new@example.com"},
            "from": {"namespace": "email", "id": "old@example.com"},
        },
    )
    assert merged.status_code == 200, merged.text
    assert anonymous(tenant).post(path, content=ONE_CLICK).status_code == 200
    entry = consent(tenant, "new@example.com")
    assert (entry["status"], entry["source"]) == ("out", "one_click")


def test_an_erased_recipients_link_changes_nothing(tenant: Tenant):
    marketing = live_campaign(tenant, category="marketing", content=MARKETING_CONTENT)
    execution = send(tenant, marketing, recipient("gone@example.com"))
    path = path_of(sent_to(tenant, execution, "gone@example.com"))
    assert tenant.client.delete("/v1/profiles/email/gone@example.com").status_code == 204
    assert anonymous(tenant).post(path, content=ONE_CLICK).status_code == 200
    assert suppressions_of(tenant) == []
    assert tenant.client.get("/v1/profiles/email/gone@example.com").status_code == 404


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_bad_token_is_a_plain_404(tenant: Tenant, method: str):
    marketing = live_campaign(tenant, category="marketing", content=MARKETING_CONTENT)
    execution = send(tenant, marketing, recipient("ada@example.com"))
    path = path_of(sent_to(tenant, execution, "ada@example.com"))
    token = path.rsplit("/", 1)[1]
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    signer = UnsubscribeTokens(tenant.runtime.secret_key)
    row = states(tenant, execution)["ada@example.com"]
    unknown = signer.mint(tenant.workspace_id, row["id"][:-4] + "0000", Channel.EMAIL)
    wrong_channel = signer.mint(tenant.workspace_id, row["id"], Channel.SMS)
    client = anonymous(tenant)
    pages = set()
    forged = [flipped, "x", "a" * 67, "%00", token + "A"]
    # Signed, but naming no message of the workspace on that channel: only the POST looks the
    # message up (GET reads nothing, so scanners following links cost no query).
    unknowable = [unknown, wrong_channel] if method == "POST" else []
    for bad in forged + unknowable:
        response = client.request(method, f"/unsubscribe/{bad}", content=ONE_CLICK)
        assert response.status_code == 404, (bad, response.text)
        assert response.headers["content-type"].startswith("text/html")
        pages.add(response.text)
    # One page for every reason: it tells no one which messages exist.
    assert len(pages) == 1
    assert consent(tenant, "ada@example.com")["status"] == "unset"


def test_a_token_naming_another_workspace_does_not_reach_this_ones_message(
    tenant: Tenant, other_tenant: Tenant
):
    marketing = live_campaign(tenant, category="marketing", content=MARKETING_CONTENT)
    execution = send(tenant, marketing, recipient("ada@example.com"))
    message_id = states(tenant, execution)["ada@example.com"]["id"]
    forged = UnsubscribeTokens(tenant.runtime.secret_key).mint(
        other_tenant.workspace_id, message_id, Channel.EMAIL
    )
    response = anonymous(tenant).post(f"/unsubscribe/{forged}", content=ONE_CLICK)
    assert response.status_code == 404
    assert consent(tenant, "ada@example.com")["status"] == "unset"


def test_the_preview_link_is_harmless(tenant: Tenant):
    client = anonymous(tenant)
    with tenant.runtime.db.read() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one()
    for method in ("GET", "POST"):
        response = client.request(method, "/unsubscribe/preview", content=ONE_CLICK)
        assert response.status_code == 200
        assert "preview" in response.text
        assert "<form" not in response.text
    with tenant.runtime.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one() == before


def test_the_routes_need_no_api_key_and_appear_in_openapi(tenant: Tenant):
    spec = tenant.client.get("/openapi.json").json()
    assert set(spec["paths"]["/unsubscribe/{token}"]) == {"get", "post"}
    assert "/unsubscribe/preview" not in spec["paths"]
