"""The console's pure pieces: the ready-to-run curl commands and the server-side SVG chart."""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET

from tidings.ajo.schemas import AjoUnitaryRequest
from tidings.console.campaigns import trigger_commands
from tidings.console.charts import bar_chart
from tidings.executions.schemas import ExecutionCreate

CAMPAIGN = {
    "id": "cmp-1",
    "audience": {"identity_namespace": "email", "create_new_profiles": True},
}


def _body(command: str) -> dict[str, object]:
    words = shlex.split(command.replace("\\\n", " "))
    body = json.loads(words[words.index("-d") + 1])
    assert isinstance(body, dict)
    return body


def test_the_native_command_fills_every_variable_and_is_a_valid_trigger():
    commands = trigger_commands(
        "http://127.0.0.1:8080",
        "default",
        CAMPAIGN,
        ["address.city", "firstName"],
        ["order.id", "order.total", "it's"],
    )
    words = shlex.split(commands["native"].replace("\\\n", " "))
    assert words[:4] == ["curl", "-sS", "-X", "POST"]
    assert words[4] == "http://127.0.0.1:8080/v1/executions"
    body = _body(commands["native"])
    trigger = ExecutionCreate.model_validate(body)
    assert trigger.campaign_id == "cmp-1"
    assert trigger.context == {
        "order": {"id": "context.order.id", "total": "context.order.total"},
        "it's": "context.it's",
    }
    recipient = body["recipients"][0]  # type: ignore[index]
    assert recipient["profile"] == {
        "address": {"city": "profile.address.city"},
        "firstName": "profile.firstName",
    }
    assert recipient["identity"] == {"namespace": "email", "id": "someone@example.com"}


def test_the_ajo_command_is_a_valid_unitary_request_for_the_workspace_sandbox():
    commands = trigger_commands(
        "http://h:1", "acme", {**CAMPAIGN, "audience": {"identity_namespace": "phone"}}, [], ["a"]
    )
    assert "x-sandbox-name: acme" in shlex.split(commands["ajo"].replace("\\\n", " "))
    request = AjoUnitaryRequest.model_validate(_body(commands["ajo"]))
    execution = request.to_execution()
    assert execution.recipients and execution.recipients[0].identity.id == "+15555550100"
    assert request.recipients[0].context == {"a": "context.a"}
    # A new idempotency key each time the page is drawn.
    again = trigger_commands("http://h:1", "acme", CAMPAIGN, [], [])
    assert _body(again["ajo"])["requestId"] != request.request_id


def test_the_chart_is_well_formed_svg_with_escaped_labels_and_proportional_bars():
    svg = str(bar_chart([("sent", 30), ("<b>x</b>", 10), ("none", 0)], title="A & B"))
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg" and root.get("role") == "img"
    assert root.get("aria-label") == "A & B"
    bars = {g.get("data-label"): g for g in root.iter(f"{ns}g")}
    assert set(bars) == {"sent", "<b>x</b>", "none"}
    widths = {label: float(g.find(f"{ns}rect").get("width")) for label, g in bars.items()}  # type: ignore[union-attr]
    assert widths["sent"] == 3 * widths["<b>x</b>"]
    assert widths["none"] <= 1
    assert bars["<b>x</b>"].get("data-count") == "10"


def test_an_empty_chart_is_still_valid_svg():
    root = ET.fromstring(str(bar_chart([], title="nothing")))
    assert list(root.iter("{http://www.w3.org/2000/svg}g")) == []
