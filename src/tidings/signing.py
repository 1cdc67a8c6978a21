"""Signed tokens in links: truncated HMAC-SHA256 under a key per purpose, compact base64url.

Each use of the server's secret key (unsubscribe links, tracked links, the open pixel) derives
its own key, HMAC(secret key, purpose), so a MAC made for one purpose never opens a link of
another. Minting is on the delivery hot path: the HMAC's padded-key states are computed once
per signer, and ids and base64 go through the cheapest conversions the standard library has.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from binascii import b2a_base64

MAC_BYTES = 16
ID_BYTES = 16
_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(byte ^ 0x36 for byte in range(256))
_OPAD = bytes(byte ^ 0x5C for byte in range(256))
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class Signer:
    """MACs under the key that `secret_key` derives for `purpose`."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, secret_key: bytes, purpose: bytes) -> None:
        if not secret_key:
            raise ValueError("the secret key is empty")
        key = hmac.digest(secret_key, purpose, "sha256")
        # HMAC (RFC 2104) with its two padded-key states computed once: hmac.digest sets them
        # up on every call, which was half the cost of a token.
        self._inner = hashlib.sha256(key.ljust(_BLOCK, b"\0").translate(_IPAD))
        self._outer = hashlib.sha256(key.ljust(_BLOCK, b"\0").translate(_OPAD))

    def mac(self, payload: bytes) -> bytes:
        """The first MAC_BYTES of HMAC-SHA256 over the payload."""
        inner = self._inner.copy()
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:MAC_BYTES]

    def seal(self, payload: bytes) -> str:
        """The token of a payload: payload and MAC, base64url without padding."""
        return encode(payload + self.mac(payload))

    def open(self, token: str, *, min_bytes: int = 0) -> bytes | None:
        """The payload a token signed by this signer carries, or None when it is not one
        (malformed, shorter than `min_bytes` of payload, tampered with). Constant-time MAC
        comparison; callers check the token's alphabet and length first."""
        raw = decode(token)
        if raw is None or len(raw) < min_bytes + MAC_BYTES:
            return None
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if not hmac.compare_digest(mac, self.mac(payload)):
            return None
        return payload


def encode(raw: bytes) -> str:
    """base64url without padding (b2a_base64 and a translation: faster than urlsafe_b64encode)."""
    return b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def decode(token: str) -> bytes | None:
    """The bytes of a base64url token, or None when it is not the canonical spelling of any:
    base64 leaves spare bits in the last character, and only the spelling `encode` gives counts,
    so each payload has exactly one token."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if encode(raw) != token:
        return None
    return raw


def uuid_bytes(value: str) -> bytes:
    """The 16 bytes of a UUID in its canonical text form. Raises ValueError for anything else."""
    # bytes.fromhex is the cheap path (uuid.UUID costs several times more); the checks keep it
    # to 32 hex digits in the 8-4-4-4-12 layout (fromhex itself would skip spaces).
    if len(value) == 36 and value[8] == value[13] == value[18] == value[23] == "-":
        raw = bytes.fromhex(value.replace("-", ""))
        if len(raw) == ID_BYTES:
            return raw
    raise ValueError(f"{value!r} is not a UUID")


def uuid_text(raw: bytes) -> str:
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
