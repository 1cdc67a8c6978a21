"""Console campaign pages with a real database: the steps through forms, the preview's JSON
for each channel, review and activation, the campaign page's curl and report."""

from __future__ import annotations

import json
import re
import shlex
import uuid

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.integration.helpers import create_configuration
from tests.integration.test_console_auth import PASSWORD, browser, sign_in
from tests.integration.test_delivery import RecordingAdapter, deliverer_for, drain
from tidings.clock import utcnow
from tidings.users import service as users
from tidings.users.schemas import Role

pytestmark = pytest.mark.integration


@pytest.fixture
def editor(tenant: Tenant) -> tuple[TestClient, str]:
    email = f"editor-{uuid.uuid4().hex[:8]}@example.com"
    users.create_user(
        tenant.runtime.db, email, PASSWORD, tenant.workspace_id, Role.EDITOR, utcnow()
    )
    client = browser(tenant)
    return client, sign_in(client, email)


def _new(client: TestClient, token: str, category: str = "transactional", name: str = "C") -> str:
    response = client.post(
        "/campaigns/new",
        data={"csrf_token": token, "name": name, "category": category, "tags": "a, b"},
    )
    assert response.status_code == 303, response.text
    match = re.match(r"/campaigns/([^/]+)/steps/2", response.headers["location"])
    assert match
    return match.group(1)


def _step(client: TestClient, token: str, campaign_id: str, step: int, **fields: str):
    return client.post(
        f"/campaigns/{campaign_id}/steps/{step}", data={"csrf_token": token, **fields}
    )


def _preview(client: TestClient, token: str, campaign_id: str, **body: object) -> dict:
    response = client.post(
        f"/campaigns/{campaign_id}/preview", json=body, headers={"X-CSRF-Token": token}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_steps_save_a_transactional_email_campaign_that_activates(
    tenant: Tenant, editor: tuple[TestClient, str]
):
    client, token = editor
    configuration = create_configuration(tenant.client, category="transactional")
    campaign_id = _new(client, token)
    step2 = client.get(f"/campaigns/{campaign_id}/steps/2")
    assert configuration["id"] in step2.text
    assert (
        _step(
            client,
            token,
            campaign_id,
            2,
            channel="email",
            channel_configuration_id=configuration["id"],
        )
        .headers["location"]
        .endswith("/steps/3")
    )
    saved = _step(
        client,
        token,
        campaign_id,
        3,
        subject="Order {{ context.order.id }} for {{ profile.firstName }}",
        html="<p>Hi {{ profile.firstName }}</p>",
        text="",
    )
    assert saved.status_code == 303
    # The content step starts its sample data from the variables the content reads.
    page = client.get(f"/campaigns/{campaign_id}/steps/3").text
    assert "profile.firstName" in page and "context.order.id" in page
    assert _step(
        client, token, campaign_id, 4, identity_namespace="email", create_new_profiles="on"
    )
    assert _step(client, token, campaign_id, 5, rate_per_second="25").status_code == 303
    stored = tenant.client.get(f"/v1/campaigns/{campaign_id}").json()
    assert stored["tags"] == ["a", "b"]
    assert stored["channel_configuration_id"] == configuration["id"]
    assert stored["content"]["subject"].startswith("Order {{ context.order.id }}")
    assert "text" not in stored["content"]
    assert stored["audience"]["create_new_profiles"] is True
    assert stored["schedule"]["rate_per_second"] == 25
    review = client.get(f"/campaigns/{campaign_id}/steps/6")
    assert 'id="review-ready"' in review.text
    activated = client.post(f"/campaigns/{campaign_id}/activate", data={"csrf_token": token})
    assert activated.status_code == 303
    page = client.get(f"/campaigns/{campaign_id}")
    assert tenant.client.get(f"/v1/campaigns/{campaign_id}").json()["status"] == "live"
    native = re.search(r'<pre id="curl-native" tabindex="0">(.*?)</pre>', page.text, re.S)
    assert native
    words = shlex.split(
        native.group(1).replace("&#39;", "'").replace("&#34;", '"').replace("\\\n", " ")
    )
    body = json.loads(words[words.index("-d") + 1])
    # Run what the page shows (through the API client: same body, same route).
    triggered = tenant.client.post(words[4].removeprefix("https://tidings.test"), json=body)
    assert triggered.status_code == 202, triggered.text
    adapter = RecordingAdapter()
    drain(deliverer_for(tenant.runtime, adapter))
    assert [m.content["subject"] for m in adapter.sent] == [
        "Order context.order.id for profile.firstName"
    ]
    page = client.get(f"/campaigns/{campaign_id}")
    assert re.search(r'id="count-total">1<', page.text), page.text
    assert re.search(r'id="count-sent">1<', page.text), page.text
    assert "someone@example.com" in page.text


def test_a_step_with_invalid_input_is_shown_again_with_the_field_named(
    tenant: Tenant, editor: tuple[TestClient, str]
):
    client, token = editor
    refused = client.post("/campaigns/new", data={"csrf_token": token, "name": "", "category": "x"})
    assert refused.status_code == 422 and "category" in refused.text
    campaign_id = _new(client, token)
    schedule = _step(client, token, campaign_id, 5, rate_per_second="0")
    assert schedule.status_code == 422 and "schedule.rate_per_second" in schedule.text
    blocked = client.post(f"/campaigns/{campaign_id}/activate", data={"csrf_token": token})
    assert blocked.status_code == 422
    assert "review error" in blocked.text and "content" in blocked.text


def test_preview_shows_template_errors_with_line_and_column_and_the_variables(
    tenant: Tenant, editor: tuple[TestClient, str]
):
    client, token = editor
    campaign_id = _new(client, token)
    saved = client.post(
        f"/campaigns/{campaign_id}/content",
        json={"content": {"subject": "Hi {{ profile.name }}", "html": "<p>\n{{ context.x </p>"}},
        headers={"X-CSRF-Token": token},
    )
    assert saved.status_code == 200
    broken = _preview(client, token, campaign_id, context="{}")
    assert broken["content"] is None
    (error,) = [e for e in broken["errors"] if e["field"] == "content.html"]
    assert error["line"] == 2 and error["column"] > 1
    client.post(
        f"/campaigns/{campaign_id}/content",
        json={"content": {"subject": "Hi {{ profile.name }}", "html": "<p>{{ context.x }}</p>"}},
        headers={"X-CSRF-Token": token},
    )
    fixed = _preview(client, token, campaign_id, profile='{"name": "Ada"}', context='{"x": "<b>"}')
    assert fixed["errors"] == []
    assert fixed["content"]["subject"] == "Hi Ada"
    assert fixed["content"]["html"] == "<p>&lt;b&gt;</p>"
    assert fixed["variables"] == {"profile": ["name"], "context": ["x"]}
    bad_json = _preview(client, token, campaign_id, context='{"x": ')
    assert [e["field"] for e in bad_json["errors"]] == ["context"]


def test_sms_preview_counts_segments_and_push_preview_renders_the_notification(
    tenant: Tenant, editor: tuple[TestClient, str]
):
    client, token = editor
    sms = _new(client, token, name="sms")
    _step(client, token, sms, 2, channel="sms")
    _step(client, token, sms, 3, body="Code {{ context.code }} " + "x" * 160)
    answer = _preview(client, token, sms, context='{"code": "1234"}')
    assert answer["content"]["body"].startswith("Code 1234")
    assert answer["sms"]["segments"] == 2 and answer["sms"]["encoding"] == "gsm7"
    push = _new(client, token, name="push")
    _step(client, token, push, 2, channel="push")
    _step(client, token, push, 3, title="Hi {{ profile.n }}", body="{{ context.m }}", deeplink="")
    answer = _preview(client, token, push, profile='{"n": "Ada"}', context='{"m": "Shipped"}')
    assert answer["content"]["title"] == "Hi Ada" and answer["content"]["body"] == "Shipped"


def test_the_list_filters_by_status_category_tag_and_name(
    tenant: Tenant, editor: tuple[TestClient, str]
):
    client, token = editor
    _new(client, token, name="Receipt alpha")
    _new(client, token, category="marketing", name="Newsletter beta")
    assert "Newsletter beta" not in client.get("/campaigns?category=transactional").text
    found = client.get("/campaigns?q=alpha").text
    assert "Receipt alpha" in found and "Newsletter beta" not in found
    assert "Receipt alpha" in client.get("/campaigns?tag=a&status=draft").text
    assert "Receipt alpha" not in client.get("/campaigns?status=live").text


def test_the_campaign_page_stops_duplicates_and_sends_a_proof(
    tenant: Tenant, editor: tuple[TestClient, str]
):
    client, token = editor
    configuration = create_configuration(tenant.client, category="transactional")
    campaign_id = _new(client, token)
    _step(
        client, token, campaign_id, 2, channel="email", channel_configuration_id=configuration["id"]
    )
    _step(client, token, campaign_id, 3, subject="S {{ profile.a }}", html="<p>x</p>")
    proof = client.post(
        f"/campaigns/{campaign_id}/proofs",
        data={"csrf_token": token, "to": "qa@example.com", "profile": '{"a": 1}', "context": "{}"},
    )
    assert proof.status_code == 200 and "Proof queued to qa@example.com" in proof.text
    assert "qa@example.com" in proof.text.split('id="latest-messages"')[1]
    adapter = RecordingAdapter()
    drain(deliverer_for(tenant.runtime, adapter))
    assert [(m.to, m.content["subject"]) for m in adapter.sent] == [
        ("qa@example.com", "[Proof] S 1")
    ]
    client.post(f"/campaigns/{campaign_id}/activate", data={"csrf_token": token})
    duplicate = client.post(f"/campaigns/{campaign_id}/duplicate", data={"csrf_token": token})
    assert duplicate.status_code == 303 and campaign_id not in duplicate.headers["location"]
    stop = client.post(f"/campaigns/{campaign_id}/stop", data={"csrf_token": token})
    assert stop.status_code == 303
    assert tenant.client.get(f"/v1/campaigns/{campaign_id}").json()["status"] == "stopped"
    again = client.post(f"/campaigns/{campaign_id}/stop", data={"csrf_token": token})
    assert again.status_code == 409 and "cannot stop" in again.text
