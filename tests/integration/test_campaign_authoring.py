"""Steps 1-6 through the API: author step by step, review, activate, preview, refuse broken."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Tenant, problem_fields
from tests.integration.helpers import (
    MARKETING_HTML,
    create_configuration,
    create_ready_campaign,
    email_campaign_body,
)

pytestmark = pytest.mark.integration


def test_campaign_authored_step_by_step_passes_review_activates_and_previews(tenant: Tenant):
    client = tenant.client
    # Step 1: properties only.
    created = client.post(
        "/v1/campaigns",
        json={"name": "Order update", "category": "marketing", "channel": "email"},
    )
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert campaign["status"] == "draft"
    assert campaign["version"]["number"] == 1
    campaign_id = campaign["id"]

    review = client.get(f"/v1/campaigns/{campaign_id}/review").json()
    assert review["ready"] is False
    assert {"channel_configuration_id", "content"} <= {e["field"] for e in review["errors"]}

    # Step 2: action and channel configuration.
    configuration = create_configuration(client)
    step = client.patch(
        f"/v1/campaigns/{campaign_id}", json={"channel_configuration_id": configuration["id"]}
    )
    assert step.status_code == 200, step.text
    # Step 3: content, subject first and the body later: content merges key by key.
    client.patch(
        f"/v1/campaigns/{campaign_id}", json={"content": {"subject": "Hi {{ profile.firstName }}"}}
    )
    step = client.patch(f"/v1/campaigns/{campaign_id}", json={"content": {"html": MARKETING_HTML}})
    assert step.json()["content"] == {
        "subject": "Hi {{ profile.firstName }}",
        "html": MARKETING_HTML,
    }
    # Steps 4 and 5: audience and schedule.
    end_at = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    client.patch(
        f"/v1/campaigns/{campaign_id}",
        json={
            "audience": {"identity_namespace": "email"},
            "schedule": {"end_at": end_at, "rate_per_second": 50},
        },
    )

    # Step 6: review and activate.
    review = client.get(f"/v1/campaigns/{campaign_id}/review").json()
    assert review["errors"] == [], review
    assert review["ready"] is True
    assert review["variables"] == {
        "profile": ["firstName"],
        "context": ["order.id", "order.items"],
    }
    # No profile of this workspace has firstName yet: a warning, not an error.
    assert any("profile.firstName" in w["message"] for w in review["warnings"])

    activated = client.post(f"/v1/campaigns/{campaign_id}/activate")
    assert activated.status_code == 200, activated.text
    assert activated.json()["status"] == "live"
    assert activated.json()["live_version"] == 1

    preview = client.post(
        f"/v1/campaigns/{campaign_id}/preview",
        json={
            "profile": {"firstName": "Ada"},
            "context": {"order": {"id": "A-1", "items": [{"name": "Tea <green>", "qty": 2}]}},
        },
    )
    assert preview.status_code == 200, preview.text
    rendered = preview.json()["content"]
    assert rendered["subject"] == "Hi Ada"
    assert "<h1>Hello Ada</h1>" in rendered["html"]
    assert "Your order A-1 ships soon." in rendered["html"]
    # HTML bodies escape context values; the unsubscribe link is a real URL.
    assert "Tea &lt;green&gt; x2" in rendered["html"]
    assert 'href="https://tidings.test/unsubscribe/preview"' in rendered["html"]


def test_broken_template_refuses_activation_with_line_and_column(tenant: Tenant):
    campaign = create_ready_campaign(
        tenant.client,
        content={
            "subject": "Hi",
            "html": "<p>ok</p>\n<p>{{ profile.name </p>{{ unsubscribe_url }}",
        },
    )
    response = tenant.client.post(f"/v1/campaigns/{campaign['id']}/activate")
    assert response.status_code == 422
    assert "content.html" in problem_fields(response)
    error = next(e for e in response.json()["errors"] if e["field"] == "content.html")
    assert error["line"] == 2
    assert error["column"] >= 1
    assert tenant.client.get(f"/v1/campaigns/{campaign['id']}").json()["status"] == "draft"


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        pytest.param(
            {"content": {"subject": "Hi", "html": "<p>no way out</p>"}},
            "content.html",
            "unsubscribe_url",
            id="marketing-email-without-unsubscribe",
        ),
        pytest.param(
            {"content": {"subject": "{{ profile.name | shout }}", "html": "{{ unsubscribe_url }}"}},
            "content.subject",
            "shout",
            id="unknown-filter",
        ),
        pytest.param(
            {"content": {"subject": "{{ firstName }}", "html": "{{ unsubscribe_url }}"}},
            "content.subject",
            "unknown variable",
            id="variable-outside-profile-and-context",
        ),
        pytest.param(
            {"content": {"html": "{{ unsubscribe_url }}"}},
            "content.subject",
            "required",
            id="missing-subject",
        ),
        pytest.param(
            {
                "schedule": {
                    "start_at": "2031-01-02T00:00:00Z",
                    "end_at": "2031-01-01T00:00:00Z",
                }
            },
            "schedule.end_at",
            "after",
            id="end-before-start",
        ),
        pytest.param(
            {"channel_configuration_id": None},
            "channel_configuration_id",
            "choose",
            id="no-configuration",
        ),
    ],
)
def test_review_errors_name_the_field(tenant: Tenant, overrides, field, fragment):
    campaign = create_ready_campaign(tenant.client, **overrides)
    review = tenant.client.get(f"/v1/campaigns/{campaign['id']}/review").json()
    assert review["ready"] is False
    messages = [e["message"] for e in review["errors"] if e["field"] == field]
    assert messages, review
    assert any(fragment in message for message in messages), messages


def test_category_mismatch_between_campaign_and_configuration(tenant: Tenant):
    configuration = create_configuration(tenant.client, category="transactional")
    campaign = tenant.client.post(
        "/v1/campaigns", json=email_campaign_body(configuration["id"])
    ).json()
    review = tenant.client.get(f"/v1/campaigns/{campaign['id']}/review").json()
    assert any(
        e["field"] == "channel_configuration_id" and "category mismatch" in e["message"]
        for e in review["errors"]
    )


def test_transactional_email_needs_no_unsubscribe_link(tenant: Tenant):
    configuration = create_configuration(tenant.client, category="transactional")
    body = email_campaign_body(
        configuration["id"],
        category="transactional",
        content={
            "subject": "Reset your password",
            "html": "<a href='{{ context.link }}'>Reset</a>",
        },
    )
    campaign = tenant.client.post("/v1/campaigns", json=body).json()
    review = tenant.client.get(f"/v1/campaigns/{campaign['id']}/review").json()
    assert review["errors"] == []


def test_warning_disappears_once_a_profile_has_the_attribute(tenant: Tenant):
    campaign = create_ready_campaign(tenant.client)
    before = tenant.client.get(f"/v1/campaigns/{campaign['id']}/review").json()
    assert any("profile.firstName" in w["message"] for w in before["warnings"])
    tenant.client.put(
        "/v1/profiles/email/ada@example.com", json={"attributes": {"firstName": "Ada"}}
    )
    after = tenant.client.get(f"/v1/campaigns/{campaign['id']}/review").json()
    assert not any("profile.firstName" in w["message"] for w in after["warnings"])


def test_preview_with_a_stored_profile_and_a_rendering_error(tenant: Tenant):
    client = tenant.client
    client.put(
        "/v1/profiles/email/grace@example.com",
        json={"attributes": {"firstName": "Grace"}},
    )
    campaign = create_ready_campaign(client)
    ok = client.post(
        f"/v1/campaigns/{campaign['id']}/preview",
        json={
            "identity": {"namespace": "email", "id": "Grace@Example.com"},
            "context": {"order": {"id": 7}},
        },
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["content"]["subject"] == "Grace, your order 7"

    unknown = client.post(
        f"/v1/campaigns/{campaign['id']}/preview",
        json={"identity": {"namespace": "email", "id": "nobody@example.com"}},
    )
    assert unknown.status_code == 422
    assert problem_fields(unknown) == ["identity"]

    client.patch(
        f"/v1/campaigns/{campaign['id']}",
        json={"content": {"subject": "{{ context.total / context.count }}"}},
    )
    failing = client.post(
        f"/v1/campaigns/{campaign['id']}/preview", json={"context": {"total": 1, "count": 0}}
    )
    assert failing.status_code == 422
    assert problem_fields(failing) == ["content.subject"]


def test_subject_and_sms_are_not_html_escaped(tenant: Tenant):
    client = tenant.client
    campaign = create_ready_campaign(client)
    preview = client.post(
        f"/v1/campaigns/{campaign['id']}/preview",
        json={"profile": {"firstName": "Tom & Jerry"}, "context": {"order": {"id": "<1>"}}},
    ).json()["content"]
    assert preview["subject"] == "Tom & Jerry, your order <1>"
    assert "Hello Tom &amp; Jerry" in preview["html"]

    configuration = create_configuration(client, channel="sms", category="transactional")
    sms = client.post(
        "/v1/campaigns",
        json={
            "name": "Code",
            "category": "transactional",
            "channel": "sms",
            "channel_configuration_id": configuration["id"],
            "content": {"body": "Code for {{ profile.name }}: {{ context.code }}"},
        },
    ).json()
    assert sms["audience"]["identity_namespace"] == "phone"
    rendered = client.post(
        f"/v1/campaigns/{sms['id']}/preview",
        json={"profile": {"name": "A&B"}, "context": {"code": "<42>"}},
    ).json()["content"]
    assert rendered == {"body": "Code for A&B: <42>", "media_urls": None}


def test_hostile_template_ends_in_a_rendering_error(tenant: Tenant):
    bomb = "{% for a in range(1000) %}{% for b in range(1000) %}{{ a }}{% endfor %}{% endfor %}"
    campaign = create_ready_campaign(
        tenant.client, content={"subject": "x", "html": bomb + "{{ unsubscribe_url }}"}
    )
    review = tenant.client.get(f"/v1/campaigns/{campaign['id']}/review").json()
    assert any(e["field"] == "content.html" for e in review["errors"]), review
    preview = tenant.client.post(f"/v1/campaigns/{campaign['id']}/preview", json={})
    assert preview.status_code == 422
    assert problem_fields(preview) == ["content.html"]
