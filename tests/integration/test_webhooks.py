"""Feedback webhooks end to end: a real receiver on loopback checks signatures, sees retries
after its 500s, rotation and replays; AJO's shape; SSRF refusals."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Tenant, problem_fields
from tests.integration.test_delivery import (
    RecordingAdapter,
    deliverer_for,
    drain,
    permanent,
    trigger,
)
from tests.integration.test_executions import live_campaign, recipient
from tidings.clock import utcnow
from tidings.delivery.worker import Worker
from tidings.events import EventKind, MessageEvent
from tidings.executions.models import messages
from tidings.vocabulary import Channel
from tidings.webhooks import service, signing
from tidings.webhooks.client import AddressPolicy, HttpWebhookSender, RecordingSender
from tidings.webhooks.models import webhook_deliveries, webhook_endpoints
from tidings.webhooks.outbox import enqueue_events
from tidings.webhooks.service import Backoff, WebhookDispatcher

pytestmark = pytest.mark.integration


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 answering the scripted statuses in turn, then 200."""

    server: ThreadingHTTPServer
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tidings"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state = holder[0]
            state.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            answer = b"accepted" if status < 300 else b"receiver broke"
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def loopback_allowed(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tenant]:
    """The operator setting the tests' receiver needs; endpoints removed afterwards so no
    other test's worker finds their deliveries."""
    monkeypatch.setattr(tenant.runtime.settings, "webhook_allowed_networks", "127.0.0.0/8")
    yield tenant
    remove_endpoints(tenant)


@pytest.fixture
def hooks(tenant: Tenant) -> Iterator[Tenant]:
    """A tenant whose endpoints are removed afterwards, with the default policy."""
    yield tenant
    remove_endpoints(tenant)


def remove_endpoints(tenant: Tenant) -> None:
    with tenant.runtime.db.read() as conn:
        ids = list(
            conn.execute(
                sa.select(webhook_endpoints.c.id).where(
                    webhook_endpoints.c.workspace_id == tenant.workspace_id
                )
            ).scalars()
        )
    for endpoint_id in ids:
        service.delete(tenant.runtime.db, tenant.workspace_id, endpoint_id)


def create_webhook(tenant: Tenant, url: str, *event_types: str, **extra: Any) -> dict[str, Any]:
    response = tenant.client.post(
        "/v1/webhooks",
        json={"url": url, "event_types": list(event_types or ("sent",)), **extra},
    )
    assert response.status_code == 201, response.text
    return response.json()


def message_of(tenant: Tenant, address: str = "ada@example.com", **trigger: Any) -> Any:
    campaign = live_campaign(tenant)
    response = tenant.client.post(
        "/v1/executions",
        json={"campaign_id": campaign["id"], "recipients": [recipient(address)], **trigger},
    )
    assert response.status_code == 202, response.text
    with tenant.runtime.db.read() as conn:
        return conn.execute(
            messages.select().where(messages.c.execution_id == response.json()["execution_id"])
        ).one()


def event(row: Any, kind: EventKind, **extra: Any) -> MessageEvent:
    return MessageEvent(
        kind=kind,
        message_id=row.id,
        workspace_id=row.workspace_id,
        campaign_id=row.campaign_id,
        version_id=row.version_id,
        execution_id=row.execution_id,
        channel=row.channel,
        occurred_at=utcnow(),
        **extra,
    )


def enqueue(tenant: Tenant, *events: MessageEvent) -> None:
    with tenant.runtime.db.write() as conn:
        enqueue_events(conn, events)


def deliveries(tenant: Tenant, webhook: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    response = tenant.client.get(f"/v1/webhooks/{webhook['id']}/deliveries", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def dispatcher_for(tenant: Tenant, **options: Any) -> WebhookDispatcher:
    sender = HttpWebhookSender(AddressPolicy.from_settings(tenant.runtime.settings))
    return WebhookDispatcher(tenant.runtime.db, sender, **options)


def dispatch(dispatcher: WebhookDispatcher, rounds: int = 10) -> int:
    """Runs batches in one event loop until one claims nothing; returns how many ran."""

    async def run() -> int:
        ran = 0
        try:
            for _ in range(rounds):
                if await dispatcher.run_once() == 0:
                    break
                ran += 1
        finally:
            await dispatcher.close()
        return ran

    return asyncio.run(run())


def no_jitter() -> float:
    return 0.0


def independent_signature(secret: str, received: Received) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = (
        f"{received.headers['webhook-id']}.{received.headers['webhook-timestamp']}.".encode()
        + received.body
    )
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def test_a_receiver_verifies_signatures_and_sees_retries_after_its_500s(
    loopback_allowed: Tenant, receiver: Receiver
):
    tenant = loopback_allowed
    webhook = create_webhook(tenant, receiver.url, "sent", "delivered")
    secret = webhook["secret"]
    assert secret.startswith("whsec_")
    assert "secret" not in tenant.client.get(f"/v1/webhooks/{webhook['id']}").json()
    row = message_of(tenant, request_id="order-42")
    enqueue(tenant, event(row, EventKind.SENT))
    with tenant.runtime.db.read() as conn:
        backlog = service.pending_count(conn)
    assert backlog >= 1

    receiver.statuses = [500, 500]
    dispatch(dispatcher_for(tenant, backoff=Backoff(rng=no_jitter)))

    assert len(receiver.received) == 3
    ids = {request.headers["webhook-id"] for request in receiver.received}
    assert len(ids) == 1  # the same event on every retry: receivers deduplicate by it
    for request in receiver.received:
        assert signing.verify(secret, request.headers, request.body) in ids
        assert request.headers["webhook-signature"] == independent_signature(secret, request)
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    payload = json.loads(receiver.received[-1].body)
    assert payload["type"] == "message.sent"
    data = payload["data"]
    assert data["message_id"] == row.id
    assert data["execution_id"] == row.execution_id
    assert data["campaign_id"] == row.campaign_id
    assert data["request_id"] == "order-42"
    assert data["recipient"] == {"namespace": "email", "id": row.recipient_id}
    assert "context" not in data and "profile" not in data

    [logged] = deliveries(tenant, webhook)
    assert logged["state"] == "delivered"
    assert logged["attempts"] == 3
    assert logged["last_status"] == 200
    assert logged["event_id"] in ids
    detail = tenant.client.get(f"/v1/webhooks/{webhook['id']}/deliveries/{logged['id']}").json()
    assert [attempt["status_code"] for attempt in detail["attempt_log"]] == [500, 500, 200]
    assert detail["attempt_log"][0]["response"] == "receiver broke"
    assert deliveries(tenant, webhook, state="failed") == []
    with tenant.runtime.db.read() as conn:
        assert service.pending_count(conn) == backlog - 1


def test_retries_back_off_for_a_day_then_fail_and_a_410_disables(
    loopback_allowed: Tenant, receiver: Receiver
):
    tenant = loopback_allowed
    backoff = Backoff()
    assert backoff.window >= timedelta(hours=24)
    delays = [backoff.delay(attempt) for attempt in range(1, 20)]
    assert all(timedelta(0) <= delay <= backoff.cap for delay in delays)
    assert Backoff(rng=lambda: 1.0).delay(3) == backoff.base * 4

    webhook = create_webhook(tenant, receiver.url, "failed")
    row = message_of(tenant)
    enqueue(tenant, event(row, EventKind.FAILED, reason="smtp_550"))
    receiver.statuses = [503, 503]
    dispatch(dispatcher_for(tenant))
    [pending] = deliveries(tenant, webhook)
    assert pending["state"] == "pending" and pending["attempts"] == 1
    assert datetime.fromisoformat(pending["next_attempt_at"]) > utcnow()

    # A day later the next failure is the last.
    later = utcnow() + timedelta(hours=25)
    dispatch(dispatcher_for(tenant, clock=lambda: later))
    [failed] = deliveries(tenant, webhook)
    assert failed["state"] == "failed" and failed["attempts"] == 2
    assert failed["last_error"] == "HTTP 503"

    gone = create_webhook(tenant, receiver.url, "bounced")
    enqueue(tenant, event(row, EventKind.BOUNCED, reason="hard"))
    receiver.statuses = [410]
    dispatch(dispatcher_for(tenant, backoff=Backoff(rng=no_jitter)))
    assert [d["state"] for d in deliveries(tenant, gone)] == ["failed"]
    disabled = tenant.client.get(f"/v1/webhooks/{gone['id']}").json()
    assert disabled["enabled"] is False and "410" in disabled["disabled_reason"]
    enabled = tenant.client.patch(f"/v1/webhooks/{gone['id']}", json={"enabled": True}).json()
    assert enabled["enabled"] is True and enabled["disabled_reason"] is None


def test_during_a_rotation_both_secrets_verify(loopback_allowed: Tenant, receiver: Receiver):
    tenant = loopback_allowed
    webhook = create_webhook(tenant, receiver.url, "delivered")
    rotated = tenant.client.post(f"/v1/webhooks/{webhook['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != webhook["secret"]
    overlap_ends = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert timedelta(hours=23) < overlap_ends - utcnow() <= timedelta(hours=24)

    row = message_of(tenant)
    enqueue(tenant, event(row, EventKind.DELIVERED))
    dispatch(dispatcher_for(tenant))
    [request] = receiver.received
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (webhook["secret"], new_secret):
        assert signing.verify(secret, request.headers, request.body)

    # Once the overlap ends only the new secret signs.
    with tenant.runtime.db.write() as conn:
        conn.execute(
            webhook_endpoints.update()
            .where(webhook_endpoints.c.id == webhook["id"])
            .values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
        )
    enqueue(tenant, event(row, EventKind.DELIVERED))
    dispatch(dispatcher_for(tenant))
    last = receiver.received[-1]
    assert signing.verify(new_secret, last.headers, last.body)
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(webhook["secret"], last.headers, last.body)


def test_a_delivery_is_replayed_with_the_same_id_and_body(
    loopback_allowed: Tenant, receiver: Receiver
):
    tenant = loopback_allowed
    webhook = create_webhook(tenant, receiver.url, "opened")
    row = message_of(tenant)
    enqueue(tenant, event(row, EventKind.OPENED, first=True))
    [pending] = deliveries(tenant, webhook)
    refused = tenant.client.post(f"/v1/webhooks/{webhook['id']}/deliveries/{pending['id']}/replay")
    assert refused.status_code == 409
    dispatch(dispatcher_for(tenant))
    replayed = tenant.client.post(f"/v1/webhooks/{webhook['id']}/deliveries/{pending['id']}/replay")
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["replay_of"] == pending["id"]
    assert replayed.json()["state"] == "pending"
    dispatch(dispatcher_for(tenant))
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == pending["event_id"]
    assert first.body == second.body
    assert json.loads(second.body)["data"]["first"] is True
    assert [d["state"] for d in deliveries(tenant, webhook)] == ["delivered", "delivered"]
    missing = tenant.client.post(f"/v1/webhooks/{webhook['id']}/deliveries/nope/replay")
    assert missing.status_code == 404


def test_the_ajo_format_emits_message_feedback_events(hooks: Tenant):
    tenant = hooks
    webhook = create_webhook(
        tenant,
        "https://hooks.example.com/ajo",
        "excluded",
        "bounced",
        "failed",
        "clicked",
        format="ajo",
    )
    row = message_of(tenant, request_id="req-7")
    enqueue(
        tenant,
        event(row, EventKind.EXCLUDED, reason="suppressed_address"),
        event(row, EventKind.BOUNCED, reason="hard"),
        event(row, EventKind.FAILED, reason="smtp_550"),
        event(row, EventKind.CLICKED, link_index=2, url="https://shop.example.com/a"),
    )
    payloads = {d["event_type"]: d["payload"] for d in deliveries(tenant, webhook)}
    assert set(payloads) == {"excluded", "bounced", "failed", "clicked"}
    for event_type in ("excluded", "bounced", "failed"):
        payload = payloads[event_type]
        assert payload["eventType"] == "message.feedback"
        journey = payload["_experience"]["customerJourneyManagement"]
        execution = journey["messageExecution"]
        assert execution["messageExecutionID"] == row.execution_id
        assert execution["messageID"] == row.id
        assert execution["campaignID"] == row.campaign_id
        assert execution["requestID"] == "req-7"
        assert payload["identityMap"] == {"email": [{"id": row.recipient_id}]}
    excluded = payloads["excluded"]["_experience"]["customerJourneyManagement"]
    assert excluded["messageDeliveryfeedback"] == {
        "feedbackStatus": "exclude",
        "messageExclusion": {"category": "suppression", "reason": "suppressed_address"},
    }
    bounced = payloads["bounced"]["_experience"]["customerJourneyManagement"]
    assert bounced["messageDeliveryfeedback"]["feedbackStatus"] == "bounce"
    assert bounced["messageDeliveryfeedback"]["messageFailure"]["type"] == "Hard"
    failed = payloads["failed"]["_experience"]["customerJourneyManagement"]
    assert failed["messageDeliveryfeedback"]["feedbackStatus"] == "error"
    assert failed["messageDeliveryfeedback"]["messageFailure"]["reason"] == "smtp_550"
    clicked = payloads["clicked"]
    assert clicked["eventType"] == "message.tracking"
    interaction = clicked["_experience"]["customerJourneyManagement"]["messageInteraction"]
    assert interaction == {
        "interactionType": "click",
        "url": "https://shop.example.com/a",
        "linkIndex": 2,
    }


def test_only_subscribed_kinds_of_the_workspace_are_enqueued(hooks: Tenant, other_tenant: Tenant):
    tenant = hooks
    webhook = create_webhook(tenant, "https://hooks.example.com/a", "bounced")
    paused = create_webhook(tenant, "https://hooks.example.com/b", "bounced", enabled=False)
    row = message_of(tenant)
    elsewhere = message_of(other_tenant)
    enqueue(
        tenant,
        event(row, EventKind.SENT),
        event(row, EventKind.TARGETED),
        event(row, EventKind.BOUNCED, reason="soft"),
        event(row, EventKind.BOUNCED, reason="hard", is_proof=True),
        event(elsewhere, EventKind.BOUNCED, reason="hard"),
    )
    [only] = deliveries(tenant, webhook)
    assert only["event_type"] == "bounced"
    assert only["payload"]["data"]["reason"] == "soft"
    assert deliveries(tenant, paused) == []

    # A change made in this process is seen at once (the subscription cache is emptied).
    patched = tenant.client.patch(
        f"/v1/webhooks/{webhook['id']}", json={"event_types": ["sent", "bounced"]}
    )
    assert patched.status_code == 200 and patched.json()["event_types"] == ["bounced", "sent"]
    enqueue(tenant, event(row, EventKind.SENT))
    assert sorted(d["event_type"] for d in deliveries(tenant, webhook)) == ["bounced", "sent"]

    assert tenant.client.delete(f"/v1/webhooks/{webhook['id']}").status_code == 204
    assert tenant.client.get(f"/v1/webhooks/{webhook['id']}").status_code == 404
    enqueue(tenant, event(row, EventKind.BOUNCED, reason="hard"))
    with tenant.runtime.db.read() as conn:
        left = conn.execute(
            sa.select(sa.func.count()).where(
                webhook_deliveries.c.workspace_id == tenant.workspace_id
            )
        ).scalar_one()
    assert left == 0


def test_webhooks_need_admin_and_stay_in_their_workspace(hooks: Tenant, other_tenant: Tenant):
    from tidings.workspaces.schemas import Scope

    webhook = create_webhook(hooks, "https://hooks.example.com/a", "sent")
    reader = hooks.client_with(Scope.REPORTS_READ)
    assert reader.get("/v1/webhooks").status_code == 403
    assert other_tenant.client.get(f"/v1/webhooks/{webhook['id']}").status_code == 404
    listed = hooks.client.get("/v1/webhooks").json()["items"]
    assert [item["id"] for item in listed] == [webhook["id"]]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://10.0.0.8/",
        "gopher://hooks.example.com/",
    ],
)
def test_internal_and_non_http_urls_are_refused_at_create_by_default(hooks: Tenant, url: str):
    response = hooks.client.post("/v1/webhooks", json={"url": url, "event_types": ["sent"]})
    assert response.status_code == 422, response.text
    assert problem_fields(response) == ["url"]
    webhook = create_webhook(hooks, "https://hooks.example.com/a", "sent")
    patched = hooks.client.patch(f"/v1/webhooks/{webhook['id']}", json={"url": url})
    assert patched.status_code == 422
    assert problem_fields(patched) == ["url"]


def test_a_name_resolving_to_loopback_is_refused_at_delivery(hooks: Tenant, receiver: Receiver):
    tenant = hooks
    port = receiver.server.server_address[1]
    webhook = create_webhook(tenant, f"http://localhost:{port}/hooks", "sent")
    enqueue(tenant, event(message_of(tenant), EventKind.SENT))
    dispatch(dispatcher_for(tenant), rounds=1)
    assert receiver.received == []
    [logged] = deliveries(tenant, webhook)
    assert logged["state"] == "pending" and logged["attempts"] == 1
    assert logged["last_status"] is None
    assert "refused" in logged["last_error"] and "localhost" in logged["last_error"]
    assert "127.0.0.1" in logged["last_error"] or "::1" in logged["last_error"]


def test_the_operator_setting_allows_loopback(
    hooks: Tenant, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
):
    refused = hooks.client.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["sent"]})
    assert refused.status_code == 422
    monkeypatch.setattr(hooks.runtime.settings, "webhook_allow_private", True)
    webhook = create_webhook(hooks, receiver.url, "sent")
    enqueue(hooks, event(message_of(hooks), EventKind.SENT))
    dispatch(dispatcher_for(hooks))
    [request] = receiver.received
    assert signing.verify(webhook["secret"], request.headers, request.body)


def test_the_worker_loop_delivers_webhooks(hooks: Tenant):
    tenant = hooks
    create_webhook(tenant, "https://hooks.example.com/worker", "sent")
    enqueue(tenant, event(message_of(tenant), EventKind.SENT))
    sender = RecordingSender()
    adapter = RecordingAdapter()
    worker = Worker(tenant.runtime, {channel: adapter for channel in Channel}, sender)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        for _ in range(200):
            if any(r.url == "https://hooks.example.com/worker" for r in sender.sent):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(run())
    assert [r.url for r in sender.sent if r.url.endswith("/worker")] == [
        "https://hooks.example.com/worker"
    ]
    assert sender.closed


def test_a_message_sent_by_the_worker_reaches_the_receiver(
    loopback_allowed: Tenant, receiver: Receiver
):
    tenant = loopback_allowed
    webhook = create_webhook(tenant, receiver.url, "sent", "failed")
    campaign = live_campaign(tenant)
    execution_id = trigger(
        tenant, campaign, recipient("ada@example.com"), recipient("bob@example.com")
    )
    adapter = RecordingAdapter()
    adapter.fail("bob@example.com", permanent())
    drain(deliverer_for(tenant.runtime, adapter))
    assert len(adapter.sent) == 1
    dispatch(dispatcher_for(tenant))
    payloads = {json.loads(r.body)["type"]: json.loads(r.body)["data"] for r in receiver.received}
    assert set(payloads) == {"message.sent", "message.failed"}
    assert payloads["message.sent"]["recipient"]["id"] == "ada@example.com"
    assert payloads["message.sent"]["execution_id"] == execution_id
    assert payloads["message.failed"]["recipient"]["id"] == "bob@example.com"
    assert payloads["message.failed"]["reason"] == "smtp_550"
    for request in receiver.received:
        signing.verify(webhook["secret"], request.headers, request.body)
    assert {d["state"] for d in deliveries(tenant, webhook)} == {"delivered"}


def test_erasure_and_retention_remove_deliveries_naming_a_recipient(hooks: Tenant):
    tenant = hooks
    webhook = create_webhook(tenant, "https://hooks.example.com/a", "sent", "delivered")
    kept, erased = message_of(tenant, "kept@example.com"), message_of(tenant, "gone@example.com")
    enqueue(tenant, event(kept, EventKind.SENT), event(erased, EventKind.SENT))
    enqueue(tenant, event(erased, EventKind.DELIVERED))
    # Erasing the person (the API's right to be forgotten) takes their deliveries with it.
    response = tenant.client.delete("/v1/profiles/email/gone@example.com")
    assert response.status_code == 204, response.text
    [left] = deliveries(tenant, webhook)
    assert left["message_id"] == kept.id

    dispatch(WebhookDispatcher(tenant.runtime.db, RecordingSender()))
    with tenant.runtime.db.write() as conn:
        assert service.purge_finished(conn, utcnow() - timedelta(days=1)) == 0
        assert service.purge_finished(conn, utcnow() + timedelta(seconds=1)) >= 1
    assert deliveries(tenant, webhook) == []
