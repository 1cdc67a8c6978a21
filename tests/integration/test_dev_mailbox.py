"""The dev mailbox: what the dev sink kept, listed and shown on a console page for `make run`,
to signed-in members and only their workspace's messages."""

from __future__ import annotations

import html

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.integration.console_members import create_members
from tests.integration.test_console_auth import sign_in
from tests.integration.test_delivery import drain, trigger
from tests.integration.test_executions import live_campaign, recipient
from tidings.app import create_app
from tidings.channels.dev import DevMailRoute, DevSinkAdapter, is_loopback
from tidings.delivery.deliverer import Deliverer
from tidings.delivery.worker import default_adapters
from tidings.runtime import Runtime
from tidings.vocabulary import Channel

pytestmark = pytest.mark.integration


def test_an_email_without_a_relay_lands_in_the_dev_mailbox_of_its_workspace(
    tenant: Tenant, other_tenant: Tenant
):
    runtime = tenant.runtime
    assert not runtime.settings.smtp_url
    sink = DevSinkAdapter()
    adapters = default_adapters(runtime, dev_sink=sink)
    assert isinstance(adapters[Channel.EMAIL], DevMailRoute)
    campaign = live_campaign(
        tenant,
        content={
            "subject": "Order {{ context.order.id }} <ok>",
            "html": "<p onclick='x()'>Hi \"{{ profile.firstName }}\"</p><script>1</script>",
        },
    )
    execution = trigger(
        tenant,
        campaign,
        recipient("ada@example.com", profile={"firstName": "Ada"}),
        context={"order": {"id": "Q-9"}},
    )
    drain(Deliverer(runtime, adapters))
    [kept] = [e for e in sink.newest_first() if e.message.to == "ada@example.com"]
    assert kept.channel == "email"
    messages = tenant.client.get(f"/v1/executions/{execution}/messages").json()["items"]
    assert [(m["state"], m["provider_message_id"]) for m in messages] == [
        ("sent", f"dev-{kept.message.message_id}")
    ]

    app = create_app(runtime)
    app.state.dev_sink = sink
    anonymous = TestClient(app, base_url="https://testserver", follow_redirects=False)
    refused = anonymous.get("/dev/mailbox")
    assert refused.status_code == 303
    assert refused.headers["location"] == "/sign-in?next=/dev/mailbox"
    assert anonymous.get(f"/dev/mailbox/{kept.message.message_id}").status_code == 303
    # Another workspace's member sees none of this workspace's messages.
    outsider = TestClient(app, base_url="https://testserver", follow_redirects=False)
    sign_in(outsider, create_members(other_tenant).viewer)
    elsewhere = outsider.get("/dev/mailbox")
    assert elsewhere.status_code == 200 and "ada@example.com" not in elsewhere.text
    assert outsider.get(f"/dev/mailbox/{kept.message.message_id}").status_code == 404

    client = TestClient(app, base_url="https://testserver", follow_redirects=False)
    sign_in(client, create_members(tenant).viewer)
    page = client.get("/dev/mailbox")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "ada@example.com" in page.text
    assert "Order Q-9 &lt;ok&gt;" in page.text
    assert f'href="/dev/mailbox/{kept.message.message_id}"' in page.text

    detail = client.get(f"/dev/mailbox/{kept.message.message_id}")
    assert detail.status_code == 200
    # The HTML part is shown only inside a sandboxed frame, escaped into its srcdoc.
    assert '<iframe sandbox="" srcdoc="' in detail.text
    assert "<script>1</script>" not in detail.text
    srcdoc = detail.text.split('srcdoc="', 1)[1].split('"', 1)[0]
    assert "<script>1</script>" in html.unescape(srcdoc)
    assert "Hi &quot;Ada&quot;" in detail.text  # the text part, escaped
    assert "news@example.com" in detail.text
    assert client.get("/dev/mailbox/unknown").status_code == 404


def test_the_mailbox_is_served_only_with_the_worker_on_a_loopback_host(runtime: Runtime):
    assert create_app(runtime).state.dev_sink is None
    assert TestClient(create_app(runtime)).get("/dev/mailbox").status_code == 404
    assert isinstance(create_app(runtime, with_worker=True).state.dev_sink, DevSinkAdapter)
    for host, off in (("0.0.0.0", {}), ("127.0.0.1", {"dev_mailbox": False})):
        settings = runtime.settings.model_copy(update={"host": host, **off})
        shaped = Runtime(settings, runtime.db, runtime.templates, runtime.authenticator)
        assert create_app(shaped, with_worker=True).state.dev_sink is None
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_a_configured_relay_keeps_emails_out_of_the_sink(runtime: Runtime):
    settings = runtime.settings.model_copy(update={"smtp_url": "smtp://127.0.0.1:2525"})
    shaped = Runtime(settings, runtime.db, runtime.templates, runtime.authenticator)
    adapters = default_adapters(shaped, dev_sink=DevSinkAdapter())
    assert not isinstance(adapters[Channel.EMAIL], DevMailRoute)
