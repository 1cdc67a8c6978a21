"""Every input limit, one table: over it, a clear problem+json naming the field, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Tenant, problem_fields
from tests.integration.test_delivery import RecordingAdapter, deliverer_for, drain, states, trigger
from tests.integration.test_executions import live_campaign, recipient
from tidings.config import Settings
from tidings.content.schemas import MAX_CONTEXT_BYTES, MAX_TEXT
from tidings.executions.schemas import MAX_UNITARY_RECIPIENTS
from tidings.json_data import MAX_CONTEXT_DEPTH
from tidings.profiles import imports
from tidings.profiles.schemas import MAX_ATTRIBUTE_DEPTH

pytestmark = pytest.mark.integration

DEFAULTS = Settings()


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@dataclass(frozen=True)
class Limit:
    """A request just over one limit, and what the answer must say."""

    method: str
    path: str
    body: Callable[[dict[str, Any]], dict[str, Any] | bytes]
    status: int
    field: str


def execution(campaign: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"campaign_id": campaign["id"], "recipients": [recipient("a@example.com")], **extra}


def campaign_body(**content: str) -> dict[str, Any]:
    return {
        "name": "Too big",
        "category": "transactional",
        "channel": "email",
        "content": {"subject": "Hi", "html": "<p>Hi</p>", **content},
    }


LIMITS = {
    "body size (API)": Limit(
        "POST",
        "/v1/campaigns",
        lambda c: campaign_body(html="x" * (DEFAULTS.max_body_bytes + 1)),
        413,
        "body",
    ),
    "body size (trigger)": Limit(
        "POST",
        "/v1/executions",
        lambda c: execution(c, context={"pad": "x" * DEFAULTS.max_body_bytes}),
        413,
        "body",
    ),
    "recipients per call": Limit(
        "POST",
        "/v1/executions",
        lambda c: {
            "campaign_id": c["id"],
            "recipients": [
                recipient(f"r{i}@example.com") for i in range(MAX_UNITARY_RECIPIENTS + 1)
            ],
        },
        422,
        "recipients",
    ),
    "context size": Limit(
        "POST",
        "/v1/executions",
        lambda c: execution(c, context={"pad": "x" * MAX_CONTEXT_BYTES}),
        422,
        "context",
    ),
    "context size per recipient": Limit(
        "POST",
        "/v1/executions",
        lambda c: {
            "campaign_id": c["id"],
            "recipients": [recipient("a@example.com", context={"pad": "x" * MAX_CONTEXT_BYTES})],
        },
        422,
        "recipients.0.context",
    ),
    # Drafts hold up to MAX_TEXT characters a field; activation wants TIDINGS_TEMPLATE_MAX_BYTES
    # (test_a_template_over_its_size_limit_does_not_go_live).
    "template size (draft)": Limit(
        "POST",
        "/v1/campaigns",
        lambda c: campaign_body(html="x" * (MAX_TEXT + 1)),
        422,
        "content.html",
    ),
    "template size (new version)": Limit(
        "PATCH",
        "/v1/campaigns/{id}",
        lambda c: {"content": {"subject": "x" * (DEFAULTS.template_max_bytes + 1)}},
        422,
        "content.subject",
    ),
    "nesting depth (trigger body)": Limit(
        "POST", "/v1/executions", lambda c: deep_json(5000), 400, "body"
    ),
    "nesting depth (API body)": Limit(
        "POST", "/v1/campaigns", lambda c: deep_json(5000), 400, "body"
    ),
    "nesting depth (context)": Limit(
        "POST",
        "/v1/executions",
        lambda c: json.dumps(execution(c, context=nested(300))).encode(),
        400,
        "body",
    ),
    # Tidings' own bounds, far below the parser's: the error names the document.
    "nesting depth (context, own bound)": Limit(
        "POST",
        "/v1/executions",
        lambda c: execution(c, context=nested(MAX_CONTEXT_DEPTH + 1)),
        422,
        "context",
    ),
    "nesting depth (recipient context)": Limit(
        "POST",
        "/v1/executions",
        lambda c: {
            "campaign_id": c["id"],
            "recipients": [
                recipient("a@example.com", context={"order": nested(MAX_CONTEXT_DEPTH)})
            ],
        },
        422,
        "recipients.0.context",
    ),
    # A recipient's profile becomes a new profile's attributes: the attributes' bound.
    "nesting depth (recipient profile)": Limit(
        "POST",
        "/v1/executions",
        lambda c: {
            "campaign_id": c["id"],
            "recipients": [recipient("a@example.com", profile=nested(MAX_ATTRIBUTE_DEPTH + 1))],
        },
        422,
        "recipients.0.profile",
    ),
    # Deep enough for the parser to take and for an unbounded recursive walk to fail.
    "nesting depth (profile attributes, 900 levels)": Limit(
        "PUT",
        "/v1/profiles/email/deeper@example.com",
        lambda c: b'{"attributes": ' + deep_json(900) + b"}",
        422,
        "attributes",
    ),
    "nesting depth (SMS body template)": Limit(
        "POST",
        "/v1/channel-configurations",
        lambda c: json.dumps(
            {
                "name": "deep",
                "channel": "sms",
                "category": "marketing",
                "sms": {
                    "provider": "generic",
                    "endpoint_url": "https://sms.example.com/send",
                    "from_number": "+14155550100",
                    "body_template": nested(300),
                },
            }
        ).encode(),
        422,
        "sms.body_template",
    ),
    "nesting depth (profile attributes)": Limit(
        "PUT",
        "/v1/profiles/email/deep@example.com",
        lambda c: {"attributes": nested(40)},
        422,
        "attributes",
    ),
}


@pytest.mark.parametrize("limit", LIMITS.values(), ids=LIMITS.keys())
def test_over_a_limit_is_a_problem_naming_the_field(tenant: Tenant, limit: Limit):
    campaign = live_campaign(tenant)
    body = limit.body(campaign)
    path = limit.path.format(id=campaign["id"])
    if isinstance(body, bytes):
        headers = {"Content-Type": "application/json"}
        response = tenant.client.request(limit.method, path, content=body, headers=headers)
    else:
        response = tenant.client.request(limit.method, path, json=body)
    assert response.status_code == limit.status, response.text[:500]
    fields = problem_fields(response)
    assert any(field.startswith(limit.field) for field in fields), fields
    assert response.json()["detail"]


def test_just_under_the_limits_is_accepted(tenant: Tenant):
    campaign = live_campaign(tenant)
    recipients = [recipient(f"r{i}@example.com") for i in range(MAX_UNITARY_RECIPIENTS)]
    context = {"pad": "x" * (MAX_CONTEXT_BYTES - 1000), "deep": nested(MAX_CONTEXT_DEPTH - 1)}
    recipients[0]["profile"] = nested(MAX_ATTRIBUTE_DEPTH)
    recipients[1]["context"] = nested(MAX_CONTEXT_DEPTH)
    accepted = tenant.client.post(
        "/v1/executions",
        json={"campaign_id": campaign["id"], "recipients": recipients, "context": context},
    )
    assert accepted.status_code == 202, accepted.text[:500]
    big = campaign_body(html="x" * (DEFAULTS.template_max_bytes - 100))
    assert tenant.client.post("/v1/campaigns", json=big).status_code == 201


def test_a_template_over_its_size_limit_does_not_go_live(tenant: Tenant):
    campaign = live_campaign(tenant)
    html = "<p>" + "x" * DEFAULTS.template_max_bytes + "</p>"
    patched = tenant.client.patch(
        f"/v1/campaigns/{campaign['id']}", json={"content": {"html": html}}
    )
    assert patched.status_code == 200, patched.text[:500]
    activated = tenant.client.post(f"/v1/campaigns/{campaign['id']}/activate")
    assert activated.status_code == 422, activated.text[:500]
    assert "content.html" in problem_fields(activated)
    assert f"larger than {DEFAULTS.template_max_bytes} bytes" in activated.text


def test_an_import_row_over_its_limit_is_rejected_by_line(tenant: Tenant):
    big = "x" * (imports.MAX_ROW_BYTES + 1)
    response = tenant.client.post(
        "/v1/profiles/imports",
        content=f"email,note\nbig@example.com,{big}\nok@example.com,fine\n",
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text[:500]
    report = response.json()
    assert report["rejected"] == [
        {"line": 2, "reason": f"is larger than {imports.MAX_ROW_BYTES} bytes"}
    ]
    assert report["created"] == 1


def test_a_loop_bomb_in_content_fails_its_message_as_a_rendering_error(tenant: Tenant):
    # The loop runs over the trigger's data, so the review's trial render (empty data) passes
    # and the bound that stops it is the renderer's fuel, at delivery.
    bomb = "{% for i in range(context.n) %}{% for j in range(context.n) %}x{% endfor %}{% endfor %}"
    campaign = live_campaign(tenant, content={"subject": "Hi", "html": f"<p>{bomb}</p>"})
    execution_id = trigger(
        tenant,
        campaign,
        recipient("bomb@example.com", context={"n": 100_000}),
        recipient("fine@example.com", context={"n": 2}),
    )
    adapter = RecordingAdapter()
    drain(deliverer_for(tenant.runtime, adapter))
    rows = states(tenant, execution_id)
    assert (rows["bomb@example.com"]["state"], rows["bomb@example.com"]["reason"]) == (
        "failed",
        "rendering_error",
    )
    assert "out of fuel" in rows["bomb@example.com"]["last_error"]
    assert rows["fine@example.com"]["state"] == "sent"


def test_inputs_the_fuzzer_found_are_answered_without_a_5xx(tenant: Tenant):
    """Regressions of tests/integration/test_fuzz_api.py's findings."""
    campaign = live_campaign(tenant)
    big = 123456789012345678901234567890  # past 64 bits: JSON takes it, orjson cannot write it
    body = execution(campaign, context={"n": big})
    first = tenant.client.post("/v1/executions", json=body, headers={"Idempotency-Key": "big"})
    assert first.status_code == 202, first.text[:500]
    again = tenant.client.post("/v1/executions", json=body, headers={"Idempotency-Key": "big"})
    assert again.status_code == 202
    assert again.json()["execution_id"] == first.json()["execution_id"]
    configuration = tenant.client.post(
        "/v1/channel-configurations",
        json={
            "name": "big",
            "channel": "sms",
            "category": "marketing",
            "sms": {
                "provider": "generic",
                "endpoint_url": "https://sms.example.com/send",
                "from_number": "+14155550100",
                "body_template": {"n": big},
            },
        },
    )
    assert configuration.status_code == 422
    assert problem_fields(configuration) == ["sms.body_template"]
    bare_return = tenant.client.post(
        "/v1/suppressions/import",
        content=b"value\na@example.com\rb,c\nb@example.com\n",
        headers={"Content-Type": "text/csv"},
    )
    assert bare_return.status_code == 200, bare_return.text[:500]
    assert [row["line"] for row in bare_return.json()["rejected"]] == [2]
    bad_header = tenant.client.post(
        "/v1/suppressions/import", content=b"\x0e\r\xf2W", headers={"Content-Type": "text/csv"}
    )
    assert bad_header.status_code == 422
    assert problem_fields(bad_header) == ["body"]
