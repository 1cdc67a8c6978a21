"""A generic HTTP SMS provider, described by the configuration instead of written as code.

The configuration names the endpoint (`endpoint_url`), the method (`http_method`, POST or
PUT), a JSON body template (`body_template`), an optional auth header (`auth_header_name`,
with its value `auth_header_value` stored as a secret) and where the provider's message id is
in its JSON answer (`id_path`, dotted; a number indexes a list: `messages.0.id`).

In the template, any string may hold the placeholders `{{to}}`, `{{from}}`, `{{body}}` and
`{{message_id}}`, replaced by text; a string that is exactly `{{media_urls}}` becomes the list
of media URLs. The body is built as data and then encoded, so nothing in a message can break
out of its JSON string. Answers are classified as every HTTP provider's (channels.sms.http).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from tidings.channels.adapters import Accepted, OutboundMessage, SendFailed, SendOutcome
from tidings.channels.sms.http import is_transient, retry_after, transport_failure

DEFAULT_BODY_TEMPLATE: dict[str, Any] = {"to": "{{to}}", "from": "{{from}}", "body": "{{body}}"}
MEDIA_PLACEHOLDER = "{{media_urls}}"


def _fill(value: Any, text: Mapping[str, str], media: list[str]) -> Any:
    if isinstance(value, str):
        if value == MEDIA_PLACEHOLDER:
            return media
        for placeholder, replacement in text.items():
            value = value.replace(placeholder, replacement)
        return value
    if isinstance(value, Mapping):
        return {key: _fill(item, text, media) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, text, media) for item in value]
    return value


def request_body(message: OutboundMessage) -> dict[str, Any]:
    template = message.settings.get("body_template") or DEFAULT_BODY_TEMPLATE
    text = {
        "{{to}}": message.to,
        "{{from}}": message.settings.get("from_number") or "",
        "{{body}}": message.content.get("body") or "",
        "{{message_id}}": message.message_id,
    }
    filled: dict[str, Any] = _fill(template, text, list(message.content.get("media_urls") or ()))
    return filled


def find(data: Any, path: str) -> Any:
    """The value at a dotted path of parsed JSON, or None."""
    for part in path.split(".") if path else ():
        if isinstance(data, Mapping):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


class GenericSender:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def send(self, message: OutboundMessage) -> SendOutcome:
        settings = message.settings
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if settings.get("auth_header_name") and settings.get("auth_header_value"):
            headers[settings["auth_header_name"]] = settings["auth_header_value"]
        try:
            response = await self.client.request(
                settings.get("http_method") or "POST",
                str(settings["endpoint_url"]),
                content=orjson.dumps(request_body(message)),
                headers=headers,
            )
        except httpx.HTTPError as exc:
            return transport_failure(message.message_id, exc, "the SMS provider")
        status = response.status_code
        if 200 <= status < 300:
            try:
                data: Any = orjson.loads(response.content) if response.content else None
            except orjson.JSONDecodeError:
                data = None
            found = find(data, settings.get("id_path") or "id")
            provider_id = str(found) if isinstance(found, str | int) and found != "" else None
            return Accepted(message.message_id, provider_id)
        detail = f"the SMS provider answered {status}: {response.text[:500]}"
        if is_transient(status):
            return SendFailed(
                message.message_id,
                f"http_{status}",
                detail,
                retryable=True,
                retry_after=retry_after(response),
            )
        return SendFailed(message.message_id, f"http_{status}", detail, retryable=False)
