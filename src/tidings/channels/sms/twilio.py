"""Twilio's Programmable Messaging API: sending one message, and checking Twilio's signatures.

A message is `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, with
HTTP basic auth (AccountSid:AuthToken); Twilio answers 201 with the message's JSON (`sid`), or
an error JSON with its own `code` (21211: invalid To, 21610: the recipient replied STOP…),
which becomes the reason `twilio_<code>`. Twilio signs the webhooks it sends (status
callbacks, inbound messages) with the same auth token: `X-Twilio-Signature` is the base64
HMAC-SHA1 of the full URL followed by every form parameter's name and value, sorted by name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from tidings.channels.adapters import Accepted, OutboundMessage, SendFailed, SendOutcome
from tidings.channels.sms.http import is_transient, retry_after, transport_failure

API_VERSION = "2010-04-01"
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"


def messages_url(api_base: str, account_sid: str) -> str:
    sid = quote(account_sid, safe="")
    return f"{api_base.rstrip('/')}/{API_VERSION}/Accounts/{sid}/Messages.json"


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """X-Twilio-Signature of a request to `url` carrying these form parameters."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_valid(
    auth_token: str, url: str, params: Sequence[tuple[str, str]], given: str
) -> bool:
    if not auth_token or not given:
        return False
    # Bytes, not str: compare_digest refuses str with non-ASCII characters (a 500 for any
    # caller who sends one in the header).
    return hmac.compare_digest(
        signature(auth_token, url, params).encode(), given.encode("utf-8", "surrogateescape")
    )


def form(message: OutboundMessage, status_callback: str | None) -> list[tuple[str, str]]:
    """The form fields of one message; MediaUrl repeats, one per image (MMS)."""
    settings = message.settings
    fields = [("To", message.to)]
    if settings.get("messaging_service_sid"):
        # A messaging service picks the sender from its pool (and handles opt-outs itself).
        fields.append(("MessagingServiceSid", settings["messaging_service_sid"]))
    else:
        fields.append(("From", settings["from_number"]))
    body = message.content.get("body")
    if body:
        fields.append(("Body", body))
    for url in message.content.get("media_urls") or ():
        fields.append(("MediaUrl", url))
    if status_callback:
        fields.append(("StatusCallback", status_callback))
    return fields


def _error(response: httpx.Response) -> tuple[str | None, str]:
    """Twilio's error code and message from an error answer (which may not be JSON)."""
    try:
        data: Any = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, Mapping):
        code = data.get("code")
        text = data.get("message")
        return (str(code) if code is not None else None), str(text or response.reason_phrase)
    return None, response.text[:500] or response.reason_phrase


class TwilioSender:
    """Sends one message at a time over a shared client; never raises for a message's own
    failure."""

    def __init__(self, client: httpx.AsyncClient, api_base: str, public_url: str) -> None:
        self.client = client
        self.api_base = api_base
        self.status_callback = f"{public_url.rstrip('/')}{STATUS_CALLBACK_PATH}"

    async def send(self, message: OutboundMessage) -> SendOutcome:
        settings = message.settings
        account_sid, auth_token = settings.get("account_sid"), settings.get("auth_token")
        if not account_sid or not auth_token:
            return SendFailed(
                message.message_id,
                "provider_not_configured",
                "the configuration has no Twilio account_sid and auth_token",
                retryable=False,
            )
        try:
            response = await self.client.post(
                messages_url(self.api_base, account_sid),
                content=urlencode(form(message, self.status_callback)).encode(),
                auth=(account_sid, auth_token),
                headers={
                    "Accept": "application/json",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
        except httpx.HTTPError as exc:
            return transport_failure(message.message_id, exc, "Twilio")
        return classify(message.message_id, response)


def classify(message_id: str, response: httpx.Response) -> SendOutcome:
    status = response.status_code
    if 200 <= status < 300:
        try:
            data: Any = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        # Twilio took it: a body we cannot read must not make us send it again.
        sid = data.get("sid") if isinstance(data, Mapping) else None
        return Accepted(message_id, str(sid) if sid else None)
    code, text = _error(response)
    reason = f"twilio_{code}" if code else f"http_{status}"
    detail = f"Twilio answered {status}" + (f" (error {code})" if code else "") + f": {text}"
    if is_transient(status):
        return SendFailed(
            message_id, reason, detail, retryable=True, retry_after=retry_after(response)
        )
    return SendFailed(message_id, reason, detail, retryable=False)
