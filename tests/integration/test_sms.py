"""The SMS channel against a local server speaking Twilio's Messages API (form in, JSON out),
Twilio's signed webhooks (status callbacks, STOP/START), and the generic HTTP provider."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from tests.conftest import Tenant
from tests.integration.helpers import create_configuration
from tidings.channels.sms import twilio
from tidings.channels.sms.adapter import DatabaseSegmentRecorder, SmsAdapter
from tidings.delivery.deliverer import Deliverer
from tidings.executions.models import messages
from tidings.runtime import Runtime
from tidings.suppressions.models import suppressions
from tidings.vocabulary import Channel

pytestmark = pytest.mark.integration

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "twilio-auth-token-for-tests"
FROM_NUMBER = "+14155550100"
STATUS_URL = "https://tidings.test/webhooks/twilio/status"
INBOUND_URL = "https://tidings.test/webhooks/twilio/inbound"


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeTwilio:
    """Twilio's Messages resource on loopback: checks the basic auth and the form, answers as
    Twilio does (201 with the message JSON, or an error JSON with Twilio's code)."""

    received: list[list[tuple[str, str]]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    # Planned answers per To number, used in order; then 201.
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    base: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, path: str, authorization: str, content_type: str, body: bytes) -> Answer:
        expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if authorization != expected:
            return Answer(401, {"code": 20003, "message": "Authenticate", "status": 401})
        if path != f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json":
            return Answer(404, {"code": 20404, "message": "not found", "status": 404})
        if content_type != "application/x-www-form-urlencoded":
            return Answer(400, {"code": 21600, "message": "bad content type", "status": 400})
        form = parse_qsl(body.decode(), keep_blank_values=True)
        fields = dict(form)
        if not fields.get("To") or not (fields.get("From") or fields.get("MessagingServiceSid")):
            return Answer(400, {"code": 21604, "message": "A 'To' phone number is required."})
        with self.lock:
            self.received.append(form)
            self.paths.append(path)
            planned = self.answers.get(fields["To"])
            if planned:
                return planned.pop(0)
        sid = "SM" + uuid.uuid4().hex
        return Answer(
            201,
            {
                "sid": sid,
                "account_sid": ACCOUNT_SID,
                "to": fields["To"],
                "from": fields.get("From"),
                "body": fields.get("Body"),
                "status": "queued",
                "num_segments": "1",
                "num_media": str(sum(1 for name, _ in form if name == "MediaUrl")),
            },
        )


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            answer = fake.handle(
                self.path,
                self.headers.get("Authorization", ""),
                self.headers.get("Content-Type", ""),
                self.rfile.read(length),
            )
            payload = json.dumps(answer.body).encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def sms_campaign(
    tenant: Tenant, *, category: str = "transactional", content: dict[str, Any] | None = None
) -> dict[str, Any]:
    configuration = create_configuration(
        tenant.client,
        channel="sms",
        category=category,
        provider="twilio",
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number=FROM_NUMBER,
    )
    campaign = tenant.client.post(
        "/v1/campaigns",
        json={
            "name": f"sms-{uuid.uuid4().hex[:8]}",
            "category": category,
            "channel": "sms",
            "channel_configuration_id": configuration["id"],
            "content": content or {"body": "Hi {{ profile.firstName }}, code {{ context.code }}"},
            "audience": {"identity_namespace": "phone", "create_new_profiles": True},
        },
    )
    assert campaign.status_code == 201, campaign.text
    activated = tenant.client.post(f"/v1/campaigns/{campaign.json()['id']}/activate")
    assert activated.status_code == 200, activated.text
    return activated.json()


def trigger(tenant: Tenant, campaign: dict[str, Any], *phones: str, **context: Any) -> str:
    response = tenant.client.post(
        "/v1/executions",
        json={
            "campaign_id": campaign["id"],
            "context": context,
            "recipients": [
                {"identity": {"namespace": "phone", "id": phone}, "profile": {"firstName": "Ada"}}
                for phone in phones
            ],
        },
    )
    assert response.status_code == 202, response.text
    return str(response.json()["execution_id"])


def deliver(runtime: Runtime, fake: FakeTwilio, rounds: int = 1) -> None:
    """Delivery rounds in one event loop, with the adapter the worker would build."""

    async def run() -> None:
        adapter = SmsAdapter(
            public_url=runtime.settings.resolved_public_url,
            twilio_api_base=fake.base,
            recorder=DatabaseSegmentRecorder(runtime.db),
        )
        deliverer = Deliverer(runtime, {channel: adapter for channel in Channel})
        try:
            for _ in range(rounds):
                await deliverer.run_once()
        finally:
            await adapter.close()

    asyncio.run(run())


def rows_of(tenant: Tenant, execution_id: str) -> dict[str, dict[str, Any]]:
    with tenant.runtime.db.read() as conn:
        rows = conn.execute(
            messages.select().where(messages.c.execution_id == execution_id)
        ).mappings()
        return {row["recipient_id"]: dict(row) for row in rows}


def test_a_message_goes_to_twilio_with_auth_form_and_callback(
    tenant: Tenant, fake_twilio: FakeTwilio
):
    campaign = sms_campaign(
        tenant,
        content={
            "body": "Hi {{ profile.firstName }}, code {{ context.code }} €",
            "media_urls": ["https://cdn.example.com/a.png", "https://cdn.example.com/b.png"],
        },
    )
    execution = trigger(tenant, campaign, "+1 (415) 555-0123", code="A1")
    deliver(tenant.runtime, fake_twilio)
    row = rows_of(tenant, execution)["+14155550123"]
    assert row["state"] == "sent", row
    form = next(f for f in fake_twilio.received if dict(f)["To"] == "+14155550123")
    assert dict(form) == {
        "To": "+14155550123",
        "From": FROM_NUMBER,
        "Body": "Hi Ada, code A1 €",
        "MediaUrl": "https://cdn.example.com/b.png",
        "StatusCallback": STATUS_URL,
    }
    assert [value for name, value in form if name == "MediaUrl"] == [
        "https://cdn.example.com/a.png",
        "https://cdn.example.com/b.png",
    ]
    assert row["provider_message_id"].startswith("SM")
    assert (row["sms_encoding"], row["sms_segments"]) == ("gsm7", 1)
    listed = tenant.client.get(f"/v1/executions/{execution}/messages").json()["items"]
    assert (listed[0]["sms_encoding"], listed[0]["sms_segments"]) == ("gsm7", 1)


def test_unicode_bodies_are_ucs2_and_counted_in_segments(tenant: Tenant, fake_twilio: FakeTwilio):
    campaign = sms_campaign(tenant, content={"body": "Привет " * 12 + "👍"})
    execution = trigger(tenant, campaign, "+14155550124")
    deliver(tenant.runtime, fake_twilio)
    row = rows_of(tenant, execution)["+14155550124"]
    assert (row["state"], row["sms_encoding"], row["sms_segments"]) == ("sent", "ucs2", 2)


def test_an_invalid_number_fails_permanently_with_twilios_code(
    tenant: Tenant, fake_twilio: FakeTwilio
):
    fake_twilio.answers["+14155550125"] = [
        Answer(
            400,
            {
                "code": 21211,
                "message": "Invalid 'To' Phone Number: +14155550125",
                "more_info": "https://www.twilio.com/docs/errors/21211",
                "status": 400,
            },
        )
    ]
    execution = trigger(tenant, sms_campaign(tenant), "+14155550125")
    deliver(tenant.runtime, fake_twilio)
    row = rows_of(tenant, execution)["+14155550125"]
    assert (row["state"], row["reason"]) == ("failed", "twilio_21211")
    assert "Invalid 'To' Phone Number" in row["last_error"]
    assert row["sms_segments"] is None


def test_429_is_retried_no_sooner_than_retry_after(tenant: Tenant, fake_twilio: FakeTwilio):
    fake_twilio.answers["+14155550126"] = [
        Answer(429, {"code": 20429, "message": "Too Many Requests"}, {"Retry-After": "120"})
    ]
    execution = trigger(tenant, sms_campaign(tenant), "+14155550126")
    before = datetime.now(UTC)
    deliver(tenant.runtime, fake_twilio)
    row = rows_of(tenant, execution)["+14155550126"]
    assert (row["state"], row["reason"]) == ("queued", "twilio_20429")
    assert (row["due_at"] - before).total_seconds() >= 119


def test_a_server_error_is_retried_then_sent(tenant: Tenant, fake_twilio: FakeTwilio):
    fake_twilio.answers["+14155550127"] = [
        Answer(500, {"code": 20500, "message": "Internal Server Error"})
    ]
    execution = trigger(tenant, sms_campaign(tenant), "+14155550127")
    deliver(tenant.runtime, fake_twilio)
    row = rows_of(tenant, execution)["+14155550127"]
    assert (row["state"], row["reason"], row["attempts"]) == ("queued", "twilio_20500", 1)
    with tenant.runtime.db.write() as conn:
        conn.execute(
            messages.update().where(messages.c.id == row["id"]).values(due_at=datetime.now(UTC))
        )
    deliver(tenant.runtime, fake_twilio)
    row = rows_of(tenant, execution)["+14155550127"]
    assert (row["state"], row["attempts"]) == ("sent", 2)


def test_an_unreachable_provider_is_transient(tenant: Tenant, fake_twilio: FakeTwilio):
    execution = trigger(tenant, sms_campaign(tenant), "+14155550128")
    fake_twilio.base = "http://127.0.0.1:9"  # discard: nothing listens
    deliver(tenant.runtime, fake_twilio)
    row = rows_of(tenant, execution)["+14155550128"]
    assert (row["state"], row["reason"]) == ("queued", "connection_error")


def _post_signed(tenant: Tenant, url: str, params: list[tuple[str, str]], token: str = AUTH_TOKEN):
    path = url.removeprefix("https://tidings.test")
    return tenant.client.post(
        path,
        content=urlencode(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio.signature(token, url, params),
        },
    )


def _sent(tenant: Tenant, fake: FakeTwilio, phone: str) -> dict[str, Any]:
    execution = trigger(tenant, sms_campaign(tenant), phone)
    deliver(tenant.runtime, fake)
    row = rows_of(tenant, execution)[phone]
    assert row["state"] == "sent"
    return row


def _status(sid: str, status: str, error: str = "") -> list[tuple[str, str]]:
    params = [
        ("AccountSid", ACCOUNT_SID),
        ("From", FROM_NUMBER),
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("SmsSid", sid),
        ("SmsStatus", status),
        ("To", "+14155550129"),
    ]
    return [*params, ("ErrorCode", error)] if error else params


def _state(tenant: Tenant, message_id: str) -> tuple[str, str | None]:
    with tenant.runtime.db.read() as conn:
        row = conn.execute(messages.select().where(messages.c.id == message_id)).mappings().one()
    return row["state"], row["reason"]


def test_status_callbacks_move_a_sent_message(tenant: Tenant, fake_twilio: FakeTwilio):
    row = _sent(tenant, fake_twilio, "+14155550129")
    sid = row["provider_message_id"]
    assert _post_signed(tenant, STATUS_URL, _status(sid, "sent")).status_code == 204
    assert _state(tenant, row["id"]) == ("sent", None)
    assert _post_signed(tenant, STATUS_URL, _status(sid, "delivered")).status_code == 204
    assert _state(tenant, row["id"]) == ("delivered", None)
    # Repeated: nothing more to do, still acknowledged.
    assert _post_signed(tenant, STATUS_URL, _status(sid, "delivered")).status_code == 204

    other = _sent(tenant, fake_twilio, "+14155550130")
    answer = _post_signed(
        tenant, STATUS_URL, _status(other["provider_message_id"], "undelivered", "30003")
    )
    assert answer.status_code == 204
    assert _state(tenant, other["id"]) == ("bounced", "twilio_30003")


def test_a_status_callback_with_a_bad_signature_is_refused(tenant: Tenant, fake_twilio: FakeTwilio):
    row = _sent(tenant, fake_twilio, "+14155550131")
    params = _status(row["provider_message_id"], "delivered")
    forged = _post_signed(tenant, STATUS_URL, params, token="not-the-token")
    assert forged.status_code == 403
    assert forged.headers["content-type"].startswith("application/problem+json")
    unsigned = tenant.client.post(
        "/webhooks/twilio/status",
        content=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert unsigned.status_code == 403
    assert _state(tenant, row["id"]) == ("sent", None)
    # A sid Tidings never sent: nothing to check it against, nothing changes.
    unknown = _post_signed(tenant, STATUS_URL, _status("SM" + "f" * 32, "delivered"))
    assert unknown.status_code == 204


def _inbound(phone: str, body: str) -> list[tuple[str, str]]:
    return [
        ("AccountSid", ACCOUNT_SID),
        ("Body", body),
        ("From", phone),
        ("MessageSid", "SM" + uuid.uuid4().hex),
        ("NumMedia", "0"),
        ("To", FROM_NUMBER),
    ]


def test_stop_and_start_set_sms_consent_and_stop_marketing(tenant: Tenant, fake_twilio: FakeTwilio):
    phone = "+14155550132"
    tenant.client.put(f"/v1/profiles/phone/{phone}", json={"attributes": {"firstName": "Ada"}})
    marketing = sms_campaign(
        tenant, category="marketing", content={"body": "Sale! Reply STOP to opt out"}
    )
    answer = _post_signed(tenant, INBOUND_URL, _inbound(phone, "  Stop "))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    assert answer.text.endswith("<Response/>")
    consent = tenant.client.get(f"/v1/profiles/phone/{phone}").json()["consent"]["sms"]
    assert (consent["status"], consent["source"]) == ("out", "sms_keyword")

    execution = trigger(tenant, marketing, phone)
    deliver(tenant.runtime, fake_twilio)
    row = rows_of(tenant, execution)[phone]
    assert (row["state"], row["reason"]) == ("excluded", "no_consent")

    assert _post_signed(tenant, INBOUND_URL, _inbound(phone, "start")).status_code == 200
    consent = tenant.client.get(f"/v1/profiles/phone/{phone}").json()["consent"]["sms"]
    assert consent["status"] == "in"
    execution = trigger(tenant, marketing, phone)
    deliver(tenant.runtime, fake_twilio)
    assert rows_of(tenant, execution)[phone]["state"] == "sent"


def test_stop_from_an_unknown_number_suppresses_it_and_start_undoes_that(
    tenant: Tenant, fake_twilio: FakeTwilio
):
    sms_campaign(tenant)  # its configuration holds the number and token
    phone = "+14155550133"

    def suppressed() -> list[dict[str, Any]]:
        with tenant.runtime.db.read() as conn:
            return [
                dict(row)
                for row in conn.execute(
                    suppressions.select().where(
                        suppressions.c.workspace_id == tenant.workspace_id,
                        suppressions.c.value == phone,
                    )
                ).mappings()
            ]

    assert _post_signed(tenant, INBOUND_URL, _inbound(phone, "QUIT")).status_code == 200
    [entry] = suppressed()
    assert (entry["channel"], entry["type"], entry["source"]) == ("sms", "manual", "sms_stop")
    # Any other text changes nothing; START creates no profile and lifts only that entry.
    assert _post_signed(tenant, INBOUND_URL, _inbound(phone, "hello")).status_code == 200
    assert len(suppressed()) == 1
    assert _post_signed(tenant, INBOUND_URL, _inbound(phone, "START")).status_code == 200
    assert suppressed() == []
    assert tenant.client.get(f"/v1/profiles/phone/{phone}").status_code == 404
    forged = _post_signed(tenant, INBOUND_URL, _inbound(phone, "STOP"), token="wrong")
    assert forged.status_code == 403
    assert suppressed() == []


def test_the_generic_provider_sends_the_configured_request(tenant: Tenant):
    seen: list[tuple[str, str, dict[str, str], Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.command, self.path, dict(self.headers), body))
            status = 503 if body["text"] == "busy" else 200
            payload = json.dumps({"result": {"messages": [{"ref": "gen-1"}]}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if status == 503:
                self.send_header("Retry-After", "60")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        configuration = create_configuration(
            tenant.client,
            channel="sms",
            category="transactional",
            provider="generic",
            endpoint_url=f"http://127.0.0.1:{server.server_address[1]}/send",
            http_method="PUT",
            body_template={"to": ["{{to}}"], "text": "{{body}}", "sender": "{{from}}"},
            auth_header_name="X-Api-Key",
            auth_header_value="sekret",
            id_path="result.messages.0.ref",
        )
        assert "auth_header_value" not in configuration["sms"]
        assert configuration["secrets_set"] == ["auth_header_value"]
        campaign = tenant.client.post(
            "/v1/campaigns",
            json={
                "name": "generic",
                "category": "transactional",
                "channel": "sms",
                "channel_configuration_id": configuration["id"],
                "content": {"body": "{{ context.text }}"},
                "audience": {"identity_namespace": "phone", "create_new_profiles": True},
            },
        ).json()
        activated = tenant.client.post(f"/v1/campaigns/{campaign['id']}/activate")
        assert activated.status_code == 200, activated.text
        ok = trigger(tenant, campaign, "+14155550134", text="hello")
        busy = trigger(tenant, campaign, "+14155550135", text="busy")
        deliver(tenant.runtime, FakeTwilio())
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    sent = rows_of(tenant, ok)["+14155550134"]
    assert (sent["state"], sent["provider_message_id"]) == ("sent", "gen-1")
    retried = rows_of(tenant, busy)["+14155550135"]
    assert (retried["state"], retried["reason"]) == ("queued", "http_503")
    request = next(s for s in seen if s[3]["text"] == "hello")
    assert request[:2] == ("PUT", "/send")
    assert request[2]["X-Api-Key"] == "sekret"
    assert request[3] == {"to": ["+14155550134"], "text": "hello", "sender": "+14155550100"}


def test_media_urls_must_be_https_and_at_most_ten(tenant: Tenant):
    configuration = create_configuration(tenant.client, channel="sms", category="transactional")
    for media, field_name in (
        (["http://cdn.example.com/a.png"], "content.media_urls.0"),
        (["https://cdn.example.com/a.png"] * 11, "content.media_urls"),
    ):
        response = tenant.client.post(
            "/v1/campaigns",
            json={
                "name": f"mms-{uuid.uuid4().hex[:6]}",
                "category": "transactional",
                "channel": "sms",
                "channel_configuration_id": configuration["id"],
                "content": {"body": "hi", "media_urls": media},
            },
        )
        assert response.status_code == 422, response.text
        assert field_name in [error["field"] for error in response.json()["errors"]]
