"""SendGrid's Event Webhook: ECDSA signature verification, and events read into feedback.

SendGrid signs `timestamp + raw body` with ECDSA (P-256, SHA-256), sending the base64 DER
signature in X-Twilio-Email-Event-Webhook-Signature and the timestamp in
X-Twilio-Email-Event-Webhook-Timestamp; the verification key is the base64 DER public key the
SendGrid console shows (TIDINGS_SENDGRID_WEBHOOK_PUBLIC_KEY).

Events: `bounce` is a hard bounce (its `type: blocked`, or a 4.x.x status, a soft one),
`dropped` a hard bounce when SendGrid dropped the address as bounced or invalid and a complaint
when it was a spam reporter, `deferred` a delay, `delivered` a delivery, `spamreport` a
complaint, `unsubscribe` and `group_unsubscribe` an unsubscribe. Others (processed, open,
click) carry nothing for Tidings.

Mail Tidings sends through SendGrid's SMTP relay carries no custom args: an event is tied to
its message by `smtp-id` (the Message-ID Tidings wrote), else by `sg_message_id` (whose part
before `.filter` is the id the relay answered with, Tidings' provider_message_id), else by
address (see service.find_message).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from tidings.errors import InvalidInput, PermissionDenied
from tidings.feedback.events import (
    FeedbackEvent,
    FeedbackKind,
    FeedbackSource,
    clip,
    event_key,
    message_ref_from_message_id,
)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
_STATUS = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")
_DROPPED_AS_BOUNCED = ("bounced address", "invalid")
_DROPPED_AS_COMPLAINT = ("spam reporting address",)


def public_key(configured: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER, PEM armour tolerated)."""
    text = "".join(line for line in configured.strip().splitlines() if not line.startswith("-----"))
    try:
        key = load_der_public_key(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, UnsupportedAlgorithm):
        raise ValueError("the SendGrid webhook public key is not a base64 DER key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the SendGrid webhook public key is not an ECDSA key")
    return key


def verify(key: ec.EllipticCurvePublicKey, signature: str, timestamp: str, body: bytes) -> None:
    """Raises PermissionDenied unless `signature` signs `timestamp + body` with `key`."""
    try:
        der = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise PermissionDenied("the SendGrid signature is not base64") from None
    try:
        key.verify(der, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise PermissionDenied("the SendGrid signature does not verify") from None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _kind(event: Mapping[str, Any]) -> FeedbackKind | None:
    name = event.get("event")
    if name == "bounce":
        status = _STATUS.search(str(event.get("status") or ""))
        if event.get("type") == "blocked" or (status is not None and status.group(1) == "4"):
            return FeedbackKind.SOFT_BOUNCE
        return FeedbackKind.HARD_BOUNCE
    if name == "dropped":
        reason = str(event.get("reason") or "").lower()
        if any(word in reason for word in _DROPPED_AS_BOUNCED):
            return FeedbackKind.HARD_BOUNCE
        if any(word in reason for word in _DROPPED_AS_COMPLAINT):
            return FeedbackKind.COMPLAINT
        return None
    return {
        "deferred": FeedbackKind.DELAYED,
        "delivered": FeedbackKind.DELIVERED,
        "spamreport": FeedbackKind.COMPLAINT,
        "unsubscribe": FeedbackKind.UNSUBSCRIBE,
        "group_unsubscribe": FeedbackKind.UNSUBSCRIBE,
    }.get(str(name))


def parse_events(payload: Any) -> list[FeedbackEvent]:
    """The feedback in an Event Webhook body (a JSON array of events)."""
    if not isinstance(payload, list):
        raise InvalidInput.on("body", "must be a JSON array of SendGrid events")
    events: list[FeedbackEvent] = []
    for item in payload:
        if not isinstance(item, Mapping):
            continue
        kind = _kind(item)
        if kind is None:
            continue
        recipient = _text(item.get("email"))
        sg_message_id = _text(item.get("sg_message_id"))
        timestamp = item.get("timestamp")
        occurred_at = (
            datetime.fromtimestamp(timestamp, UTC)
            if isinstance(timestamp, int | float) and 0 < timestamp < 1e11
            else None
        )
        status = _STATUS.search(str(item.get("status") or ""))
        events.append(
            FeedbackEvent(
                kind=kind,
                source=FeedbackSource.SENDGRID,
                event_id=event_key(
                    _text(item.get("sg_event_id"))
                    or f"{sg_message_id}|{item.get('event')}|{timestamp}",
                    recipient,
                ),
                recipient=recipient,
                message_ref=message_ref_from_message_id(_text(item.get("smtp-id"))),
                provider_message_id=sg_message_id.split(".filter")[0] if sg_message_id else None,
                status=status.group(0) if status else None,
                detail=clip(_text(item.get("reason")) or _text(item.get("response"))),
                occurred_at=occurred_at,
            )
        )
    return events
