"""Rewrites a rendered email's HTML for tracking: links through signed redirects, an open pixel.

Pure string work, on the delivery hot path: one regular-expression pass over the HTML finds the
`<a>` start tags, and only their attributes are parsed. A link is tracked when its `href` is an
absolute http(s) URL that does not lead into Tidings itself (the unsubscribe link, a tracked
link) and the tag has no `data-tidings-no-track` attribute; mailto:, tel:, #anchors, relative
links and everything else stay exactly as written. The plain-text part is not touched.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from tidings.tracking.tokens import TrackingTokens

CLICK_PATH = "/t/c/"
OPEN_PATH = "/t/o/"
NO_TRACK_ATTRIBUTE = "data-tidings-no-track"
# An <a> start tag: quoted attribute values may hold a ">". Possessive and atomic matching
# keeps a malformed tag (an unclosed quote) from backtracking.
_A_TAG = re.compile(r"""<a(?=[\s/>])((?:[^>"']++|"[^"]*+"|'[^']*+')*+)>""", re.IGNORECASE)
# One attribute: its name, and its value with the quotes it was written with, if any.
_ATTRIBUTE = re.compile(r"""([^\s"'>/=]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'>][^\s>]*))?""")
# Character references as HTML reads them in an attribute value; a named one only with its
# ";" (without it, "&copy=1" in a query string stays as written, as browsers keep it).
_CHARACTER_REFERENCE = re.compile(r"&(?:#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]*;)")
_URL_WHITESPACE = " \t\n\r\f"


class Tracker:
    """Applies a configuration's tracking to a message's HTML; one per deliverer."""

    __slots__ = ("_click_base", "_open_base", "_own", "tokens")

    def __init__(self, tokens: TrackingTokens, public_url: str) -> None:
        self.tokens = tokens
        public_url = public_url.rstrip("/")
        self._click_base = html.escape(public_url + CLICK_PATH)
        self._open_base = html.escape(public_url + OPEN_PATH)
        # Links into Tidings itself: the unsubscribe link must keep working exactly as minted
        # (and a mailbox's one-click POST goes to it), and a tracked link is tracked already.
        self._own = (f"{public_url}/unsubscribe/", public_url + CLICK_PATH)

    def apply(
        self, body: str, workspace_id: str, message_id: str, *, clicks: bool, opens: bool
    ) -> str:
        """The HTML with its links tracked (when `clicks`) and the pixel added (when `opens`)."""
        ids = self.tokens.ids(workspace_id, message_id)
        if clicks:
            body = self.track_links(body, ids)
        if opens:
            body = self.add_pixel(body, ids)
        return body

    def track_links(self, body: str, ids: bytes) -> str:
        """Every trackable link's href replaced by its tracked URL, numbered in order from 0."""
        return _A_TAG.sub(self._tag_rewriter(ids), body)

    def add_pixel(self, body: str, ids: bytes) -> str:
        """The open pixel, just before the last </body> (or at the end when there is none).

        A 1x1 image shown rather than `display:none`: some mail clients skip hidden images."""
        pixel = (
            f'<img src="{self._open_base}{self.tokens.open_token(ids)}" width="1" height="1" '
            'alt="" style="width:1px;height:1px;border:0">'
        )
        at = body.rfind("</body")
        if at < 0:
            at = body.lower().rfind("</body")
        if at < 0:
            return body + pixel
        return body[:at] + pixel + body[at:]

    def _tag_rewriter(self, ids: bytes) -> Callable[[re.Match[str]], str]:
        count = 0
        click_token, click_base, own = self.tokens.click_token, self._click_base, self._own

        def rewrite(tag: re.Match[str]) -> str:
            nonlocal count
            attributes = tag.group(1)
            href: re.Match[str] | None = None
            for attribute in _ATTRIBUTE.finditer(attributes):
                name = attribute.group(1).lower()
                if name == NO_TRACK_ATTRIBUTE:
                    return tag.group(0)
                # The first of duplicate attributes is the one HTML keeps.
                if name == "href" and href is None:
                    href = attribute
            if href is None or href.group(2) is None:
                return tag.group(0)
            value = href.group(2)
            if value[0] in "\"'":
                value = value[1:-1]
            if "&" in value:
                value = _CHARACTER_REFERENCE.sub(_unescape, value)
            url = value.strip(_URL_WHITESPACE)
            if url[:4].lower() != "http" or url.startswith(own):
                return tag.group(0)
            token = click_token(ids, count, url)
            if token is None:
                return tag.group(0)
            count += 1
            start, end = href.span(2)
            offset = tag.start(1) - tag.start(0)
            whole = tag.group(0)
            return f'{whole[: offset + start]}"{click_base}{token}"{whole[offset + end :]}'

        return rewrite


# What template engines write in URLs (minijinja escapes "/" too): looked up before
# html.unescape, several times slower, decodes the rest.
_COMMON_REFERENCES = {
    "&amp;": "&",
    "&#x2f;": "/",
    "&#x2F;": "/",
    "&#47;": "/",
    "&quot;": '"',
    "&#34;": '"',
    "&#x27;": "'",
    "&#39;": "'",
    "&lt;": "<",
    "&gt;": ">",
}


def _unescape(reference: re.Match[str]) -> str:
    text = reference.group(0)
    return _COMMON_REFERENCES.get(text) or html.unescape(text)
