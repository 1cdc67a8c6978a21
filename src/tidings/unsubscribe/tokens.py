"""Per-message unsubscribe tokens: a versioned payload and its truncated HMAC-SHA256, base64url.

Version 1 is 50 bytes, 67 characters: the version byte, the workspace's and the message's ids
(UUIDs, 16 bytes each), the channel (one letter), and the first 16 bytes of HMAC-SHA256 over
those 34 bytes under a key derived from the server's secret key for this purpose only (so a
MAC made for another use of the secret key never opens an unsubscribe link). Minting is one
HMAC, a few microseconds, on the delivery hot path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tidings.signing import ID_BYTES, MAC_BYTES, Signer, uuid_bytes, uuid_text
from tidings.vocabulary import Channel

VERSION = 1
_VERSION_BYTE = bytes((VERSION,))
_PAYLOAD_BYTES = 1 + 2 * ID_BYTES + 1
TOKEN_BYTES = _PAYLOAD_BYTES + MAC_BYTES
TOKEN_CHARS = (TOKEN_BYTES * 8 + 5) // 6
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_CHARS}}}")
_PURPOSE = b"tidings unsubscribe token v1"
# Keyed by the plain strings too: a Channel hashes as its value, so either finds the code.
_CODES: dict[str, bytes] = {Channel.EMAIL: b"e", Channel.SMS: b"s", Channel.PUSH: b"p"}
_CHANNELS = {code[0]: Channel(channel) for channel, code in _CODES.items()}
_MAX_CACHED_WORKSPACES = 10_000


@dataclass(frozen=True, slots=True)
class UnsubscribeToken:
    """What a valid token names: the message (looked up within the workspace) and its channel."""

    workspace_id: str
    message_id: str
    channel: Channel


class UnsubscribeTokens:
    """Mints and verifies tokens under one secret key."""

    __slots__ = ("_signer", "_workspaces")

    def __init__(self, secret_key: bytes) -> None:
        self._signer = Signer(secret_key, _PURPOSE)
        # A process mints for a few workspaces: their ids are converted once.
        self._workspaces: dict[str, bytes] = {}

    def mint(self, workspace_id: str, message_id: str, channel: Channel | str) -> str:
        """The token of one message. Raises ValueError when an id is not a UUID."""
        workspace = self._workspaces.get(workspace_id)
        if workspace is None:
            workspace = uuid_bytes(workspace_id)
            if len(self._workspaces) >= _MAX_CACHED_WORKSPACES:
                self._workspaces.clear()
            self._workspaces[workspace_id] = workspace
        payload = b"".join((_VERSION_BYTE, workspace, uuid_bytes(message_id), _CODES[channel]))
        return self._signer.seal(payload)

    def verify(self, token: str) -> UnsubscribeToken | None:
        """What the token names, or None when it is not one this key minted (malformed,
        another version, tampered with). The MAC is compared in constant time."""
        if not _TOKEN.fullmatch(token):
            return None
        # Base64 leaves spare bits in the last character: only the canonical spelling counts
        # (signing.decode), so each message has exactly one token.
        payload = self._signer.open(token, min_bytes=_PAYLOAD_BYTES)
        if payload is None or len(payload) != _PAYLOAD_BYTES:
            return None
        channel = _CHANNELS.get(payload[-1])
        if payload[0] != VERSION or channel is None:
            return None
        return UnsubscribeToken(
            workspace_id=uuid_text(payload[1 : 1 + ID_BYTES]),
            message_id=uuid_text(payload[1 + ID_BYTES : 1 + 2 * ID_BYTES]),
            channel=channel,
        )
