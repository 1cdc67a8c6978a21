"""The console's workspace pages (profiles, audiences, rules, suppressions, channels, webhooks):
every page renders for a viewer, every changing route checks role and CSRF token on the
server, and a service's refusal shows beside its field instead of failing."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from html import unescape

import httpx
import orjson
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.integration.console_members import Members
from tests.integration.helpers import create_configuration
from tests.integration.test_console_auth import browser, sign_in
from tidings.clock import utcnow
from tidings.console import audiences, channels, profiles, rules, suppressions, webhooks
from tidings.ids import new_id
from tidings.webhooks.models import webhook_deliveries

pytestmark = pytest.mark.integration
SECTIONS = (
    profiles.router,
    audiences.router,
    rules.router,
    suppressions.router,
    channels.router,
    webhooks.router,
)
# POSTs of these pages that change nothing: any member with the CSRF token may use them.
READ_ONLY_POSTS = {"/audiences/estimate"}
EDITOR_ROUTES = {"/profiles/consent", "/profiles/imports", "/audiences/new", "/rules/new"}


@dataclass
class Signed:
    client: TestClient
    token: str

    def post(self, target: str, /, **data: str | list[str]) -> httpx.Response:
        return self.client.post(target, data={"csrf_token": self.token, **data})


def signed(tenant: Tenant, email: str) -> Signed:
    client = browser(tenant)
    return Signed(client, sign_in(client, email))


def text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


@dataclass
class World:
    """One of everything the pages show."""

    profile_email: str
    audience_id: str
    rule_set_id: str
    suppression_id: str
    configuration_id: str
    webhook_id: str
    delivery_id: str


@pytest.fixture
def world(tenant: Tenant) -> World:
    api = tenant.client
    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    put = api.put(
        f"/v1/profiles/email/{email}",
        json={"attributes": {"plan": "pro"}, "consent": {"email": "in"}},
    )
    assert put.status_code == 201, put.text
    audience = api.post("/v1/audiences", json={"name": "Pros", "rule": 'attributes.plan == "pro"'})
    assert audience.status_code == 201, audience.text
    rule_set = api.post(
        "/v1/rule-sets",
        json={"name": "Calm", "frequency_caps": [{"limit": 3, "period": "week"}]},
    )
    assert rule_set.status_code == 201, rule_set.text
    suppression = api.post("/v1/suppressions", json={"value": "gone@example.com"})
    assert suppression.status_code in (200, 201), suppression.text
    configuration = create_configuration(api, category="marketing")
    webhook = api.post(
        "/v1/webhooks", json={"url": "https://hooks.example.com/t", "event_types": ["sent"]}
    )
    assert webhook.status_code == 201, webhook.text
    now = utcnow()
    delivery_id = new_id()
    with tenant.runtime.db.write() as conn:
        conn.execute(
            webhook_deliveries.insert().values(
                id=delivery_id,
                workspace_id=tenant.workspace_id,
                endpoint_id=webhook.json()["id"],
                event_id=new_id(),
                event_type="sent",
                message_id=None,
                payload=orjson.dumps({"type": "message.sent"}).decode(),
                state="failed",
                attempts=3,
                next_attempt_at=now,
                last_status=500,
                last_error="HTTP 500",
                created_at=now,
                updated_at=now,
            )
        )
    return World(
        profile_email=email,
        audience_id=audience.json()["id"],
        rule_set_id=rule_set.json()["id"],
        suppression_id=suppression.json()["suppression"]["id"],
        configuration_id=configuration["id"],
        webhook_id=webhook.json()["id"],
        delivery_id=delivery_id,
    )


def _concrete(path: str, world: World) -> str:
    ids = {
        "audience_id": world.audience_id,
        "rule_set_id": world.rule_set_id,
        "suppression_id": world.suppression_id,
        "configuration_id": world.configuration_id,
        "webhook_id": world.webhook_id,
        "delivery_id": world.delivery_id,
        "import_id": "none",
    }
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


def _routes(method: str) -> list[str]:
    return sorted(
        {
            route.path
            for section in SECTIONS
            for route in section.routes
            if isinstance(route, APIRoute) and method in route.methods
        }
    )


def test_every_page_renders_for_a_viewer_with_what_it_lists(
    tenant: Tenant, members: Members, world: World
):
    viewer = signed(tenant, members.viewer)
    expected = {
        "/profiles": world.profile_email,
        f"/profiles/show?namespace=email&id={world.profile_email}": "unset",
        "/profiles/imports": "Import profiles",
        "/audiences": "Pros",
        "/audiences/new": "New rule audience",
        f"/audiences/{world.audience_id}": "1 profile",
        "/rules": "3 per week",
        "/rules/new": "Frequency caps",
        f"/rules/{world.rule_set_id}": "Calm",
        "/suppressions": "gone@example.com",
        "/channels": "news@example.com",
        "/channels/new?channel=sms": "from number",
        f"/channels/{world.configuration_id}": "from address",
        "/webhooks": "hooks.example.com",
        f"/webhooks/{world.webhook_id}": "HTTP 500",
        f"/webhooks/{world.webhook_id}/deliveries/{world.delivery_id}": "message.sent",
    }
    for url, shown in expected.items():
        page = viewer.client.get(url)
        assert page.status_code == 200, (url, page.text)
        assert shown in text(page.text), (url, shown)
        assert "Content-Security-Policy" in page.headers
    # Every GET page of these sections was visited (JSON aside: an import's status, the
    # profile picker's suggestions, tested in test_console_profile_picker).
    visited = {re.sub(r"\?.*", "", url) for url in expected}
    for path in _routes("GET"):
        if path.endswith(("/status", "/suggestions")) or "{import_id}" in path:
            continue
        assert _concrete(path, world) in visited, path


def test_every_changing_route_refuses_a_viewer_and_a_missing_csrf_token(
    tenant: Tenant, members: Members, world: World
):
    before = {
        path: tenant.client.get(path).json()
        for path in ("/v1/audiences", "/v1/rule-sets", "/v1/suppressions", "/v1/webhooks")
    }
    viewer = signed(tenant, members.viewer)
    admin = signed(tenant, members.admin)
    posts = [path for path in _routes("POST") if path not in READ_ONLY_POSTS]
    assert len(posts) >= 15
    fields = {"name": "changed", "value": "x@example.com", "url": "https://changed.example.com"}
    for path in posts:
        url = _concrete(path, world)
        refused = viewer.post(url, **fields, confirm=world.profile_email)
        assert refused.status_code == 403, (url, refused.status_code)
        # An admin without the token is refused too.
        forged = admin.client.post(url, data=fields)
        assert forged.status_code == 403, (url, forged.status_code)
    after = {path: tenant.client.get(path).json() for path in before}
    assert after == before
    profile = tenant.client.get(f"/v1/profiles/email/{world.profile_email}")
    assert profile.status_code == 200


def test_editors_change_profiles_audiences_rules_and_suppressions_but_not_channels(
    tenant: Tenant, members: Members, world: World
):
    editor = signed(tenant, members.editor)
    consent = editor.post(
        "/profiles/consent",
        namespace="email",
        id=world.profile_email,
        channel="email",
        status="out",
    )
    assert consent.status_code == 200
    stored = tenant.client.get(f"/v1/profiles/email/{world.profile_email}").json()
    assert stored["consent"]["email"]["status"] == "out"
    assert stored["consent"]["email"]["source"] == "console"
    page = editor.client.get(f"/profiles/show?namespace=email&id={world.profile_email}")
    assert "console" in text(page.text)

    created = editor.post("/audiences/new", name="Frugal", rule='attributes.plan == "free"')
    assert created.status_code == 303
    names = [a["name"] for a in tenant.client.get("/v1/audiences").json()["items"]]
    assert "Frugal" in names

    added = editor.post("/suppressions", channel="email", value="example.org", reason="closed")
    assert added.status_code == 201
    listed = tenant.client.get("/v1/suppressions", params={"prefix": "example.org"}).json()
    assert [(s["kind"], s["source"], s["reason"]) for s in listed["items"]] == [
        ("domain", "console", "closed")
    ]
    removed = editor.post(f"/suppressions/{world.suppression_id}/remove")
    assert removed.status_code == 303
    assert tenant.client.get(f"/v1/suppressions/{world.suppression_id}").status_code == 404

    # Channels, webhooks and erasure are an admin's.
    for url in (f"/channels/{world.configuration_id}", "/webhooks", "/profiles/erase"):
        refused = editor.post(url, name="x", url="https://x.example.com")
        assert refused.status_code == 403, url


def test_a_rule_error_shows_beside_the_rule_with_its_line_and_column(
    tenant: Tenant, members: Members
):
    editor = signed(tenant, members.editor)
    refused = editor.post(
        "/audiences/new", name="Broken", rule='attributes.plan == "pro"\nand consent.email = "in"'
    )
    assert refused.status_code == 422
    html = refused.text
    note = re.search(r'<p class="field-error" id="error-rule"[^>]*>([^<]+)</p>', html)
    assert note and "line 2, column 19" in note.group(1), html
    assert 'aria-invalid="true"' in html and "Broken" in html
    assert tenant.client.get("/v1/audiences").json()["items"] == []

    estimate = editor.client.post(
        "/audiences/estimate",
        json={"rule": "consent.email = "},
        headers={"X-CSRF-Token": editor.token},
    )
    assert estimate.status_code == 422
    assert estimate.json()["errors"][0]["column"] == 15
    tenant.client.put("/v1/profiles/email/b@example.com", json={"attributes": {"plan": "pro"}})
    counted = editor.client.post(
        "/audiences/estimate",
        json={"rule": 'attributes.plan == "pro"'},
        headers={"X-CSRF-Token": editor.token},
    )
    assert counted.status_code == 200 and counted.json() == {"count": 1, "exact": True}
    no_token = editor.client.post("/audiences/estimate", json={"rule": "locale exists"})
    assert no_token.status_code == 403


def test_rule_sets_are_written_as_caps_and_lines_and_errors_name_the_line(
    tenant: Tenant, members: Members
):
    editor = signed(tenant, members.editor)
    form = {
        "name": "Evenings",
        "caps.0.limit": "2",
        "caps.0.period": "day",
        "caps.0.every": "1",
        "caps.0.channels": ["email", "sms"],
        "caps.1.limit": "",
        "caps.1.period": "day",
        "caps.1.every": "1",
        "quiet": "on",
        "timezone": "Europe/Paris",
        "action": "discard",
        "quiet_channels": ["email"],
        "windows": "mon,tue 21:00-08:00\nevery day 12:00-13:00",
        "dates": "2026-12-25",
    }
    created = editor.post("/rules/new", **form)
    assert created.status_code == 303, created.text
    stored = tenant.client.get("/v1/rule-sets").json()["items"][0]
    assert stored["frequency_caps"] == [
        {"channels": ["email", "sms"], "limit": 2, "period": "day", "every": 1}
    ]
    quiet = stored["quiet_hours"]
    assert (quiet["timezone"], quiet["action"], quiet["channels"]) == (
        "Europe/Paris",
        "discard",
        ["email"],
    )
    assert [w["days"] for w in quiet["windows"]] == [
        ["mon", "tue"],
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    ]
    # The page shows it back as it was written.
    page = editor.client.get(created.headers["location"])
    assert "mon,tue 21:00-08:00" in page.text and "every day 12:00-13:00" in page.text

    bad = editor.post(
        f"/rules/{stored['id']}",
        **{**form, "windows": "mon 21:00-08:00\nfunday 10:00-11:00", "timezone": "Mars/Olympus"},
    )
    assert bad.status_code == 422
    assert "line 2: &#39;funday&#39; is not a day" in bad.text
    wrong_limit = editor.post(f"/rules/{stored['id']}", **{**form, "caps.0.limit": "0"})
    assert wrong_limit.status_code == 422
    assert re.search(
        r'id="error-caps-0-limit"[^>]*>[^<]*greater than or equal to 1', wrong_limit.text
    )
    wrong_zone = editor.post(f"/rules/{stored['id']}", **{**form, "timezone": "Mars/Olympus"})
    assert wrong_zone.status_code == 422
    assert "Mars/Olympus" in text(wrong_zone.text)
    again = tenant.client.get(f"/v1/rule-sets/{stored['id']}").json()
    assert again["quiet_hours"]["timezone"] == "Europe/Paris"


def test_channel_secrets_are_write_only_and_kept_when_left_empty(tenant: Tenant, members: Members):
    admin = signed(tenant, members.admin)
    created = admin.post(
        "/channels/new",
        channel="sms",
        name="Texts",
        category="transactional",
        **{
            "sms.provider": "twilio",
            "sms.from_number": "+14155550100",
            "sms.account_sid": "AC123",
            "sms.auth_token": "very-secret-token",
            "sms.http_method": "POST",
            "sms.id_path": "sid",
        },
    )
    assert created.status_code == 303, created.text
    location = created.headers["location"]
    page = admin.client.get(location)
    assert "very-secret-token" not in page.text and "a value is stored" in page.text
    # Saved again with the secret left empty: the stored one stays.
    saved = admin.post(
        location.split("?")[0],
        name="Texts renamed",
        category="transactional",
        **{
            "sms.provider": "twilio",
            "sms.from_number": "+14155550100",
            "sms.account_sid": "AC123",
            "sms.http_method": "POST",
            "sms.id_path": "sid",
        },
    )
    assert saved.status_code == 303, saved.text
    configuration_id = location.split("/")[2].split("?")[0]
    stored = tenant.client.get(f"/v1/channel-configurations/{configuration_id}").json()
    assert stored["name"] == "Texts renamed" and stored["secrets_set"] == ["auth_token"]
    # A setting the schema refuses shows beside its input.
    refused = admin.post(
        "/channels/new",
        channel="email",
        name="Bad",
        category="marketing",
        **{"email.from_address": "not an address", "email.headers": "{not json"},
    )
    assert refused.status_code == 422
    assert 'id="error-email-headers"' in refused.text
    refused = admin.post(
        "/channels/new",
        channel="email",
        name="Bad",
        category="marketing",
        **{"email.from_address": "not an address"},
    )
    assert refused.status_code == 422
    assert 'id="error-email-from_address"' in refused.text


def test_webhooks_show_the_secret_once_and_replay_a_delivery(
    tenant: Tenant, members: Members, world: World
):
    admin = signed(tenant, members.admin)
    created = admin.post(
        "/webhooks", url="https://receiver.example.com/in", event_types=["bounced", "sent"]
    )
    assert created.status_code == 201
    secret = re.search(r'<pre id="new-secret"[^>]*>([^<]+)</pre>', created.text)
    assert secret and secret.group(1).startswith("whsec_")
    listed = tenant.client.get("/v1/webhooks").json()["items"]
    new = next(w for w in listed if w["url"] == "https://receiver.example.com/in")
    assert new["event_types"] == ["bounced", "sent"] and new["enabled"] is False
    page = admin.client.get(f"/webhooks/{new['id']}")
    assert secret.group(1) not in page.text

    refused = admin.post("/webhooks", url="http://10.0.0.1/in", event_types=["sent"])
    assert refused.status_code == 422
    assert 'id="error-url"' in refused.text
    none_chosen = admin.post("/webhooks", url="https://receiver.example.com/2")
    assert none_chosen.status_code == 422
    assert 'id="error-event_types"' in none_chosen.text

    edited = admin.post(
        f"/webhooks/{world.webhook_id}",
        url="https://hooks.example.com/t",
        event_types=["delivered"],
        enabled="on",
    )
    assert edited.status_code == 303
    hook = tenant.client.get(f"/v1/webhooks/{world.webhook_id}").json()
    assert hook["event_types"] == ["delivered"]

    replayed = admin.post(f"/webhooks/{world.webhook_id}/deliveries/{world.delivery_id}/replay")
    assert replayed.status_code == 202
    deliveries = tenant.client.get(f"/v1/webhooks/{world.webhook_id}/deliveries").json()["items"]
    assert [d["replay_of"] for d in deliveries].count(world.delivery_id) == 1

    rotated = admin.post(f"/webhooks/{world.webhook_id}/rotate-secret")
    assert rotated.status_code == 200
    assert "whsec_" in rotated.text
    assert "previous secret also signs" in text(rotated.text)


def test_a_csv_import_reports_its_progress_until_done(tenant: Tenant, members: Members):
    editor = signed(tenant, members.editor)
    rows = "".join(f"user{n}@example.com,in,City {n}\n" for n in range(1200))
    body = "email,consent:email,address.city\n" + rows + "not-an-address,in,Nowhere\n"
    started = editor.client.post(
        "/profiles/imports",
        data={"csrf_token": editor.token, "format": ""},
        files={"file": ("people.csv", body.encode(), "text/csv")},
    )
    assert started.status_code == 303, started.text
    page_url = started.headers["location"]
    status = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = editor.client.get(page_url + "/status").json()
        if status["state"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert status["state"] == "succeeded", status
    assert status["report"]["created"] == 1200 and status["report"]["rejected_total"] == 1
    assert status["percent"] == 100 and status["bytes_read"] == len(body.encode())
    page = editor.client.get(page_url)
    assert "not a valid email address" in page.text and "refresh" not in page.text
    stored = tenant.client.get("/v1/profiles/email/user7@example.com").json()
    assert stored["attributes"] == {"address": {"city": "City 7"}}
    assert stored["consent"]["email"]["source"] == "import"

    bad_header = editor.client.post(
        "/profiles/imports",
        data={"csrf_token": editor.token},
        files={"file": ("bad.csv", b"email,email\na@example.com,b@example.com\n", "text/csv")},
    )
    failed_url = bad_header.headers["location"]
    deadline = time.monotonic() + 30
    while editor.client.get(failed_url + "/status").json()["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    failed = editor.client.get(failed_url)
    assert "header" in failed.text and "column" in failed.text
    no_file = editor.post("/profiles/imports")
    assert no_file.status_code == 422


def test_an_admin_erases_a_profile_only_once_it_is_confirmed(
    tenant: Tenant, members: Members, world: World
):
    admin = signed(tenant, members.admin)
    unconfirmed = admin.post(
        "/profiles/erase", namespace="email", id=world.profile_email, confirm="yes"
    )
    assert unconfirmed.status_code == 422
    assert 'id="error-confirm"' in unconfirmed.text
    assert tenant.client.get(f"/v1/profiles/email/{world.profile_email}").status_code == 200
    erased = admin.post(
        "/profiles/erase", namespace="email", id=world.profile_email, confirm=world.profile_email
    )
    assert erased.status_code == 200 and "erased" in erased.text
    assert tenant.client.get(f"/v1/profiles/email/{world.profile_email}").status_code == 404
    gone = admin.client.get(f"/profiles/show?namespace=email&id={world.profile_email}")
    assert gone.status_code == 404


def test_profile_search_finds_by_the_start_of_any_identity(tenant: Tenant, members: Members):
    api = tenant.client
    api.put(
        "/v1/profiles/email/grace@example.com",
        json={"identities": [{"namespace": "crm_id", "id": "C-77"}]},
    )
    api.put("/v1/profiles/email/alan@example.com", json={})
    viewer = signed(tenant, members.viewer)
    for query, found, missing in (
        ("Grace@", "grace@example.com", "alan@"),
        ("crm_id:C-7", "grace@example.com", "alan@"),
        ("C-77", "grace@example.com", "alan@"),
        ("alan", "alan@example.com", "grace@"),
    ):
        page = viewer.client.get("/profiles", params={"q": query})
        assert page.status_code == 200
        assert found in page.text and missing not in page.text, query
