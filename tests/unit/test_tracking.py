"""Link rewriting and the open pixel (pure), and the tokens that make the redirect safe."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.ids import new_id
from tidings.signing import Signer, decode, encode
from tidings.tracking import tokens as tracking_tokens
from tidings.tracking.rewrite import Tracker
from tidings.tracking.tokens import MAX_URL_BYTES, Clicked, Opened, TrackingTokens
from tidings.unsubscribe.tokens import UnsubscribeTokens

KEY = b"k" * 32
PUBLIC = "https://tidings.test"
WORKSPACE = new_id()
MESSAGE = new_id()
TRACKED = re.compile(r'(?i:href)\s*=\s*"https://tidings\.test/t/c/([A-Za-z0-9_-]+)"')
PIXEL = re.compile(r'<img src="https://tidings\.test/t/o/([A-Za-z0-9_-]+)"[^>]*>')


def tracker(key: bytes = KEY) -> Tracker:
    return Tracker(TrackingTokens(key), PUBLIC)


def clicks(html: str) -> str:
    return tracker().apply(html, WORKSPACE, MESSAGE, clicks=True, opens=False)


def destinations(html: str) -> list[tuple[int, str]]:
    """(index, url) of each tracked link, checking each token on the way."""
    found = []
    for token in TRACKED.findall(html):
        link = TrackingTokens(KEY).verify_click(token)
        assert link is not None
        assert (link.workspace_id, link.message_id) == (WORKSPACE, MESSAGE)
        found.append((link.index, link.url))
    return found


@pytest.mark.parametrize(
    ("anchor", "url"),
    [
        ('<a href="https://example.com/a">x</a>', "https://example.com/a"),
        ("<a href='https://example.com/a'>x</a>", "https://example.com/a"),
        ("<a href=https://example.com/a>x</a>", "https://example.com/a"),
        ('<a class="b" HREF = "http://example.com/a" id=c>x</a>', "http://example.com/a"),
        ('<A\nhref="HTTPS://Example.com/A">x</A>', "HTTPS://Example.com/A"),
        ('<a href="https://e.com/?a=1&amp;b=2">x</a>', "https://e.com/?a=1&b=2"),
        ('<a href="https://e.com/?a=1&#38;b=2&#x26;c=3">x</a>', "https://e.com/?a=1&b=2&c=3"),
        # A named reference without its ";" stays as written in an attribute, as browsers do.
        ('<a href="https://e.com/?a=1&copy=2">x</a>', "https://e.com/?a=1&copy=2"),
        ('<a href=" https://e.com/a\n">x</a>', "https://e.com/a"),
        ('<a title="1 > 0" href="https://e.com/a">x</a>', "https://e.com/a"),
        ('<a href="https://e.com/a" href="https://e.com/b">x</a>', "https://e.com/a"),
        ('<a href="https://e.com/caf\u00e9">x</a>', "https://e.com/caf\u00e9"),
        ('<a href="https://tidings.test/elsewhere">x</a>', "https://tidings.test/elsewhere"),
        ('<a href="https://e.com/Ada Lovelace">x</a>', "https://e.com/Ada Lovelace"),
    ],
)
def test_http_links_are_rewritten_to_signed_redirects(anchor: str, url: str):
    rewritten = clicks(f"<p>{anchor}</p>")
    assert destinations(rewritten) == [(0, url)]
    # Only the href's value changes; the rest of the tag and the text are kept.
    assert rewritten.endswith(">x</a></p>") or rewritten.endswith(">x</A></p>")


@pytest.mark.parametrize(
    "anchor",
    [
        '<a href="mailto:ada@example.com">x</a>',
        '<a href="tel:+14155550100">x</a>',
        '<a href="#top">x</a>',
        '<a href="/relative/path">x</a>',
        '<a href="relative.html">x</a>',
        '<a href="//example.com/protocol-relative">x</a>',
        '<a href="javascript:alert(1)">x</a>',
        '<a href="ftp://example.com/file">x</a>',
        '<a href="">x</a>',
        "<a href>x</a>",
        '<a name="anchor">x</a>',
        "<a>x</a>",
        '<a href="https://tidings.test/unsubscribe/abc">x</a>',
        '<a href="https://tidings.test/t/c/abc">x</a>',
        '<a data-tidings-no-track href="https://e.com/a">x</a>',
        '<a href="https://e.com/a" DATA-TIDINGS-NO-TRACK="true">x</a>',
        '<a href="https://e.com/with\ttab">x</a>',
        '<a href="https:// e.com/">x</a>',
        '<a href="https://e.com/\u200bzero-width">x</a>',
        '<a href="https://e.com/unclosed>x</a>',
        '<abbr href="https://e.com/a">x</abbr>',
        '<area href="https://e.com/a">',
        f'<a href="https://e.com/{"x" * MAX_URL_BYTES}">x</a>',
    ],
)
def test_other_links_are_left_exactly_as_written(anchor: str):
    html = f"<p>{anchor}</p>"
    assert clicks(html) == html


def test_links_are_numbered_in_order_among_the_tracked_ones():
    html = (
        '<a href="https://e.com/1">1</a><a href="mailto:a@b.c">m</a>'
        "<a href='https://e.com/2'>2</a><a href=\"https://tidings.test/unsubscribe/x\">u</a>"
        '<a href="https://e.com/1">1 again</a>'
    )
    rewritten = clicks(html)
    assert destinations(rewritten) == [
        (0, "https://e.com/1"),
        (1, "https://e.com/2"),
        (2, "https://e.com/1"),
    ]
    assert 'href="mailto:a@b.c"' in rewritten
    assert 'href="https://tidings.test/unsubscribe/x"' in rewritten


def test_html_without_links_is_returned_unchanged():
    html = "<html><body><p>No links &amp; no problem</p></body></html>"
    assert clicks(html) == html


@pytest.mark.parametrize(
    ("html", "expected_before"),
    [
        ("<html><body><p>Hi</p></body></html>", "</body></html>"),
        ("<HTML><BODY><p>Hi</p></BODY></HTML>", "</BODY></HTML>"),
        ("<p>Hi</p>", ""),
        ("<body>a</body><p>after a stray close</p></body>", "</body>"),
    ],
)
def test_the_open_pixel_goes_before_the_last_body_end(html: str, expected_before: str):
    tracked = tracker().apply(html, WORKSPACE, MESSAGE, clicks=False, opens=True)
    found = PIXEL.search(tracked)
    assert found is not None
    assert tracked[found.end() :] == expected_before
    assert tracked[: found.start()] + tracked[found.end() :] == html
    assert 'width="1" height="1" alt=""' in found.group(0)
    assert TrackingTokens(KEY).verify_open(found.group(1)) == Opened(WORKSPACE, MESSAGE)


def test_opens_alone_leave_links_and_clicks_alone_add_no_pixel():
    html = '<body><a href="https://e.com/a">x</a></body>'
    opens_only = tracker().apply(html, WORKSPACE, MESSAGE, clicks=False, opens=True)
    assert 'href="https://e.com/a"' in opens_only
    clicks_only = tracker().apply(html, WORKSPACE, MESSAGE, clicks=True, opens=False)
    assert PIXEL.search(clicks_only) is None
    assert destinations(clicks_only) == [(0, "https://e.com/a")]


def test_a_click_token_is_compact_and_round_trips():
    tokens = TrackingTokens(KEY)
    ids = tokens.ids(WORKSPACE, MESSAGE)
    url = "https://example.com/products/42?utm_source=tidings"
    token = tokens.click_token(ids, 7, url)
    assert token is not None
    # 35 bytes of ids and index, the URL, a 16-byte MAC, in base64url.
    assert len(token) == -(-(35 + len(url) + 16) * 4 // 3)
    assert tokens.verify_click(token) == Clicked(WORKSPACE, MESSAGE, 7, url)
    open_token = tokens.open_token(ids)
    assert len(open_token) == 66
    assert tokens.verify_open(open_token) == Opened(WORKSPACE, MESSAGE)


@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_changed_bit_makes_a_token_invalid(position: int, bit: int):
    tokens = TrackingTokens(KEY)
    ids = tokens.ids(WORKSPACE, MESSAGE)
    for token, verify in (
        (tokens.click_token(ids, 0, "https://example.com/a"), tokens.verify_click),
        (tokens.open_token(ids), tokens.verify_open),
    ):
        assert token is not None
        raw = bytearray(decode(token) or b"")
        raw[position % len(raw)] ^= 1 << bit
        assert verify(encode(bytes(raw))) is None


def test_a_token_names_its_workspace_and_another_cannot_be_substituted():
    tokens = TrackingTokens(KEY)
    token = tokens.click_token(tokens.ids(WORKSPACE, MESSAGE), 0, "https://example.com/a")
    assert token is not None
    raw = bytearray(decode(token) or b"")
    other = bytes.fromhex(new_id().replace("-", ""))
    raw[1:17] = other
    assert tokens.verify_click(encode(bytes(raw))) is None
    pixel = bytearray(decode(tokens.open_token(tokens.ids(WORKSPACE, MESSAGE))) or b"")
    pixel[1:17] = other
    assert tokens.verify_open(encode(bytes(pixel))) is None


def test_a_token_can_lead_nowhere_but_the_url_it_signed():
    tokens = TrackingTokens(KEY)
    token = tokens.click_token(tokens.ids(WORKSPACE, MESSAGE), 0, "https://example.com/a")
    assert token is not None
    raw = decode(token) or b""
    payload, mac = raw[:-16], raw[-16:]
    forged = payload.replace(b"example.com", b"evil.example") + mac
    assert tokens.verify_click(encode(forged)) is None
    truncated = payload[:-1] + mac
    assert tokens.verify_click(encode(truncated)) is None


def test_tokens_of_another_key_or_purpose_are_refused():
    tokens, other = TrackingTokens(KEY), TrackingTokens(b"o" * 32)
    ids = tokens.ids(WORKSPACE, MESSAGE)
    click = tokens.click_token(ids, 0, "https://example.com/a")
    assert click is not None
    assert other.verify_click(click) is None
    assert other.verify_open(tokens.open_token(ids)) is None
    # An open token is not a click token, nor an unsubscribe token either (keys per purpose).
    assert tokens.verify_click(tokens.open_token(ids)) is None
    unsubscribe = UnsubscribeTokens(KEY).mint(WORKSPACE, MESSAGE, "email")
    assert tokens.verify_open(unsubscribe) is None
    assert tokens.verify_click(unsubscribe) is None
    assert UnsubscribeTokens(KEY).verify(tokens.open_token(ids)) is None


def test_a_signed_token_for_a_destination_that_is_not_http_is_still_refused():
    # Defence in depth: even a token this key signed never redirects to another scheme.
    signer = Signer(KEY, tracking_tokens._CLICK_PURPOSE)
    ids = TrackingTokens(KEY).ids(WORKSPACE, MESSAGE)
    for url in ("javascript:alert(1)//xxxxxxxx", "https://e.com/a\r\nSet-Cookie: x=1"):
        token = signer.seal(ids + b"\0\0" + url.encode())
        assert TrackingTokens(KEY).verify_click(token) is None


@pytest.mark.parametrize(
    "bad",
    ["", "x", "!" * 80, "A" * 100_000, "AQ", "Zm9v=", "é" * 70],
)
def test_malformed_tokens_are_refused(bad: str):
    tokens = TrackingTokens(KEY)
    assert tokens.verify_click(bad) is None
    assert tokens.verify_open(bad) is None


def test_a_non_canonical_spelling_is_refused():
    tokens = TrackingTokens(KEY)
    token = tokens.open_token(tokens.ids(WORKSPACE, MESSAGE))
    # 49 bytes leave 4 spare bits in the last character: flipping one keeps the bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    twin = token[:-1] + alphabet[last ^ 1]
    assert decode(twin) is None
    assert tokens.verify_open(twin) is None


def test_ids_must_be_uuids():
    with pytest.raises(ValueError):
        TrackingTokens(KEY).ids("not-a-uuid", MESSAGE)
