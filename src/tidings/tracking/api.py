"""The tracking routes: a tracked link's redirect and the open pixel; no API key, no cookies."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.background import BackgroundTask

from tidings.tracking import service
from tidings.tracking.rewrite import CLICK_PATH, OPEN_PATH
from tidings.tracking.service import EventKind
from tidings.tracking.tokens import TrackingTokens
from tidings.web import runtime_of

router = APIRouter(tags=["Tracking"])

# A transparent 1x1 GIF (43 bytes).
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
# Every fetch must reach the server to count; the token must not leak through a Referer to
# the destination; none of it belongs in a search index.
_NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}
_INVALID = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>Link not valid</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}
</style></head>
<body><h1>Link not valid</h1>
<p>This link is not valid. Use the link of a message you received, exactly as it is written
there.</p></body></html>
"""
_INVALID_HEADERS = {
    **_NO_CACHE,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
# What stays as it is in a Location header: printable ASCII but the space; anything else
# (non-ASCII characters of an IRI) is percent-encoded as UTF-8, as a browser would.
_LOCATION_SAFE = "".join(chr(code) for code in range(33, 127))


def _tokens(request: Request) -> TrackingTokens:
    return TrackingTokens(runtime_of(request).secret_key)


@router.get(
    CLICK_PATH + "{token}",
    status_code=302,
    response_class=Response,
    summary="Follow a tracked link",
    responses={
        302: {"description": "To the link's destination; the click is recorded"},
        404: {"description": "The link is not valid", "content": {"text/html": {}}},
    },
)
async def click(request: Request, token: str) -> Response:
    """Redirects to the destination signed in the token and records a click. A token this
    server did not mint (tampered with, truncated) gets a 404 page, never a redirect: the
    redirect leads only where Tidings rewrote a link."""
    clicked = _tokens(request).verify_click(token)
    if clicked is None:
        return HTMLResponse(_INVALID, status_code=404, headers=_INVALID_HEADERS)
    # Recorded after the response has gone: the recipient does not wait for the write.
    task = BackgroundTask(
        service.record_quietly,
        runtime_of(request).db,
        EventKind.CLICK,
        clicked.workspace_id,
        clicked.message_id,
        link_index=clicked.index,
        url=clicked.url,
        user_agent=request.headers.get("user-agent"),
    )
    location = quote(clicked.url, safe=_LOCATION_SAFE)
    return Response(status_code=302, headers={**_NO_CACHE, "Location": location}, background=task)


@router.get(
    OPEN_PATH + "{token}",
    response_class=Response,
    summary="The open pixel",
    responses={200: {"description": "A transparent 1x1 GIF", "content": {"image/gif": {}}}},
)
async def pixel(request: Request, token: str) -> Response:
    """A transparent 1x1 GIF, never cached; records an open when the token is valid. An
    invalid token gets the same image (a broken-image icon would show in the message) and
    records nothing."""
    opened = _tokens(request).verify_open(token)
    task = None
    if opened is not None:
        task = BackgroundTask(
            service.record_quietly,
            runtime_of(request).db,
            EventKind.OPEN,
            opened.workspace_id,
            opened.message_id,
            user_agent=request.headers.get("user-agent"),
        )
    return Response(PIXEL, media_type="image/gif", headers=_NO_CACHE, background=task)
