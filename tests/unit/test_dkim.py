"""DKIM signatures checked with dkimpy's verifier, given the test key's DNS record."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from typing import Any

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.channels.email.dkim import (
    DkimKey,
    _relaxed_body,
    check_dns_name,
    dns_record,
    load_private_key,
    sign,
)
from tidings.channels.email.mime import build_message

UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://tidings.example.com/unsubscribe/abc>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, *, pkcs1: bool = False) -> str:
    private_format = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if pkcs1
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(
        serialization.Encoding.PEM, private_format, serialization.NoEncryption()
    ).decode("ascii")


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


KEYS = {"rsa": rsa_key, "ed25519": ed_key}


def build(**overrides: Any) -> bytes:
    arguments: dict[str, Any] = {
        "message_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "from_address": "news@example.com",
        "from_name": "Example News",
        "to": "reader@example.org",
        "reply_to": "help@example.com",
        "subject": "Hello",
        "html": "<p>Hello <b>there</b></p>",
        "text": None,
        "headers": UNSUBSCRIBE,
    }
    arguments.update(overrides)
    return build_message(**arguments)


def verify(signed: bytes, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bool:
    record = dns_record(key).encode("ascii")

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"s1._domainkey.example.com." else None

    return bool(dkimpy.verify(signed, dnsfunc=dns))


@pytest.mark.parametrize("kind", KEYS)
@pytest.mark.parametrize(
    ("subject", "html", "text"),
    [
        ("Hello", "<p>Hello <b>there</b></p>", None),
        ("ご注文ありがとうございます 🎉", "<p>ご注文を承りました。</p>", None),
        ("مرحبا بك", None, "شكرا لك على طلبك\n\n\n"),
        ("trailing   spaces  ", "<p>a  \t b   </p>\r\n\r\n", "line one   \n\nline two\t\n"),
    ],
)
def test_signatures_verify(kind: str, subject: str, html: str | None, text: str | None):
    key = KEYS[kind]()
    raw = build(subject=subject, html=html, text=text)
    signed = sign(raw, DkimKey("example.com", "s1", key))

    assert signed.endswith(raw)
    assert verify(signed, key)
    header = signed[: len(signed) - len(raw)].decode("ascii")
    assert f"a={'ed25519' if kind == 'ed25519' else 'rsa'}-sha256;" in header
    assert "c=relaxed/relaxed;" in header
    assert max(len(line) for line in header.split("\r\n")) <= 78


def test_the_one_click_headers_and_the_identity_headers_are_covered():
    key = ed_key()
    signed = sign(build(), DkimKey("example.com", "s1", key))
    tags = dkimpy.util.parse_tag_value(signed.split(b"\r\n\r\n")[0].split(b"DKIM-Signature:")[1])
    listed = [name.strip() for name in tags[b"h"].split(b":")]
    for name in (b"from", b"to", b"subject", b"date", b"message-id", b"mime-version"):
        assert name in listed
    # Oversigned: a second From or unsubscribe link added on the way breaks the signature.
    assert listed.count(b"from") == 2
    assert listed.count(b"list-unsubscribe") == 2
    assert listed.count(b"list-unsubscribe-post") == 2
    assert b"content-type" in listed


@pytest.mark.parametrize(
    "tamper",
    [
        lambda raw: raw.replace(b"Subject: Hello", b"Subject: Hellp"),
        lambda raw: raw.replace(b"/unsubscribe/abc", b"/unsubscribe/xyz"),
        lambda raw: raw.replace(b"Hello <b>there", b"Hello <b>where"),
        lambda raw: raw.replace(b"From:", b"From: evil@example.net\r\nFrom:", 1),
        lambda raw: raw.replace(
            b"List-Unsubscribe:", b"List-Unsubscribe: <https://evil.test/>\r\nList-Unsubscribe:", 1
        ),
    ],
)
def test_changes_on_the_way_break_the_signature(tamper: Any):
    key = rsa_key()
    signed = sign(build(), DkimKey("example.com", "s1", key))
    assert verify(signed, key)
    tampered = tamper(signed)
    assert tampered != signed
    assert not verify(tampered, key)


def test_whitespace_changes_relaxed_canonicalization_allows_still_verify():
    key = ed_key()
    signed = sign(build(text="a b\r\n"), DkimKey("example.com", "s1", key))
    # Relays may refold headers and pad whitespace; relaxed/relaxed is meant to survive it.
    reworked = signed.replace(b"To: reader", b"To:    reader").replace(b"a b\r\n", b"a   b  \r\n")
    assert reworked != signed
    assert verify(reworked, key)


@settings(max_examples=40, deadline=None)
@given(
    subject=st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=120),
    body=st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=400),
)
def test_any_message_verifies(subject: str, body: str):
    key = ed_key()
    raw = build(subject=subject, html=None, text=body)
    assert verify(sign(raw, DkimKey("example.com", "s1", key)), key)


def test_keys_load_from_pkcs1_and_pkcs8_pem():
    key = rsa_key()
    for text in (pem(key), pem(key, pkcs1=True), "\n  " + pem(key) + "\n"):
        loaded = load_private_key(text)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        assert dns_record(loaded) == dns_record(key)
    assert isinstance(load_private_key(pem(ed_key())), ed25519.Ed25519PrivateKey)
    assert dns_record(ed_key()).startswith("v=DKIM1; k=ed25519; p=")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not a key", "PEM private key"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PEM private key"),
        ("clé", "PEM private key"),
    ],
)
def test_unusable_keys_are_refused(text: str, message: str):
    with pytest.raises(ValueError, match=message):
        load_private_key(text)


def test_short_rsa_keys_are_refused():
    # cryptography will not make one; the openssl command (tests/integration's TLS needs it too)
    # does.
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command is needed to make a short test key"
    short = subprocess.run([openssl, "genrsa", "768"], check=True, capture_output=True).stdout
    with pytest.raises(ValueError, match="1024 bits"):
        load_private_key(short.decode("ascii"))


def test_dns_names():
    assert check_dns_name("Mail.Example.COM") == "mail.example.com"
    assert check_dns_name("bücher.example") == "xn--bcher-kva.example"
    for bad in ("", "a..b", "-a.com", "a_b", "a b", "x" * 64):
        with pytest.raises(ValueError):
            check_dns_name(bad)


def _relaxed_body_as_written(body: bytes) -> bytes:
    """RFC 6376 3.4.4 step by step, the reference for the faster canonicalization."""
    lines = body.split(b"\r\n")
    lines = [re.sub(rb"[ \t]+", b" ", line) for line in lines]
    lines = [re.sub(rb"[ \t]+$", b"", line) for line in lines]
    while lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


@given(
    st.lists(st.text(alphabet=" \tab\u00e9", max_size=12), max_size=8).map(
        lambda lines: "\r\n".join(lines).encode("utf-8")
    )
)
@settings(max_examples=300)
def test_the_relaxed_body_is_the_rfc_one(body: bytes):
    assert _relaxed_body(body) == _relaxed_body_as_written(body)
