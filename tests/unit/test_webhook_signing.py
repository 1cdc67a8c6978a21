"""Standard Webhooks signatures: the spec's published example, rotation, and refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from tidings.webhooks import signing

# The example the Standard Webhooks reference libraries test against.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def spec_headers(signature: str = SPEC_SIGNATURE) -> dict[str, str]:
    return {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": signature,
    }


def test_signing_reproduces_the_published_example():
    assert signing.sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_the_published_example_verifies_and_returns_its_id():
    assert signing.verify(SPEC_SECRET, spec_headers(), SPEC_BODY, now=SPEC_TIMESTAMP + 10) == (
        SPEC_ID
    )


def test_a_signature_is_the_hmac_of_id_timestamp_and_body():
    secret = signing.generate_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = hmac.new(key, b"evt_1.1700000000.{}", hashlib.sha256).digest()
    assert signing.sign(secret, "evt_1", 1700000000, b"{}") == (
        "v1," + base64.b64encode(expected).decode()
    )


def test_generated_secrets_are_whsec_and_32_random_bytes():
    first, second = signing.generate_secret(), signing.generate_secret()
    assert first.startswith("whsec_") and first != second
    assert len(signing.secret_key(first)) == 32


def test_during_rotation_both_secrets_sign_and_either_verifies():
    old, new = signing.generate_secret(), signing.generate_secret()
    headers = signing.signed_headers([new, old], "evt_2", 1700000000, b'{"a":1}')
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert signing.verify(secret, headers, b'{"a":1}', now=1700000000) == "evt_2"
    with pytest.raises(signing.SignatureInvalid, match="no signature"):
        signing.verify(signing.generate_secret(), headers, b'{"a":1}', now=1700000000)


@pytest.mark.parametrize(
    ("headers", "body", "now", "message"),
    [
        (spec_headers(), SPEC_BODY + b" ", SPEC_TIMESTAMP, "no signature"),
        (spec_headers(), SPEC_BODY, SPEC_TIMESTAMP + 301, "too far"),
        (spec_headers(), SPEC_BODY, SPEC_TIMESTAMP - 301, "too far"),
        ({**spec_headers(), "webhook-id": "msg_other"}, SPEC_BODY, SPEC_TIMESTAMP, "no signature"),
        (spec_headers("v2," + SPEC_SIGNATURE[3:]), SPEC_BODY, SPEC_TIMESTAMP, "no signature"),
        ({"webhook-id": SPEC_ID}, SPEC_BODY, SPEC_TIMESTAMP, "missing"),
        (
            {**spec_headers(), "webhook-timestamp": "soon"},
            SPEC_BODY,
            SPEC_TIMESTAMP,
            "not an integer",
        ),
    ],
)
def test_tampering_replays_and_missing_headers_are_refused(headers, body, now, message):
    with pytest.raises(signing.SignatureInvalid, match=message):
        signing.verify(SPEC_SECRET, headers, body, now=now)
