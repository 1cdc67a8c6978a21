"""Apple Push Notification service, token-based: `POST /3/device/{token}` over HTTP/2.

Every request carries a provider token, a JWT signed ES256 with the team's .p8 key (header
`kid`: the key id; claims `iss`: the team id, `iat`). Apple refuses one older than an hour and
throttles one minted more often than every twenty minutes, so it is cached per key and minted
again after fifty minutes, or once when APNs answers 403 ExpiredProviderToken. Answers: 200
accepted (the `apns-id` header is the provider's id); 410 Unregistered and 400 BadDeviceToken
mean the token is dead (`invalid_token`: the adapter removes it); 413 is `payload_too_large`;
429 and 5xx are transient; anything else is permanent, as `apns_<reason>`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from tidings.channels.adapters import Accepted, OutboundMessage, SendFailed, SendOutcome
from tidings.channels.push.http import (
    INVALID_TOKEN,
    PAYLOAD_TOO_LARGE,
    PROVIDER_MISCONFIGURED,
    ProviderUnavailable,
    is_transient,
    retry_after,
    snake,
    transport_failure,
)
from tidings.channels.push.jwt import InvalidKey, encode_es256
from tidings.channels.push.payload import MAX_PAYLOAD_BYTES, apns_payload

API_BASES = {
    "production": "https://api.push.apple.com",
    "sandbox": "https://api.sandbox.push.apple.com",
}
TOKEN_LIFETIME = 50 * 60.0
MAX_CACHED = 256
INVALID_TOKEN_REASONS = frozenset({"BadDeviceToken", "Unregistered", "ExpiredToken"})


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    minted_at: float


class ApnsSender:
    def __init__(
        self,
        client: httpx.AsyncClient,
        api_base: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`api_base` replaces Apple's hosts for every environment (tests, a proxy)."""
        self.client = client
        self.api_base = api_base.rstrip("/") if api_base else None
        self.clock = clock
        self._tokens: dict[str, _Token] = {}
        self.minted = 0

    def base_for(self, settings: Mapping[str, Any]) -> str:
        if self.api_base:
            return self.api_base
        return API_BASES.get(str(settings.get("apns_environment")), API_BASES["production"])

    async def send(self, message: OutboundMessage) -> SendOutcome:
        settings = message.settings
        body = orjson.dumps(apns_payload(message.content))
        if len(body) > MAX_PAYLOAD_BYTES:
            return SendFailed(
                message.message_id,
                PAYLOAD_TOO_LARGE,
                f"the APNs payload is {len(body)} bytes, over APNs's {MAX_PAYLOAD_BYTES}",
                retryable=False,
            )
        url = f"{self.base_for(settings)}/3/device/{quote(message.to, safe='')}"
        headers = {
            "apns-topic": str(settings.get("apns_bundle_id") or ""),
            "apns-push-type": "alert",
            "apns-priority": "10",
            # Our id is a UUID as APNs wants: the notification is traceable on both sides.
            "apns-id": message.message_id,
            "content-type": "application/json",
        }
        refused: str | None = None
        for _ in range(2):
            try:
                token = self.provider_token(settings, refused=refused)
            except ProviderUnavailable as exc:
                return exc.failure(message.message_id)
            try:
                response = await self.client.post(
                    url, content=body, headers={**headers, "authorization": f"bearer {token}"}
                )
            except httpx.HTTPError as exc:
                return transport_failure(message.message_id, exc, "APNs")
            if (
                response.status_code == 403
                and _reason(response) == "ExpiredProviderToken"
                and refused is None
            ):
                refused = token
                continue
            break
        return classify(message.message_id, response)

    def provider_token(self, settings: Mapping[str, Any], *, refused: str | None = None) -> str:
        """The cached provider token of the configuration's key, minted when missing, fifty
        minutes old, or equal to `refused`. Signing takes well under a millisecond: no lock."""
        team_id = str(settings.get("apns_team_id") or "")
        key_id = str(settings.get("apns_key_id") or "")
        private_key = str(settings.get("apns_private_key") or "")
        cache_key = hashlib.sha256(f"{team_id}\0{key_id}\0{private_key}".encode()).hexdigest()
        now = self.clock()
        token = self._tokens.get(cache_key)
        if token is not None and token.value != refused and now - token.minted_at < TOKEN_LIFETIME:
            return token.value
        try:
            value = encode_es256({"iss": team_id, "iat": int(now)}, private_key, kid=key_id)
        except InvalidKey as exc:
            raise ProviderUnavailable(
                PROVIDER_MISCONFIGURED, f"apns_private_key: {exc}", retryable=False
            ) from None
        if len(self._tokens) >= MAX_CACHED:
            self._tokens.clear()
        self._tokens[cache_key] = _Token(value, now)
        self.minted += 1
        return value


def _reason(response: httpx.Response) -> str:
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return ""
    return str(data.get("reason") or "") if isinstance(data, dict) else ""


def classify(message_id: str, response: httpx.Response) -> SendOutcome:
    status = response.status_code
    if status == 200:
        return Accepted(message_id, response.headers.get("apns-id") or None)
    reason = _reason(response)
    detail = f"APNs answered {status} {reason or response.reason_phrase}"
    if reason in INVALID_TOKEN_REASONS or status == 410:
        return SendFailed(message_id, INVALID_TOKEN, detail, retryable=False)
    if status == 413 or reason == "PayloadTooLarge":
        return SendFailed(message_id, PAYLOAD_TOO_LARGE, detail, retryable=False)
    code = f"apns_{snake(reason) if reason else status}"
    if is_transient(status):
        return SendFailed(
            message_id, code, detail, retryable=True, retry_after=retry_after(response)
        )
    return SendFailed(message_id, code, detail, retryable=False)
