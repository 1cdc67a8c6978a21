"""Bounce and complaint reports read into events: RFC 3464 DSNs, RFC 5965 ARF reports, and
Amazon SES and SendGrid events. Fixtures follow the RFCs' examples and the providers' docs."""

from __future__ import annotations

import json

import pytest

from tidings.errors import InvalidInput
from tidings.feedback import sendgrid, ses
from tidings.feedback.dsn import parse_report
from tidings.feedback.events import (
    FeedbackKind,
    FeedbackSource,
    message_ref_from_message_id,
    message_ref_from_verp,
)

MESSAGE = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


def dsn(*recipient_blocks: str, original: str | None = None, boundary: str = "B1") -> bytes:
    """A Postfix-shaped DSN (RFC 3464 section 6 shows the same structure)."""
    if original is None:
        original = (
            f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            "From: news@example.com\r\nTo: ada@example.org\r\n"
            f"Message-ID: <{MESSAGE}@example.com>\r\nSubject: Sale\r\n\r\n"
        )
    blocks = "\r\n".join(recipient_blocks)
    return (
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        "To: news@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <20260101000000.ABC123@mx.example.net>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f' boundary="{boundary}"\r\n'
        f"\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you.\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\nX-Postfix-Queue-ID: ABC123\r\n"
        "Arrival-Date: Mon,  1 Jan 2026 00:00:00 +0000 (UTC)\r\n\r\n"
        f"{blocks}\r\n{original}--{boundary}--\r\n"
    ).encode()


def block(action: str, status: str, recipient: str = "ada@example.org", **extra: str) -> str:
    lines = [f"Final-Recipient: rfc822; {recipient}", f"Action: {action}", f"Status: {status}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in extra.items()]
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize(
    ("action", "status", "kind"),
    [
        ("failed", "5.1.1", FeedbackKind.HARD_BOUNCE),
        ("failed", "5.7.1 (delivery not authorized)", FeedbackKind.HARD_BOUNCE),
        ("failed", "4.4.7", FeedbackKind.SOFT_BOUNCE),  # gave up retrying: a soft bounce
        ("FAILED", "4.2.2", FeedbackKind.SOFT_BOUNCE),
        ("delayed", "4.4.1", FeedbackKind.DELAYED),
        ("delivered", "2.0.0", FeedbackKind.DELIVERED),
    ],
)
def test_dsn_actions_and_status_classes(action: str, status: str, kind: FeedbackKind):
    diagnostic = "smtp; 550 5.1.1 <ada@example.org>: Recipient address\r\n rejected: unknown"
    [event] = parse_report(dsn(block(action, status, Diagnostic_Code=diagnostic)))
    assert event.kind == kind
    assert event.source == FeedbackSource.DSN
    assert event.recipient == "ada@example.org"
    assert event.message_ref == MESSAGE
    assert event.status == status.split()[0]
    # A folded diagnostic is kept as one line.
    assert event.detail == "smtp; 550 5.1.1 <ada@example.org>: Recipient address rejected: unknown"


def test_dsn_with_several_recipients_and_original_recipient():
    report = dsn(
        block("failed", "5.1.1", Original_Recipient="rfc822;Ada@Example.org"),
        block("relayed", "2.0.0", "bob@example.org"),  # says nothing: skipped
        block("failed", "4.2.2", "eve@example.org"),
    )
    events = parse_report(report)
    assert [(e.kind, e.recipient) for e in events] == [
        (FeedbackKind.HARD_BOUNCE, "Ada@Example.org"),
        (FeedbackKind.SOFT_BOUNCE, "eve@example.org"),
    ]
    assert len({e.event_id for e in events}) == 2
    # The same DSN read again gives the same ids: applying it twice is a no-op.
    assert [e.event_id for e in parse_report(report)] == [e.event_id for e in events]


def test_dsn_with_the_whole_original_as_message_rfc822():
    original = (
        "--B1\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: news@example.com\r\nTo: ada@example.org\r\nMessage-ID: <{MESSAGE}@news.example.com>"
        "\r\nSubject: Sale\r\n\r\nHello\r\n"
    )
    [event] = parse_report(dsn(block("failed", "5.0.0"), original=original))
    assert event.message_ref == MESSAGE


def test_dsn_without_the_original_falls_back_to_verp():
    report = dsn(block("failed", "5.1.1"), original="")
    [event] = parse_report(report)
    assert event.message_ref is None
    [event] = parse_report(report, envelope_recipients=[f"bounces+{MESSAGE}@bounce.example.com"])
    assert event.message_ref == MESSAGE


def test_a_foreign_message_id_names_no_message():
    original = (
        "--B1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "Message-ID: <CAF=abc@mail.gmail.com>\r\n\r\n"
    )
    [event] = parse_report(dsn(block("failed", "5.1.1"), original=original))
    assert event.message_ref is None


@pytest.mark.parametrize(
    "raw",
    [
        b"From: ada@example.org\r\nSubject: Out of office\r\n\r\nI am away.\r\n",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n",
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nbroken",
        b"",
    ],
)
def test_mail_that_is_no_report_gives_no_event(raw: bytes):
    assert parse_report(raw) == []


def arf(feedback_type: str = "abuse", rcpt: str | None = "<ada@example.org>") -> bytes:
    """RFC 5965 appendix B.2's example, addressed to mail Tidings sent."""
    fields = [f"Feedback-Type: {feedback_type}", "User-Agent: SomeGenerator/1.0", "Version: 1"]
    fields.append("Original-Mail-From: <news@example.com>")
    if rcpt:
        fields.append(f"Original-Rcpt-To: {rcpt}")
    return (
        "From: <abusedesk@example.net>\r\nDate: Thu, 8 Mar 2005 17:40:36 EDT\r\n"
        "Subject: FW: Sale\r\nTo: <news@example.com>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report;\r\n boundary="part1"\r\n'
        "\r\n--part1\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--part1\r\nContent-Type: message/feedback-report\r\n\r\n"
        + "\r\n".join(fields)
        + "\r\n\r\n--part1\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
        f"From: <news@example.com>\r\nTo: Ada <ada@example.org>\r\nSubject: Sale\r\n"
        f"Message-ID: <{MESSAGE}@example.com>\r\n\r\nSpam Spam Spam\r\n--part1--\r\n"
    ).encode()


def test_arf_abuse_is_a_complaint():
    [event] = parse_report(arf())
    assert (event.kind, event.source) == (FeedbackKind.COMPLAINT, FeedbackSource.ARF)
    assert (event.recipient, event.message_ref) == ("ada@example.org", MESSAGE)


def test_arf_with_a_redacted_recipient_reads_the_original_to():
    [event] = parse_report(arf(rcpt=None))
    assert event.recipient == "ada@example.org"


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure", "virus"])
def test_arf_reports_other_than_abuse_are_not_complaints(feedback_type: str):
    assert parse_report(arf(feedback_type)) == []


def test_message_ids_and_verp_addresses():
    assert message_ref_from_message_id(f"<{MESSAGE.upper()}@example.com>") == MESSAGE
    assert message_ref_from_message_id(f" <{MESSAGE}@example.com> ") == MESSAGE
    assert message_ref_from_message_id(f"<x{MESSAGE}@example.com>") is None
    assert message_ref_from_message_id(None) is None
    assert message_ref_from_verp(f"<bounces+{MESSAGE}@b.example.com>") == MESSAGE
    assert message_ref_from_verp(f"bounces+{MESSAGE}") is None
    assert message_ref_from_verp("news@example.com") is None


# ---------------------------------------------------------------- Amazon SES


def ses_envelope(message: dict[str, object]) -> dict[str, object]:
    return {"Type": "Notification", "MessageId": "sns-1", "Message": json.dumps(message)}


MAIL = {
    "messageId": "0100018c-ses-id-000000",
    "source": "news@example.com",
    "destination": ["ada@example.org"],
    "commonHeaders": {"messageId": f"<{MESSAGE}@example.com>"},
}


def test_ses_permanent_and_transient_bounces():
    bounce = {
        "notificationType": "Bounce",
        "mail": MAIL,
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "feedbackId": "fb-1",
            "bouncedRecipients": [
                {"emailAddress": "ada@example.org", "status": "5.1.1", "diagnosticCode": "550"},
            ],
        },
    }
    [event] = ses.parse_notification(ses_envelope(bounce))
    assert (event.kind, event.recipient, event.status) == (
        FeedbackKind.HARD_BOUNCE,
        "ada@example.org",
        "5.1.1",
    )
    assert (event.message_ref, event.provider_message_id) == (MESSAGE, MAIL["messageId"])
    bounce["bounce"]["bounceType"] = "Transient"  # type: ignore[index]
    [soft] = ses.parse_notification(ses_envelope(bounce))
    assert soft.kind == FeedbackKind.SOFT_BOUNCE and soft.event_id != event.event_id


def test_ses_complaint_delivery_and_event_publishing_shapes():
    complaint = {
        "eventType": "Complaint",  # a configuration set's event publishing
        "mail": {
            **MAIL,
            "commonHeaders": {},
            "headers": [{"name": "Message-ID", "value": f"<{MESSAGE}@example.com>"}],
        },
        "complaint": {
            "complainedRecipients": [{"emailAddress": "ada@example.org"}],
            "complaintFeedbackType": "abuse",
            "feedbackId": "fb-2",
        },
    }
    [event] = ses.parse_notification(ses_envelope(complaint))
    assert (event.kind, event.message_ref) == (FeedbackKind.COMPLAINT, MESSAGE)
    complaint["complaint"]["complaintFeedbackType"] = "not-spam"  # type: ignore[index]
    assert ses.parse_notification(ses_envelope(complaint)) == []
    delivery = {
        "notificationType": "Delivery",
        "mail": MAIL,
        "delivery": {"recipients": ["ada@example.org"], "smtpResponse": "250 ok"},
    }
    [delivered] = ses.parse_notification(ses_envelope(delivery))
    assert (delivered.kind, delivered.recipient) == (FeedbackKind.DELIVERED, "ada@example.org")
    assert ses.parse_notification(ses_envelope({"eventType": "Open", "mail": MAIL})) == []
    with pytest.raises(InvalidInput):
        ses.parse_notification({"Type": "Notification", "Message": "not json"})


# ---------------------------------------------------------------- SendGrid


def test_sendgrid_events():
    events = sendgrid.parse_events(
        [
            {
                "event": "bounce",
                "email": "a@example.org",
                "sg_event_id": "e1",
                "smtp-id": f"<{MESSAGE}@example.com>",
                "status": "5.1.1",
                "reason": "550 unknown",
                "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
                "timestamp": 1700000000,
            },
            {"event": "bounce", "type": "blocked", "email": "b@example.org", "sg_event_id": "e2"},
            {"event": "bounce", "email": "c@example.org", "status": "4.2.2", "sg_event_id": "e3"},
            {
                "event": "dropped",
                "reason": "Bounced Address",
                "email": "d@x.org",
                "sg_event_id": "e4",
            },
            {
                "event": "dropped",
                "reason": "Spam Reporting Address",
                "email": "e@x.org",
                "sg_event_id": "e5",
            },
            {"event": "dropped", "reason": "Unsubscribed Address", "email": "f@x.org"},
            {"event": "deferred", "email": "g@x.org", "sg_event_id": "e7"},
            {"event": "delivered", "email": "h@x.org", "sg_event_id": "e8"},
            {"event": "spamreport", "email": "i@x.org", "sg_event_id": "e9"},
            {"event": "unsubscribe", "email": "j@x.org", "sg_event_id": "e10"},
            {"event": "open", "email": "k@x.org"},
            "not an event",
        ]
    )
    assert [e.kind for e in events] == [
        FeedbackKind.HARD_BOUNCE,
        FeedbackKind.SOFT_BOUNCE,
        FeedbackKind.SOFT_BOUNCE,
        FeedbackKind.HARD_BOUNCE,
        FeedbackKind.COMPLAINT,
        FeedbackKind.DELAYED,
        FeedbackKind.DELIVERED,
        FeedbackKind.COMPLAINT,
        FeedbackKind.UNSUBSCRIBE,
    ]
    first = events[0]
    assert (first.message_ref, first.provider_message_id) == (MESSAGE, "14c5d75ce93.dfd.64b469")
    assert first.detail == "550 unknown" and first.occurred_at is not None
    with pytest.raises(InvalidInput):
        sendgrid.parse_events({"event": "bounce"})
