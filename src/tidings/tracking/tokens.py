"""Signed tokens of tracked links and open pixels; a click token carries its destination.

Open token, version 1: the version byte, the workspace's and the message's ids (16 bytes each)
and a 16-byte MAC: 49 bytes, 66 characters. Click token, version 1: the same ids, the link's
index in the message (2 bytes), the destination URL (UTF-8) and the MAC: 51 bytes plus the URL,
about 4/3 of that in characters. Each kind has its own key derived from the server's secret key.

The destination is in the token, signed, rather than in a table: the redirect needs no lookup,
and it can only lead where Tidings rewrote a link (a URL it did not sign never verifies), which
is what keeps the redirect from being an open one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tidings.signing import ID_BYTES, MAC_BYTES, Signer, uuid_bytes, uuid_text

VERSION = 1
_VERSION_BYTE = bytes((VERSION,))
_IDS_BYTES = 1 + 2 * ID_BYTES
_INDEX_BYTES = 2
MAX_LINKS = 1 << (8 * _INDEX_BYTES)
# Longer destinations are left as they are: the token would make the address longer still.
MAX_URL_BYTES = 2048
_OPEN_CHARS = ((_IDS_BYTES + MAC_BYTES) * 8 + 5) // 6
_OPEN_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{_OPEN_CHARS}}}")
_CLICK_MIN_BYTES = _IDS_BYTES + _INDEX_BYTES + len("http://x")
_CLICK_MAX_CHARS = ((_IDS_BYTES + _INDEX_BYTES + MAX_URL_BYTES + MAC_BYTES) * 8 + 5) // 6
_CLICK_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{1,{_CLICK_MAX_CHARS}}}")
_OPEN_PURPOSE = b"tidings open token v1"
_CLICK_PURPOSE = b"tidings click token v1"
_MAX_CACHED_WORKSPACES = 10_000


@dataclass(frozen=True, slots=True)
class Opened:
    """What a valid open token names."""

    workspace_id: str
    message_id: str


@dataclass(frozen=True, slots=True)
class Clicked:
    """What a valid click token names: the message, the link's index in it, and where it led."""

    workspace_id: str
    message_id: str
    index: int
    url: str


class TrackingTokens:
    """Mints and verifies open and click tokens under one secret key."""

    __slots__ = ("_clicks", "_opens", "_workspaces")

    def __init__(self, secret_key: bytes) -> None:
        self._opens = Signer(secret_key, _OPEN_PURPOSE)
        self._clicks = Signer(secret_key, _CLICK_PURPOSE)
        self._workspaces: dict[str, bytes] = {}

    def ids(self, workspace_id: str, message_id: str) -> bytes:
        """The version byte and both ids, the prefix of a message's tokens: computed once per
        message and passed to `open_token` and `click_token`. Raises ValueError for a non-UUID."""
        workspace = self._workspaces.get(workspace_id)
        if workspace is None:
            workspace = uuid_bytes(workspace_id)
            if len(self._workspaces) >= _MAX_CACHED_WORKSPACES:
                self._workspaces.clear()
            self._workspaces[workspace_id] = workspace
        return b"".join((_VERSION_BYTE, workspace, uuid_bytes(message_id)))

    def open_token(self, ids: bytes) -> str:
        return self._opens.seal(ids)

    def click_token(self, ids: bytes, index: int, url: str) -> str | None:
        """The token of a message's `index`th tracked link, or None when the link cannot be
        tracked (not an http(s) URL, too long, too many links)."""
        if index >= MAX_LINKS or not is_destination(url):
            return None
        try:
            encoded = url.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, which no message can carry anyway
            return None
        if len(encoded) > MAX_URL_BYTES:
            return None
        return self._clicks.seal(b"".join((ids, index.to_bytes(_INDEX_BYTES, "big"), encoded)))

    def verify_open(self, token: str) -> Opened | None:
        """What the token names, or None when this key did not mint it (constant-time MAC)."""
        if not _OPEN_TOKEN.fullmatch(token):
            return None
        payload = self._opens.open(token, min_bytes=_IDS_BYTES)
        if payload is None or len(payload) != _IDS_BYTES or payload[0] != VERSION:
            return None
        return Opened(
            workspace_id=uuid_text(payload[1 : 1 + ID_BYTES]),
            message_id=uuid_text(payload[1 + ID_BYTES : _IDS_BYTES]),
        )

    def verify_click(self, token: str) -> Clicked | None:
        """What the token names, or None when this key did not mint it, or it names a
        destination a click token may not lead to (checked again: never redirect elsewhere)."""
        if not _CLICK_TOKEN.fullmatch(token):
            return None
        payload = self._clicks.open(token, min_bytes=_CLICK_MIN_BYTES)
        if payload is None or payload[0] != VERSION:
            return None
        try:
            url = payload[_IDS_BYTES + _INDEX_BYTES :].decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not is_destination(url):
            return None
        return Clicked(
            workspace_id=uuid_text(payload[1 : 1 + ID_BYTES]),
            message_id=uuid_text(payload[1 + ID_BYTES : _IDS_BYTES]),
            index=int.from_bytes(payload[_IDS_BYTES : _IDS_BYTES + _INDEX_BYTES], "big"),
            url=url,
        )


def is_destination(url: str) -> bool:
    """Whether a tracked link may lead to `url`: http(s), a host part, no control characters
    (a browser drops tabs and line breaks from a link, and they could not travel in a Location
    header). Spaces may be inside, as in a link personalized with a name: the redirect
    percent-encodes them, as a browser does. Plain string tests: a regular expression cost
    more than the rest of a link's rewriting."""
    scheme = url[:8].lower()
    if scheme == "https://":
        host = 8
    elif scheme.startswith("http://"):
        host = 7
    else:
        return False
    return len(url) > host and url[host] != " " and url.isprintable()
