"""Per-message unsubscribe tokens: a versioned payload and its truncated HMAC-SHA256, base64url.

Version 1 is 50 bytes, 67 characters: the version byte, the workspace's and the message's ids
(UUIDs, 16 bytes each), the channel (one letter), and the first 16 bytes of HMAC-SHA256 over
those 34 bytes under a key derived from the server's secret key for this purpose only (so a
MAC made for another use of the secret key never opens an unsubscribe link). Minting is one
HMAC, a few microseconds, on the delivery hot path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from binascii import b2a_base64
from dataclasses import dataclass

from tidings.vocabulary import Channel

VERSION = 1
_VERSION_BYTE = bytes((VERSION,))
MAC_BYTES = 16
_ID_BYTES = 16
_PAYLOAD_BYTES = 1 + 2 * _ID_BYTES + 1
TOKEN_BYTES = _PAYLOAD_BYTES + MAC_BYTES
TOKEN_CHARS = (TOKEN_BYTES * 8 + 5) // 6
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_CHARS}}}")
_PURPOSE = b"tidings unsubscribe token v1"
# Keyed by the plain strings too: a Channel hashes as its value, so either finds the code.
_CODES: dict[str, bytes] = {Channel.EMAIL: b"e", Channel.SMS: b"s", Channel.PUSH: b"p"}
_CHANNELS = {code[0]: Channel(channel) for channel, code in _CODES.items()}
_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(byte ^ 0x36 for byte in range(256))
_OPAD = bytes(byte ^ 0x5C for byte in range(256))
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_MAX_CACHED_WORKSPACES = 10_000


@dataclass(frozen=True, slots=True)
class UnsubscribeToken:
    """What a valid token names: the message (looked up within the workspace) and its channel."""

    workspace_id: str
    message_id: str
    channel: Channel


class UnsubscribeTokens:
    """Mints and verifies tokens under one secret key."""

    __slots__ = ("_inner", "_outer", "_workspaces")

    def __init__(self, secret_key: bytes) -> None:
        if not secret_key:
            raise ValueError("the secret key is empty")
        key = hmac.digest(secret_key, _PURPOSE, "sha256")
        # HMAC (RFC 2104) with its two padded-key states computed once: hmac.digest sets them
        # up on every call, which was half the cost of a token.
        self._inner = hashlib.sha256(key.ljust(_BLOCK, b"\0").translate(_IPAD))
        self._outer = hashlib.sha256(key.ljust(_BLOCK, b"\0").translate(_OPAD))
        # A process mints for a few workspaces: their ids are converted once.
        self._workspaces: dict[str, bytes] = {}

    def mint(self, workspace_id: str, message_id: str, channel: Channel | str) -> str:
        """The token of one message. Raises ValueError when an id is not a UUID."""
        workspace = self._workspaces.get(workspace_id)
        if workspace is None:
            workspace = _uuid_bytes(workspace_id)
            if len(self._workspaces) >= _MAX_CACHED_WORKSPACES:
                self._workspaces.clear()
            self._workspaces[workspace_id] = workspace
        payload = b"".join((_VERSION_BYTE, workspace, _uuid_bytes(message_id), _CODES[channel]))
        raw = payload + self._mac(payload)
        return b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")

    def verify(self, token: str) -> UnsubscribeToken | None:
        """What the token names, or None when it is not one this key minted (malformed,
        another version, tampered with). The MAC is compared in constant time."""
        if not _TOKEN.fullmatch(token):
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        # Base64 leaves spare bits in the last character: only the canonical spelling counts,
        # so each message has exactly one token.
        if len(raw) != TOKEN_BYTES or _encode(raw) != token:
            return None
        payload, mac = raw[:_PAYLOAD_BYTES], raw[_PAYLOAD_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        channel = _CHANNELS.get(payload[-1])
        if payload[0] != VERSION or channel is None:
            return None
        return UnsubscribeToken(
            workspace_id=_uuid_text(payload[1 : 1 + _ID_BYTES]),
            message_id=_uuid_text(payload[1 + _ID_BYTES : 1 + 2 * _ID_BYTES]),
            channel=channel,
        )

    def _mac(self, payload: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:MAC_BYTES]


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _uuid_bytes(value: str) -> bytes:
    # bytes.fromhex is the cheap path (uuid.UUID costs several times more); the checks keep it
    # to 32 hex digits in the 8-4-4-4-12 layout (fromhex itself would skip spaces).
    if len(value) == 36 and value[8] == value[13] == value[18] == value[23] == "-":
        raw = bytes.fromhex(value.replace("-", ""))
        if len(raw) == _ID_BYTES:
            return raw
    raise ValueError(f"{value!r} is not a UUID")


def _uuid_text(raw: bytes) -> str:
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
