"""Reads bounce mail into feedback events: RFC 3464 delivery status notifications and RFC 5965
(ARF) complaint reports. Pure: bytes in, events out, nothing stored.

A DSN is a multipart/report (report-type=delivery-status) whose message/delivery-status part
holds one block of per-message fields and one block per recipient (Action, Status,
Final-Recipient, Original-Recipient, Diagnostic-Code). `Action: failed` with a 5.x.x status is
a hard bounce, with a 4.x.x status (an MTA that gave up retrying) a soft one; `delayed` is a
warning (logged, not counted: the remote MTA still tries); `delivered` a delivery; `relayed`
and `expanded` say nothing usable. An ARF report (report-type=feedback-report) with
`Feedback-Type: abuse` (or `fraud`) is a complaint.

The message reported on is named by the Message-ID of the returned original (its
text/rfc822-headers or message/rfc822 part), which Tidings writes as `<message_id@domain>`,
or else by a VERP envelope recipient `bounces+<message_id>@domain`.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Sequence
from email.message import Message
from email.parser import HeaderParser

from tidings.feedback.events import (
    FeedbackEvent,
    FeedbackKind,
    FeedbackSource,
    clip,
    event_key,
    message_ref_from_message_id,
    message_ref_from_verp,
)

__all__ = ["parse_report"]

_STATUS = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")
_ANGLE_ADDRESS = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
_COMPLAINT_TYPES = frozenset({"abuse", "fraud"})
# Larger reports are refused by the mailbox before they get here; this bounds the parse too.
MAX_REPORT_BYTES = 10 * 1024 * 1024


def parse_report(raw: bytes, *, envelope_recipients: Sequence[str] = ()) -> list[FeedbackEvent]:
    """The events a bounce or complaint report carries, one per recipient; [] for mail that is
    no report Tidings reads (an auto-reply, a human's answer)."""
    if len(raw) > MAX_REPORT_BYTES:
        return []
    # compat32: the only policy that parses message/delivery-status into its field blocks.
    report = email.message_from_bytes(raw, policy=email.policy.compat32)
    if report.get_content_type() != "multipart/report":
        return []
    payload = report.get_payload()
    if not isinstance(payload, list):
        return []
    parts = [part for part in payload if isinstance(part, Message)]
    verp = next(filter(None, map(message_ref_from_verp, envelope_recipients)), None)
    reference = report.get("Message-ID") or hashlib.sha256(raw).hexdigest()
    original = _original_headers(parts)
    original_ref = message_ref_from_message_id(original.get("Message-ID") if original else None)
    message_ref = original_ref or verp
    for part in parts:
        content_type = part.get_content_type()
        if content_type == "message/delivery-status":
            return _delivery_status(part, str(reference), message_ref)
        if content_type == "message/feedback-report":
            return _feedback_report(part, str(reference), message_ref, original)
    return []


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, str):
        # A part the parser left as text (e.g. base64-encoded): its blocks by blank lines.
        text = part.get_payload(decode=True)
        decoded = text.decode("utf-8", "replace") if isinstance(text, bytes) else payload
        return [
            HeaderParser().parsestr(block.strip() + "\n")
            for block in re.split(r"\r?\n\s*\r?\n", decoded)
            if block.strip()
        ]
    return []


def _original_headers(parts: list[Message]) -> Message | None:
    """The header block of the returned original message, when the report has one."""
    for part in parts:
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
        elif content_type == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return HeaderParser().parsestr(payload.decode("utf-8", "replace"))
    return None


def _address(field: str | None) -> str | None:
    """The address of a recipient field: `rfc822; ada@example.org` or `<ada@example.org>`."""
    if not field:
        return None
    value = " ".join(field.split())
    kind, semicolon, rest = value.partition(";")
    if semicolon:
        if kind.strip().lower() != "rfc822":
            return None
        value = rest
    value = value.strip()
    found = _ANGLE_ADDRESS.search(value)
    if found:
        value = found.group(1)
    return value if "@" in value and " " not in value else None


def _event_id(reference: str, recipient: str | None, kind: FeedbackKind) -> str:
    return event_key(reference, recipient, kind.value)


def _classify(action: str, status: str | None, diagnostic: str | None) -> FeedbackKind | None:
    if action == "delivered":
        return FeedbackKind.DELIVERED
    if action == "delayed":
        return FeedbackKind.DELAYED
    if action != "failed":
        return None  # relayed, expanded: no statement about delivery
    code = _STATUS.search(status or "") or _STATUS.search(diagnostic or "")
    if code is not None and code.group(1) == "4":
        return FeedbackKind.SOFT_BOUNCE
    return FeedbackKind.HARD_BOUNCE


def _delivery_status(part: Message, reference: str, message_ref: str | None) -> list[FeedbackEvent]:
    events: list[FeedbackEvent] = []
    # The first block holds per-message fields; recipients' blocks follow.
    for block in _blocks(part)[1:]:
        action = str(block.get("Action", "")).strip().lower()
        status = block.get("Status")
        diagnostic = block.get("Diagnostic-Code")
        kind = _classify(action, status, diagnostic)
        if kind is None:
            continue
        recipient = _address(block.get("Original-Recipient")) or _address(
            block.get("Final-Recipient")
        )
        code = _STATUS.search(str(status or ""))
        events.append(
            FeedbackEvent(
                kind=kind,
                source=FeedbackSource.DSN,
                event_id=_event_id(reference, recipient, kind),
                recipient=recipient,
                message_ref=message_ref,
                status=code.group(0) if code else None,
                detail=clip(str(diagnostic) if diagnostic else None),
            )
        )
    return events


def _feedback_report(
    part: Message, reference: str, message_ref: str | None, original: Message | None
) -> list[FeedbackEvent]:
    blocks = _blocks(part)
    if not blocks:
        return []
    fields = blocks[0]
    feedback_type = str(fields.get("Feedback-Type", "")).strip().lower()
    if feedback_type not in _COMPLAINT_TYPES:
        return []  # not-spam, auth-failure, virus, other: nothing to act on
    # Reporters often redact the recipient; the original's To then names it.
    recipients = [_address(value) for value in fields.get_all("Original-Rcpt-To") or []]
    if not any(recipients) and original is not None:
        recipients = [_address(original.get("To"))]
    kind = FeedbackKind.COMPLAINT
    return [
        FeedbackEvent(
            kind=kind,
            source=FeedbackSource.ARF,
            event_id=_event_id(reference, recipient, kind),
            recipient=recipient,
            message_ref=message_ref,
            detail=clip(f"feedback-type {feedback_type}"),
        )
        for recipient in (recipients or [None])
    ]
