"""Push payloads per provider, their size at review, and the JWTs that authorize them."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.support.push_fakes import p256_key, rsa_key
from tidings.campaigns.review import review_version
from tidings.channels.push.http import snake
from tidings.channels.push.jwt import InvalidKey, encode_es256, encode_rs256
from tidings.channels.push.payload import apns_payload, estimated_sizes, fcm_message
from tidings.content.engine import TemplateEngine
from tidings.content.schemas import parse_content
from tidings.errors import InvalidInput
from tidings.vocabulary import Category, Channel

ENGINE = TemplateEngine(fuel=50_000, max_source_bytes=100_000)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_rs256_and_es256_tokens_verify_with_the_public_keys():
    rsa_private, rsa_pem = rsa_key()
    token = encode_rs256({"iss": "a", "iat": 1}, rsa_pem, kid="k")
    header, claims, signature = token.split(".")
    assert json.loads(_unb64(header)) == {"alg": "RS256", "typ": "JWT", "kid": "k"}
    assert json.loads(_unb64(claims)) == {"iss": "a", "iat": 1}
    rsa_private.public_key().verify(
        _unb64(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )

    ec_private, ec_pem = p256_key()
    token = encode_es256({"iss": "TEAM", "iat": 2}, ec_pem, kid="KEY")
    header, claims, signature = token.split(".")
    assert json.loads(_unb64(header)) == {"alg": "ES256", "kid": "KEY"}
    raw = _unb64(signature)
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    ec_private.public_key().verify(der, f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))

    with pytest.raises(InvalidKey):
        encode_es256({}, rsa_pem, kid="KEY")
    with pytest.raises(InvalidKey):
        encode_rs256({}, "garbage")


def test_payloads_carry_every_field_and_leave_out_absent_ones():
    content = {"title": "T", "body": "B", "data": None, "deeplink": "https://example.com/x"}
    content |= {"badge": None, "sound": None}
    assert fcm_message("tok", content) == {
        "token": "tok",
        "notification": {"title": "T", "body": "B"},
        "data": {"deeplink": "https://example.com/x"},
        "webpush": {"fcm_options": {"link": "https://example.com/x"}},
    }
    assert apns_payload(content) == {
        "deeplink": "https://example.com/x",
        "aps": {"alert": {"title": "T", "body": "B"}},
    }
    zero_badge = {**content, "badge": 0, "deeplink": None}
    assert apns_payload(zero_badge)["aps"]["badge"] == 0  # 0 clears the badge: it is sent
    assert fcm_message("tok", zero_badge)["apns"] == {"payload": {"aps": {"badge": 0}}}


def test_content_refuses_reserved_data_keys_and_bad_badges():
    for content in (
        {"data": {"aps": "x"}},
        {"data": {"google.c": "x"}},
        {"data": {"from": "x"}},
        {"badge": -1},
        {"sound": "a\nb"},
    ):
        with pytest.raises(InvalidInput):
            parse_content(Channel.PUSH, content)


def review(content: dict[str, object], provider: str = "fcm"):
    return review_version(
        engine=ENGINE,
        category=Category.TRANSACTIONAL,
        channel=Channel.PUSH,
        version={
            "channel_configuration_id": "cfg",
            "content": content,
            "audience": {"identity_namespace": "email"},
            "start_at": None,
            "end_at": None,
        },
        configuration={
            "channel": "push",
            "category": "transactional",
            "settings": {"provider": provider},
        },
        known_profile_paths=lambda paths: set(paths),
        now=datetime(2030, 1, 1, tzinfo=UTC),
    )


def test_review_estimates_the_payload_size():
    fits = review({"title": "Hi", "body": "{{ context.text }}"})
    assert fits.ready and not fits.warnings

    templated = review(
        {"title": "Hi {{ profile.name }}", "body": "x" * 3000, "data": {"a": "y" * 1200}}, "apns"
    )
    assert templated.ready
    [warning] = templated.warnings
    assert warning.field == "content"
    assert "APNS" in warning.message and "payload_too_large" in warning.message

    fixed = review({"title": "Hi", "body": "x" * 3000, "data": {"a": "y" * 1500}}, "dev")
    assert not fixed.ready
    [error] = fixed.errors
    assert "FCM" in error.message and "APNS" in error.message


def test_estimated_sizes_measure_per_provider():
    content = {"title": "T", "body": "B", "data": {"k": "v"}, "deeplink": None}
    assert set(estimated_sizes(content, "fcm")) == {"fcm"}
    assert set(estimated_sizes(content, "dev")) == {"fcm", "apns"}
    assert estimated_sizes(content, "apns")["apns"] == len(
        json.dumps(apns_payload(content), separators=(",", ":"))
    )


def test_reason_codes_from_provider_error_names():
    assert snake("BadDeviceToken") == "bad_device_token"
    assert snake("SENDER_ID_MISMATCH") == "sender_id_mismatch"
    assert snake("TooManyProviderTokenUpdates") == "too_many_provider_token_updates"
