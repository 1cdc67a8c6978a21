"""CSS inlining in delivery: once per version when it can be shown equal, else per message."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant
from tests.integration.helpers import create_configuration
from tests.integration.test_delivery import RecordingAdapter, deliverer_for, drain, trigger
from tests.integration.test_executions import live_campaign, recipient
from tidings.channels.adapters import OutboundMessage
from tidings.channels.email.smtp import _serialize

ITEMS = (
    "<style>td { color: #c00 }{positional}</style><table>{% for item in context.items %}"
    "<tr><td>{{ item }} for {{ profile.firstName }}</td></tr>{% endfor %}</table>"
)


def sent_html(message: OutboundMessage) -> str:
    """The HTML part as the SMTP adapter writes it."""
    raw, _sender, _recipients = _serialize(message)
    return raw.decode("ascii")


@pytest.mark.parametrize(
    ("positional", "inline_setting", "inlined_per_version", "styled"),
    [
        ("", True, True, True),
        # A positional selector: the template cannot be inlined once, each message is.
        (" tr:first-child td { font-weight: bold }", True, False, True),
        ("", False, False, False),
    ],
)
def test_each_message_arrives_inlined_once_whichever_path(
    tenant: Tenant,
    positional: str,
    inline_setting: bool,
    inlined_per_version: bool,
    styled: bool,
):
    configuration = create_configuration(
        tenant.client, category="transactional", inline_css=inline_setting
    )
    campaign = live_campaign(
        tenant,
        channel_configuration_id=configuration["id"],
        content={"subject": "Items", "html": ITEMS.replace("{positional}", positional)},
    )
    adapter = RecordingAdapter()
    trigger(
        tenant,
        campaign,
        recipient("ada@example.com", profile={"firstName": "Ada"}),
        recipient("bob@example.com", profile={"firstName": "Bob"}),
        context={"items": ["mug", "tea", "<cake>"]},
    )
    drain(deliverer_for(tenant.runtime, adapter))

    assert {message.to for message in adapter.sent} == {"ada@example.com", "bob@example.com"}
    for message in adapter.sent:
        assert message.css_inlined is inlined_per_version
        html = sent_html(message)
        name = "Ada" if message.to.startswith("ada") else "Bob"
        assert f"&lt;cake&gt; for {name}" in html
        if styled:
            assert html.count('<td style="color: #c00;') == 3
            assert "td { color" not in html
        else:
            assert "td { color: #c00 }" in html and 'style="color' not in html
