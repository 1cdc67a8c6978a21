"""Reads Amazon SES notifications (delivered by SNS) into feedback events. Pure.

Both of SES's shapes are read: feedback notifications (`notificationType`) and event
publishing through a configuration set (`eventType`). Bounce `Permanent` is a hard bounce,
`Transient` and `Undetermined` soft ones; Complaint (unless its feedback type is `not-spam`)
a complaint; Delivery a delivery; DeliveryDelay a delay. Other types (Send, Open, Click...)
carry nothing for Tidings.

The message is named by the Message-ID Tidings wrote (`mail.commonHeaders.messageId`, or the
`Message-ID` among `mail.headers`), else SES's own id (`mail.messageId`, which SES's SMTP
interface answers with and Tidings keeps as provider_message_id), else the recipient.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from tidings.errors import InvalidInput
from tidings.feedback.events import (
    FeedbackEvent,
    FeedbackKind,
    FeedbackSource,
    clip,
    event_key,
    message_ref_from_message_id,
)


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _message_ref(mail: Mapping[str, Any]) -> str | None:
    ref = message_ref_from_message_id(_text(_dict(mail.get("commonHeaders")).get("messageId")))
    if ref:
        return ref
    for header in _list(mail.get("headers")):
        header = _dict(header)
        if str(header.get("name", "")).lower() == "message-id":
            return message_ref_from_message_id(_text(header.get("value")))
    return None


def parse_notification(envelope: Mapping[str, Any]) -> list[FeedbackEvent]:
    """The events of an SNS Notification whose Message is an SES notification."""
    try:
        message = orjson.loads(str(envelope.get("Message", "")))
    except orjson.JSONDecodeError:
        raise InvalidInput.on("Message", "is not an Amazon SES notification (not JSON)") from None
    message = _dict(message)
    kind = _text(message.get("notificationType")) or _text(message.get("eventType"))
    mail = _dict(message.get("mail"))
    reference = _text(envelope.get("MessageId"))
    message_ref = _message_ref(mail)
    provider_message_id = _text(mail.get("messageId"))
    events: list[FeedbackEvent] = []

    def add(kind: FeedbackKind, entry: Any, detail: Any, status: Any, section: Any) -> None:
        section = _dict(section)
        # Bounces and complaints list objects, deliveries bare addresses.
        address = entry.get("emailAddress") if isinstance(entry, Mapping) else entry
        recipient = _text(address)
        # feedbackId stays the same when SES notifies the same bounce on several topics.
        base = _text(section.get("feedbackId")) or reference
        events.append(
            FeedbackEvent(
                kind=kind,
                source=FeedbackSource.SES,
                event_id=event_key(base, recipient, kind.value),
                recipient=recipient,
                status=_text(status),
                detail=clip(_text(detail)),
                occurred_at=_time(section.get("timestamp")),
                message_ref=message_ref,
                provider_message_id=provider_message_id,
            )
        )

    if kind == "Bounce":
        bounce = _dict(message.get("bounce"))
        hard = bounce.get("bounceType") == "Permanent"
        bounce_kind = FeedbackKind.HARD_BOUNCE if hard else FeedbackKind.SOFT_BOUNCE
        for entry in _list(bounce.get("bouncedRecipients")):
            entry = _dict(entry)
            detail = _text(entry.get("diagnosticCode")) or (
                f"{bounce.get('bounceType')}/{bounce.get('bounceSubType')}"
            )
            add(bounce_kind, entry, detail, entry.get("status"), bounce)
    elif kind == "Complaint":
        complaint = _dict(message.get("complaint"))
        feedback_type = _text(complaint.get("complaintFeedbackType"))
        if feedback_type != "not-spam":
            for entry in _list(complaint.get("complainedRecipients")):
                add(
                    FeedbackKind.COMPLAINT,
                    entry,
                    f"feedback-type {feedback_type or 'unknown'}",
                    None,
                    complaint,
                )
    elif kind == "Delivery":
        delivery = _dict(message.get("delivery"))
        for recipient in _list(delivery.get("recipients")):
            add(FeedbackKind.DELIVERED, recipient, delivery.get("smtpResponse"), None, delivery)
    elif kind == "DeliveryDelay":
        delay = _dict(message.get("deliveryDelay"))
        for entry in _list(delay.get("delayedRecipients")):
            entry = _dict(entry)
            add(
                FeedbackKind.DELAYED, entry, entry.get("diagnosticCode"), entry.get("status"), delay
            )
    return events
