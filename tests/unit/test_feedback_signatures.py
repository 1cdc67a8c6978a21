"""Webhook signatures: SNS's canonical string and RSA signatures (versions 1 and 2), and
SendGrid's ECDSA signature over timestamp and body."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.sns import CERT_PATH, TOPIC, make_credentials, sign
from tidings.config import Settings
from tidings.errors import PermissionDenied, Unavailable
from tidings.feedback import sendgrid
from tidings.feedback.api import FeedbackPorts
from tidings.feedback.sns import HttpResponse, SnsVerifier, canonical_string

BASE = "https://sns.eu-west-1.amazonaws.com"
CREDENTIALS = make_credentials()


class MemoryHttp:
    """An HttpPort double: answers from a dict, records what was asked."""

    def __init__(self, pages: dict[str, tuple[int, bytes]]) -> None:
        self.pages = pages
        self.asked: list[str] = []

    async def get(self, url: str, *, max_bytes: int) -> HttpResponse:
        self.asked.append(url)
        status, body = self.pages.get(url, (404, b""))
        if len(body) > max_bytes:
            raise ValueError("too large")
        return HttpResponse(status, body)


def notification(**extra: Any) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Subject": "My First Message",
        "Message": "Hello world!",
        "Timestamp": "2012-05-02T00:54:06.655Z",
        "SigningCertURL": BASE + CERT_PATH,
        **extra,
    }


def test_canonical_strings_follow_the_key_lists():
    assert canonical_string(notification()) == (
        b"Message\nHello world!\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n"
        b"Subject\nMy First Message\nTimestamp\n2012-05-02T00:54:06.655Z\n"
        b"TopicArn\n" + TOPIC.encode() + b"\nType\nNotification\n"
    )
    without_subject = notification()
    del without_subject["Subject"]
    assert b"Subject" not in canonical_string(without_subject)
    subscription = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "m",
        "Token": "t",
        "TopicArn": "a",
        "Message": "x",
        "SubscribeURL": "u",
        "Timestamp": "s",
        "SigningCertURL": "ignored",
    }
    assert canonical_string(subscription) == (
        b"Message\nx\nMessageId\nm\nSubscribeURL\nu\nTimestamp\ns\nToken\nt\nTopicArn\na\n"
        b"Type\nSubscriptionConfirmation\n"
    )


def verifier(**options: Any) -> tuple[SnsVerifier, MemoryHttp]:
    http = MemoryHttp({BASE + CERT_PATH: (200, CREDENTIALS.pem)})
    return SnsVerifier(http, **options), http


@pytest.mark.parametrize("version", ["1", "2"])
def test_signatures_of_both_versions_verify_and_the_certificate_is_cached(version: str):
    sns, http = verifier()
    asyncio.run(sns.verify(sign(notification(), CREDENTIALS.key, version)))
    asyncio.run(sns.verify(sign(notification(Message="again"), CREDENTIALS.key, version)))
    assert http.asked == [BASE + CERT_PATH]


@pytest.mark.parametrize(
    "change",
    [
        {"Message": "tampered"},
        {"SignatureVersion": "3"},
        {"Signature": "not base64!"},
        {"SigningCertURL": "http://sns.eu-west-1.amazonaws.com/cert.pem"},
        {"SigningCertURL": "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem"},
        {"SigningCertURL": "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem"},
        {"SigningCertURL": "https://user@sns.eu-west-1.amazonaws.com/cert.pem"},
        {"SigningCertURL": "https://sns.eu-west-1.amazonaws.com/cert.txt"},
    ],
)
def test_anything_else_is_refused(change: dict[str, str]):
    sns, _ = verifier()
    signed = {**sign(notification(), CREDENTIALS.key), **change}
    with pytest.raises(PermissionDenied):
        asyncio.run(sns.verify(signed))


def test_another_key_and_other_topics_are_refused():
    sns, _ = verifier()
    with pytest.raises(PermissionDenied):
        asyncio.run(sns.verify(sign(notification(), make_credentials().key)))
    limited, _ = verifier(topic_arns=frozenset({"arn:aws:sns:eu-west-1:1:other"}))
    with pytest.raises(PermissionDenied):
        asyncio.run(limited.verify(sign(notification(), CREDENTIALS.key)))


@pytest.mark.parametrize(
    ("setting", "accepted"),
    [("", False), (TOPIC, True), (f"arn:aws:sns:eu-west-1:1:other, {TOPIC}", True), ("*", True)],
)
def test_only_the_topics_the_operator_names_are_taken(setting: str, accepted: bool, tmp_path):
    ports = FeedbackPorts.from_settings(Settings(data_dir=tmp_path, sns_topic_arns=setting))
    sns, _ = verifier(topic_arns=ports.sns.topic_arns)
    signed = sign(notification(), CREDENTIALS.key)
    if accepted:
        asyncio.run(sns.verify(signed))
    else:
        with pytest.raises(PermissionDenied):
            asyncio.run(sns.verify(signed))


def test_an_unreachable_certificate_is_unavailable_not_forbidden():
    sns = SnsVerifier(MemoryHttp({}))
    with pytest.raises(Unavailable):
        asyncio.run(sns.verify(sign(notification(), CREDENTIALS.key)))


def test_confirmation_goes_only_to_sns_hosts():
    sns, http = verifier()
    good = BASE + "/?Action=ConfirmSubscription&Token=t"
    http.pages[good] = (200, b"<ok/>")
    asyncio.run(sns.confirm({"SubscribeURL": good}))
    assert http.asked == [good]
    with pytest.raises(PermissionDenied):
        asyncio.run(sns.confirm({"SubscribeURL": "https://169.254.169.254/latest/meta-data"}))


# ---------------------------------------------------------------- SendGrid


PRIVATE = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(
    PRIVATE.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def signature(timestamp: str, body: bytes) -> str:
    der = PRIVATE.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode()


def test_sendgrid_signatures():
    key = sendgrid.public_key(PUBLIC)
    body = b'[{"event":"delivered"}]'
    sendgrid.verify(key, signature("1700000000", body), "1700000000", body)
    for sig, stamp, payload in [
        (signature("1700000000", body), "1700000001", body),  # another timestamp
        (signature("1700000000", body), "1700000000", body + b" "),  # another body
        ("bm90IGEgc2lnbmF0dXJl", "1700000000", body),  # base64 of no signature
        ("%%%", "1700000000", body),
    ]:
        with pytest.raises(PermissionDenied):
            sendgrid.verify(key, sig, stamp, payload)


def test_sendgrid_keys_are_checked():
    pem = f"-----BEGIN PUBLIC KEY-----\n{PUBLIC}\n-----END PUBLIC KEY-----\n"
    assert sendgrid.public_key(pem).public_numbers() == sendgrid.public_key(PUBLIC).public_numbers()
    rsa_der = CREDENTIALS.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for bad in [
        "not a key",
        base64.b64encode(b"junk").decode(),
        base64.b64encode(rsa_der).decode(),
    ]:
        with pytest.raises(ValueError):
            sendgrid.public_key(bad)
