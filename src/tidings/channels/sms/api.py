"""Twilio's webhooks: message status callbacks and inbound messages (STOP/START keywords).

Neither takes an API key: Twilio signs each request (X-Twilio-Signature) with the auth token
of a channel configuration, which channels.sms.service checks. Configure at Twilio:
`{TIDINGS_PUBLIC_URL}/webhooks/twilio/status` is sent with every message as its
StatusCallback, and `{TIDINGS_PUBLIC_URL}/webhooks/twilio/inbound` is the number's (or the
messaging service's) "A message comes in" webhook, HTTP POST.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from tidings.channels.sms import service
from tidings.channels.sms.twilio import INBOUND_PATH, STATUS_CALLBACK_PATH
from tidings.web import runtime_of

router = APIRouter(tags=["Webhooks"])

SIGNATURE_HEADER = "X-Twilio-Signature"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_SIGNED: dict[int | str, dict[str, Any]] = {
    403: {"description": "The signature does not match the request"}
}


async def _read(request: Request) -> tuple[str, list[tuple[str, str]], str]:
    params = service.parse_form(await request.body())
    url = service.signed_url(
        runtime_of(request).settings.resolved_public_url, request.url.path, request.url.query
    )
    return url, params, request.headers.get(SIGNATURE_HEADER, "")


@router.post(
    STATUS_CALLBACK_PATH,
    status_code=204,
    summary="Twilio message status callback",
    responses=_SIGNED,
)
async def twilio_status(request: Request) -> Response:
    """Moves a sent message to `delivered`, or to `bounced` (reason `twilio_<ErrorCode>`) for
    `undelivered` and `failed`; other statuses change nothing. A MessageSid Tidings does not
    know is acknowledged (204) and changes nothing."""
    url, params, given = await _read(request)
    await run_in_threadpool(service.status_callback, runtime_of(request).db, url, params, given)
    return Response(status_code=204)


@router.post(
    INBOUND_PATH,
    response_class=Response,
    summary="Twilio inbound message (STOP / START keywords)",
    responses={200: {"content": {"text/xml": {}}}, **_SIGNED},
)
async def twilio_inbound(request: Request) -> Response:
    """STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT set the sender's SMS marketing consent
    `out` (source `sms_keyword`); START, YES, UNSTOP set it `in`. A number without a profile
    gets a `manual` suppression (source `sms_stop`) on STOP, which START removes. Answers an
    empty TwiML document: Twilio sends its own compliance replies."""
    url, params, given = await _read(request)
    await run_in_threadpool(service.inbound, runtime_of(request).db, url, params, given)
    return Response(EMPTY_TWIML, media_type="text/xml")
