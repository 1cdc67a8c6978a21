"""Provider webhooks: Amazon SES through SNS, and SendGrid's Event Webhook.

No API key: each request proves its origin by the provider's signature (403 when it does not).
Events about messages Tidings does not know are acknowledged (200) and ignored, so a provider
does not retry them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from tidings.config import Settings
from tidings.errors import InvalidInput, PermissionDenied
from tidings.feedback import sendgrid, service, ses
from tidings.feedback.events import FeedbackEvent
from tidings.feedback.schemas import FeedbackReceipt
from tidings.feedback.sns import NOTIFICATION, HttpxPort, SnsVerifier
from tidings.web import PROBLEM_RESPONSES, runtime_of

router = APIRouter(prefix="/webhooks", tags=["Provider feedback"])
_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: PROBLEM_RESPONSES[status] for status in (403, 422, 503)
}


@dataclass
class FeedbackPorts:
    """What the webhooks verify with; built from the settings once per application (tests
    put their own in app.state.feedback)."""

    sns: SnsVerifier
    sendgrid_key: ec.EllipticCurvePublicKey | None

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedbackPorts:
        # AWS signs every account's topics: unless the operator names theirs (or `*`), no SNS
        # message is taken, or anyone with an AWS account could post signed bounces.
        named = frozenset(arn.strip() for arn in settings.sns_topic_arns.split(",") if arn.strip())
        topics = None if named == {"*"} else named
        key = settings.sendgrid_webhook_public_key
        return cls(
            sns=SnsVerifier(HttpxPort(), host_pattern=settings.sns_host_pattern, topic_arns=topics),
            sendgrid_key=sendgrid.public_key(key) if key else None,
        )


def ports_of(request: Request) -> FeedbackPorts:
    state = request.app.state
    ports: FeedbackPorts | None = getattr(state, "feedback", None)
    if ports is None:
        ports = state.feedback = FeedbackPorts.from_settings(runtime_of(request).settings)
    return ports


def _json(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInput.on("body", "is not JSON") from None


async def _apply(request: Request, events: Sequence[FeedbackEvent]) -> FeedbackReceipt:
    runtime = runtime_of(request)
    results = await run_in_threadpool(
        service.apply_events,
        runtime.db,
        events,
        soft_bounce_threshold=runtime.settings.soft_bounce_threshold,
    )
    counts = Counter(result.outcome for result in results)
    return FeedbackReceipt(
        received=len(events),
        applied=counts[service.Outcome.APPLIED],
        duplicate=counts[service.Outcome.DUPLICATE],
        unmatched=counts[service.Outcome.UNMATCHED],
    )


@router.post(
    "/ses",
    response_model=FeedbackReceipt,
    summary="Amazon SES notifications through an SNS HTTPS subscription",
    responses=_RESPONSES,
)
async def ses_webhook(request: Request) -> FeedbackReceipt:
    """An SNS HTTP(S) delivery. Every message's signature is verified (SignatureVersion 1 or
    2, certificate from Amazon SNS). A SubscriptionConfirmation is confirmed; a Notification
    carrying an SES Bounce, Complaint, Delivery or DeliveryDelay is applied."""
    envelope = _json(await request.body())
    if not isinstance(envelope, dict):
        raise InvalidInput.on("body", "is not an Amazon SNS message")
    sns = ports_of(request).sns
    await sns.verify(envelope)
    kind = envelope.get("Type")
    if kind == "SubscriptionConfirmation":
        await sns.confirm(envelope)
        return FeedbackReceipt(received=0, applied=0, duplicate=0, unmatched=0, confirmed=True)
    if kind != NOTIFICATION:
        return FeedbackReceipt(received=0, applied=0, duplicate=0, unmatched=0)
    return await _apply(request, ses.parse_notification(envelope))


@router.post(
    "/sendgrid",
    response_model=FeedbackReceipt,
    summary="SendGrid's Event Webhook (signed)",
    responses=_RESPONSES,
)
async def sendgrid_webhook(request: Request) -> FeedbackReceipt:
    """A batch of SendGrid events, signed with the Event Webhook's ECDSA key (Signed Event
    Webhook on, key in TIDINGS_SENDGRID_WEBHOOK_PUBLIC_KEY)."""
    key = ports_of(request).sendgrid_key
    if key is None:
        raise PermissionDenied(
            "TIDINGS_SENDGRID_WEBHOOK_PUBLIC_KEY is not set: no event is accepted"
        )
    signature = request.headers.get(sendgrid.SIGNATURE_HEADER)
    timestamp = request.headers.get(sendgrid.TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise PermissionDenied("the request is not signed by SendGrid")
    raw = await request.body()
    sendgrid.verify(key, signature, timestamp, raw)
    return await _apply(request, sendgrid.parse_events(_json(raw)))
