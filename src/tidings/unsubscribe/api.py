"""The unsubscribe pages: GET asks (and changes nothing), POST unsubscribes (RFC 8058 one-click)."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from tidings.campaigns.service import PREVIEW_UNSUBSCRIBE_PATH
from tidings.errors import NotFound
from tidings.unsubscribe import service
from tidings.unsubscribe.tokens import UnsubscribeToken, UnsubscribeTokens
from tidings.vocabulary import Channel
from tidings.web import runtime_of

router = APIRouter(tags=["Unsubscribe"])

# The form field (and value) of RFC 8058's one-click POST, in either of its encodings.
ONE_CLICK_FIELD = b"List-Unsubscribe"
ONE_CLICK_VALUE = b"One-Click"

# No cookies, no scripts, nothing loaded from elsewhere; the token in the address must not leak
# through a Referer, and neither page belongs in a cache or a search index.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}
_WHAT = {
    Channel.EMAIL: "marketing email",
    Channel.SMS: "marketing text messages",
    Channel.PUSH: "marketing notifications",
}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{title}</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;
color:#1b1f23}}
button{{font:inherit;padding:.5rem 1.25rem;border-radius:6px;border:1px solid #1b1f23;
background:#1b1f23;color:#fff;cursor:pointer}}
</style></head>
<body>
<h1>{title}</h1>
{body}
</body></html>
"""
_CONFIRM = """<p>Stop receiving {what} from this sender?</p>
<form method="post"><button type="submit">Unsubscribe</button></form>"""
_DONE = """<p>You are unsubscribed: you will receive no more {what} from this sender.</p>"""
_INVALID = """<p>This unsubscribe link is not valid. Use the link of a message you received,
exactly as it is written there.</p>"""
_PREVIEW = """<p>This is the unsubscribe link of a campaign preview: it unsubscribes no one. In
messages sent, each recipient gets a link of their own.</p>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=escape(title), body=body), status_code=status, headers=_HEADERS
    )


def _invalid() -> HTMLResponse:
    # The same page whether the token is malformed, forged, or names no message: it tells no
    # one which messages exist.
    return _page("Link not valid", _INVALID, 404)


def _verify(request: Request, token: str) -> UnsubscribeToken | None:
    return UnsubscribeTokens(runtime_of(request).secret_key).verify(token)


@router.get(PREVIEW_UNSUBSCRIBE_PATH, include_in_schema=False)
@router.post(PREVIEW_UNSUBSCRIBE_PATH, include_in_schema=False)
async def preview_page() -> HTMLResponse:
    """Where `unsubscribe_url` points in campaign previews: harmless."""
    return _page("Unsubscribe (preview)", _PREVIEW)


@router.get(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    summary="Unsubscribe page (asks; changes nothing)",
    responses={404: {"description": "The link is not valid", "content": {"text/html": {}}}},
)
async def confirmation_page(request: Request, token: str) -> HTMLResponse:
    """The page an unsubscribe link opens: a button that POSTs to the same address. A GET
    changes nothing, since mail scanners and link previews follow links in messages."""
    verified = _verify(request, token)
    if verified is None:
        return _invalid()
    return _page("Unsubscribe", _CONFIRM.format(what=_WHAT[verified.channel]))


@router.post(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    summary="Unsubscribe (RFC 8058 one-click, or the page's button)",
    responses={404: {"description": "The link is not valid", "content": {"text/html": {}}}},
)
async def unsubscribe(request: Request, token: str) -> HTMLResponse:
    """Opts the message's recipient out of marketing on its channel; 200 again when repeated.
    Takes any body: a mailbox's one-click POST sends `List-Unsubscribe=One-Click` (recorded as
    source `one_click`), the page's button nothing (`unsubscribe_link`)."""
    verified = _verify(request, token)
    if verified is None:
        return _invalid()
    body = await request.body()
    one_click = ONE_CLICK_FIELD in body and ONE_CLICK_VALUE in body
    source = service.SOURCE_ONE_CLICK if one_click else service.SOURCE_LINK
    try:
        await run_in_threadpool(service.unsubscribe, runtime_of(request).db, verified, source)
    except NotFound:
        return _invalid()
    return _page("Unsubscribed", _DONE.format(what=_WHAT[verified.channel]))
