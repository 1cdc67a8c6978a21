"""The push adapter against loopback FCM (HTTP/1.1, OAuth2) and APNs (HTTP/2) servers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from tests.conftest import Tenant
from tests.integration.helpers import create_configuration
from tests.support.push_fakes import FCM_BAD_TOKEN, FCM_UNREGISTERED, ApnsFake, FcmFake
from tidings.channels.adapters import Accepted, OutboundMessage, SendFailed, SendOutcome
from tidings.channels.push.adapter import DatabaseInvalidTokens, PushAdapter
from tidings.delivery.deliverer import Deliverer
from tidings.executions.models import messages
from tidings.runtime import Runtime
from tidings.vocabulary import Channel

pytestmark = pytest.mark.integration

T = TypeVar("T")

CONTENT = {
    "title": "Your order shipped",
    "body": "It arrives Tuesday",
    "data": {"order": "A-1"},
    "deeplink": "myapp://orders/A-1",
    "badge": 3,
    "sound": "default",
}


def message(settings: dict[str, Any], token: str, **content: Any) -> OutboundMessage:
    return OutboundMessage(
        message_id=str(uuid.uuid4()),
        to=token,
        content={**CONTENT, **content},
        settings=settings,
    )


def with_adapter(
    fakes: dict[str, str], use: Callable[[PushAdapter], Awaitable[T]], **options: Any
) -> T:
    async def main() -> T:
        adapter = PushAdapter(
            fcm_api_base=fakes.get("fcm", "http://127.0.0.1:9"),
            apns_api_base=fakes.get("apns"),
            **options,
        )
        try:
            return await use(adapter)
        finally:
            await adapter.close()

    return asyncio.run(main())


def send(fakes: dict[str, str], batch: list[OutboundMessage], **options: Any) -> list[SendOutcome]:
    return with_adapter(fakes, lambda adapter: adapter.send(batch), **options)


class RecordingTokens:
    def __init__(self) -> None:
        self.removed: list[tuple[str, str | None]] = []

    async def remove(self, tokens: Any) -> None:
        self.removed.extend((token.token, token.app_id) for token in tokens)


# ---------------------------------------------------------------- FCM


def test_fcm_mints_one_token_for_many_sends_and_sends_the_v1_message():
    with FcmFake() as fcm:
        batch = [message(fcm.settings(), f"device-{n}") for n in range(40)]
        outcomes = send({"fcm": fcm.url}, batch)
        assert [type(o) for o in outcomes] == [Accepted] * 40
        assert fcm.token_requests == 1
        assert {o.provider_message_id for o in outcomes if isinstance(o, Accepted)} == {
            f"projects/tidings-test/messages/0:{n}" for n in range(1, 41)
        }
        sent = next(m for m in fcm.received if m["token"] == "device-0")
        assert sent == {
            "token": "device-0",
            "notification": {"title": "Your order shipped", "body": "It arrives Tuesday"},
            "data": {"order": "A-1", "deeplink": "myapp://orders/A-1"},
            "android": {"notification": {"sound": "default", "notification_count": 3}},
            "apns": {"payload": {"aps": {"badge": 3, "sound": "default"}}},
        }


def test_fcm_keeps_its_token_across_batches_and_mints_again_when_refused():
    with FcmFake() as fcm:

        async def use(adapter: PushAdapter) -> list[SendOutcome]:
            first = await adapter.send([message(fcm.settings(), "a")])
            second = await adapter.send([message(fcm.settings(), "b")])
            fcm.revoked.update(fcm.issued)  # the next send is refused 401 once
            third = await adapter.send([message(fcm.settings(), "c")])
            return [*first, *second, *third]

        outcomes = with_adapter({"fcm": fcm.url}, use)
        assert all(isinstance(o, Accepted) for o in outcomes)
        assert fcm.token_requests == 2


def test_fcm_mints_again_near_expiry():
    with FcmFake(expires_in=200) as fcm:  # inside the five-minute margin: never reused
        send({"fcm": fcm.url}, [message(fcm.settings(), "a")])

        async def twice(adapter: PushAdapter) -> list[SendOutcome]:
            return [
                *(await adapter.send([message(fcm.settings(), "a")])),
                *(await adapter.send([message(fcm.settings(), "b")])),
            ]

        with_adapter({"fcm": fcm.url}, twice)
        assert fcm.token_requests == 3


def test_fcm_classifies_invalid_tokens_transient_and_permanent_errors():
    with FcmFake() as fcm:
        fcm.answers["gone"] = FCM_UNREGISTERED
        fcm.answers["garbled"] = FCM_BAD_TOKEN
        fcm.answers["busy"] = (
            503,
            {"error": {"code": 503, "status": "UNAVAILABLE", "message": "later"}},
            {"Retry-After": "7"},
        )
        fcm.answers["quota"] = (
            429,
            {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow down"}},
            {"Retry-After": "30"},
        )
        fcm.answers["other-app"] = (
            403,
            {
                "error": {
                    "code": 403,
                    "status": "PERMISSION_DENIED",
                    "message": "SenderId mismatch",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                            "errorCode": "SENDER_ID_MISMATCH",
                        }
                    ],
                }
            },
            {},
        )
        tokens = RecordingTokens()
        settings = fcm.settings()
        names = ["gone", "garbled", "busy", "quota", "other-app", "fine"]
        outcomes = send(
            {"fcm": fcm.url},
            [message(settings, name) for name in names],
            invalid_tokens=tokens,
        )
        by_name = dict(zip(names, outcomes, strict=True))
        for name in ("gone", "garbled"):
            failed = by_name[name]
            assert isinstance(failed, SendFailed)
            assert (failed.reason, failed.retryable) == ("invalid_token", False)
        busy, quota = by_name["busy"], by_name["quota"]
        assert isinstance(busy, SendFailed) and isinstance(quota, SendFailed)
        assert (busy.reason, busy.retryable, busy.retry_after) == ("fcm_unavailable", True, 7.0)
        assert (quota.retryable, quota.retry_after) == (True, 30.0)
        mismatch = by_name["other-app"]
        assert isinstance(mismatch, SendFailed)
        assert (mismatch.reason, mismatch.retryable) == ("fcm_sender_id_mismatch", False)
        assert isinstance(by_name["fine"], Accepted)
        assert sorted(tokens.removed) == [
            ("garbled", "com.example.app"),
            ("gone", "com.example.app"),
        ]


def test_fcm_refused_credentials_and_payload_too_large_are_permanent():
    with FcmFake() as fcm:
        other = FcmFake()  # same account name, another key: Google refuses the signature
        settings = {**fcm.settings(), "fcm_service_account_json": other.service_account_json}
        settings["fcm_service_account_json"] = settings["fcm_service_account_json"].replace(
            other.url, fcm.url
        )
        refused, too_large = send(
            {"fcm": fcm.url},
            [
                message(settings, "a"),
                message(fcm.settings(), "b", data={"blob": "x" * 4100}),
            ],
        )
        other.server.server_close()
        assert isinstance(refused, SendFailed)
        assert (refused.reason, refused.retryable) == ("provider_auth_failed", False)
        assert "invalid_grant" in refused.detail
        assert isinstance(too_large, SendFailed)
        assert (too_large.reason, too_large.retryable) == ("payload_too_large", False)
        assert fcm.received == []


def test_a_token_endpoint_that_is_down_fails_the_batch_fast_and_transiently():
    with FcmFake() as fcm:
        settings = fcm.settings()
        settings["fcm_service_account_json"] = settings["fcm_service_account_json"].replace(
            f"{fcm.url}/token", "http://127.0.0.1:9/token"
        )
        outcomes = send({"fcm": fcm.url}, [message(settings, f"d{n}") for n in range(5)])
        assert {(o.reason, o.retryable) for o in outcomes if isinstance(o, SendFailed)} == {
            ("connection_error", True)
        }
        assert len(outcomes) == 5


# ---------------------------------------------------------------- APNs


def test_apns_sends_over_http2_with_one_provider_token():
    with ApnsFake() as apns:
        batch = [message(apns.settings(), f"{n:064x}") for n in range(30)]
        outcomes = send({"apns": apns.url}, batch)
        assert all(isinstance(o, Accepted) for o in outcomes)
        # The apns-id APNs echoes is the message's own id.
        assert [o.provider_message_id for o in outcomes] == [m.message_id for m in batch]
        assert len(apns.provider_tokens) == 1
        assert apns.connections == 1  # streams of one HTTP/2 connection
        first = next(r for r in apns.received if r.token == f"{0:064x}")
        assert first.payload == {
            "order": "A-1",
            "deeplink": "myapp://orders/A-1",
            "aps": {
                "alert": {"title": "Your order shipped", "body": "It arrives Tuesday"},
                "badge": 3,
                "sound": "default",
            },
        }
        assert first.headers["apns-priority"] == "10"
        assert first.headers["apns-topic"] == "com.example.app"


def test_apns_classifies_and_refreshes_an_expired_provider_token():
    with ApnsFake() as apns:
        apns.answers["gone"] = (410, {"reason": "Unregistered", "timestamp": 1}, {})
        apns.answers["bad"] = (400, {"reason": "BadDeviceToken"}, {})
        apns.answers["busy"] = (503, {"reason": "ServiceUnavailable"}, {"retry-after": "12"})
        apns.answers["throttled"] = (429, {"reason": "TooManyRequests"}, {})
        apns.answers["topic"] = (400, {"reason": "DeviceTokenNotForTopic"}, {})
        tokens = RecordingTokens()
        settings = apns.settings()

        async def use(adapter: PushAdapter) -> list[SendOutcome]:
            first = await adapter.send([message(settings, "fine")])
            apns.expired.update(apns.provider_tokens)
            names = ["gone", "bad", "busy", "throttled", "topic", "fine"]
            return [*first, *(await adapter.send([message(settings, n) for n in names]))]

        fine, gone, bad, busy, throttled, topic, fine_again = with_adapter(
            {"apns": apns.url}, use, invalid_tokens=tokens
        )
        assert isinstance(fine, Accepted) and isinstance(fine_again, Accepted)
        assert len(apns.provider_tokens) == 2  # expired once, minted again once
        for failed in (gone, bad):
            assert isinstance(failed, SendFailed)
            assert (failed.reason, failed.retryable) == ("invalid_token", False)
        assert isinstance(busy, SendFailed)
        assert (busy.reason, busy.retryable, busy.retry_after) == (
            "apns_service_unavailable",
            True,
            12.0,
        )
        assert isinstance(throttled, SendFailed) and throttled.retryable
        assert isinstance(topic, SendFailed)
        assert (topic.reason, topic.retryable) == ("apns_device_token_not_for_topic", False)
        assert sorted(tokens.removed) == [("bad", "com.example.app"), ("gone", "com.example.app")]


def test_apns_payload_too_large_is_refused_before_sending():
    with ApnsFake() as apns:
        [outcome] = send({"apns": apns.url}, [message(apns.settings(), "t", body="é" * 2100)])
        assert isinstance(outcome, SendFailed)
        assert (outcome.reason, outcome.retryable) == ("payload_too_large", False)
        assert apns.received == []


def test_an_unreadable_key_is_a_permanent_misconfiguration():
    with ApnsFake() as apns:
        settings = {**apns.settings(), "apns_private_key": "not a key"}
        [outcome] = send({"apns": apns.url}, [message(settings, "t")])
        assert isinstance(outcome, SendFailed)
        assert (outcome.reason, outcome.retryable) == ("provider_misconfigured", False)


# ---------------------------------------------------------------- through delivery


def deliver(runtime: Runtime, adapter_options: dict[str, Any]) -> None:
    async def main() -> None:
        adapter = PushAdapter(invalid_tokens=DatabaseInvalidTokens(runtime.db), **adapter_options)
        deliverer = Deliverer(runtime, {channel: adapter for channel in Channel})
        try:
            for _ in range(20):
                if await deliverer.run_once() == 0:
                    break
        finally:
            await adapter.close()

    asyncio.run(main())


def push_campaign(tenant: Tenant, settings: dict[str, Any]) -> dict[str, Any]:
    configuration = create_configuration(
        tenant.client, category="transactional", channel="push", **settings
    )
    body = {
        "name": "Shipped",
        "category": "transactional",
        "channel": "push",
        "channel_configuration_id": configuration["id"],
        "content": {
            "title": "Order {{ context.order }} shipped",
            "body": "Hi {{ profile.firstName }}",
            "data": {"order": "{{ context.order }}"},
            "badge": 1,
            "sound": "default",
        },
        "audience": {"identity_namespace": "email"},
    }
    campaign = tenant.client.post("/v1/campaigns", json=body).json()
    activated = tenant.client.post(f"/v1/campaigns/{campaign['id']}/activate")
    assert activated.status_code == 200, activated.text
    return campaign


def with_token(tenant: Tenant, email: str, token: str) -> None:
    response = tenant.client.put(
        f"/v1/profiles/email/{email}",
        json={
            "attributes": {"firstName": "Ada"},
            "push_tokens": [{"app_id": "com.example.app", "platform": "android", "token": token}],
        },
    )
    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize("provider", ["fcm", "apns"])
def test_delivery_sends_push_and_removes_a_token_the_provider_refuses(
    tenant: Tenant, provider: str
):
    fake: FcmFake | ApnsFake = FcmFake() if provider == "fcm" else ApnsFake()
    with fake:
        dead = f"dead-{uuid.uuid4().hex}"
        live = f"live-{uuid.uuid4().hex}"
        if isinstance(fake, FcmFake):
            fake.answers[dead] = FCM_UNREGISTERED
        else:
            fake.answers[dead] = (410, {"reason": "Unregistered"}, {})
        campaign = push_campaign(tenant, fake.settings())
        with_token(tenant, "ada@example.com", live)
        with_token(tenant, "bob@example.com", dead)
        response = tenant.client.post(
            "/v1/executions",
            json={
                "campaign_id": campaign["id"],
                "context": {"order": "A-1"},
                "recipients": [
                    {"identity": {"namespace": "email", "id": "ada@example.com"}},
                    {"identity": {"namespace": "email", "id": "bob@example.com"}},
                ],
            },
        )
        assert response.status_code == 202, response.text
        execution = response.json()["execution_id"]
        deliver(tenant.runtime, {f"{provider}_api_base": fake.url})
        with tenant.runtime.db.read() as conn:
            rows = {
                row.recipient_id: row
                for row in conn.execute(
                    messages.select().where(messages.c.execution_id == execution)
                )
            }
        ada, bob = rows["ada@example.com"], rows["bob@example.com"]
        assert (ada.state, bob.state, bob.reason) == ("sent", "failed", "invalid_token")
        assert ada.provider_message_id
        assert tenant.client.get("/v1/profiles/email/bob@example.com/push-tokens").json() == {
            "items": []
        }
        [kept] = tenant.client.get("/v1/profiles/email/ada@example.com/push-tokens").json()["items"]
        assert kept["token"] == live
        if isinstance(fake, FcmFake):
            [sent] = [m for m in fake.received if m["token"] == live]
            assert sent["notification"] == {"title": "Order A-1 shipped", "body": "Hi Ada"}
            assert sent["data"] == {"order": "A-1"}
        else:
            [request] = [r for r in fake.received if r.token == live]
            alert = request.payload["aps"]["alert"]
            assert alert == {"title": "Order A-1 shipped", "body": "Hi Ada"}
            assert request.payload["aps"]["badge"] == 1


def test_configurations_refuse_credentials_that_cannot_sign(tenant: Tenant):
    fcm = FcmFake()
    apns = ApnsFake()
    try:
        for channel_settings, wrong in (
            (fcm.settings(), {"fcm_service_account_json": "{}"}),
            (fcm.settings(), {"fcm_service_account_json": apns.settings()["apns_private_key"]}),
            (apns.settings(), {"apns_private_key": fcm.private_key_pem}),
        ):
            response = tenant.client.post(
                "/v1/channel-configurations",
                json={
                    "name": f"push-{uuid.uuid4().hex[:8]}",
                    "channel": "push",
                    "category": "transactional",
                    "push": {**channel_settings, **wrong},
                },
            )
            assert response.status_code == 422, response.text
        created = create_configuration(
            tenant.client, category="transactional", channel="push", **apns.settings()
        )
        assert created["secrets_set"] == ["apns_private_key"]
        assert "apns_private_key" not in created["push"]
    finally:
        fcm.server.server_close()
        apns.listener.close()
