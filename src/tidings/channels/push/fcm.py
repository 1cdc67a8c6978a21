"""Firebase Cloud Messaging, HTTP v1 API: an OAuth2 token minted from the service account,
then one `POST {base}/v1/projects/{project}/messages:send` per notification.

The access token comes from Google's OAuth2 token endpoint (the service account's
`token_uri`) in exchange for a JWT signed RS256 with the account's private key (RFC 7523's
jwt-bearer grant). It lives an hour; it is cached per service account and minted again five
minutes before it expires, or once when FCM answers 401 (revoked, clock skew). Concurrent
sends share one minting. Answers: 200 accepted (`name` is the provider's id); UNREGISTERED,
or INVALID_ARGUMENT about the token, mean the token is dead (`invalid_token`: the adapter
removes it); 429 and 5xx are transient, after the Retry-After FCM gives; anything else is
permanent, as `fcm_<errorCode or status>`.
"""

from __future__ import annotations

import asyncio
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
    PROVIDER_AUTH_FAILED,
    PROVIDER_MISCONFIGURED,
    ProviderUnavailable,
    is_transient,
    retry_after,
    snake,
    transport_failure,
)
from tidings.channels.push.jwt import InvalidKey, encode_rs256
from tidings.channels.push.payload import MAX_PAYLOAD_BYTES, fcm_message, fcm_payload_size

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_API_BASE = "https://fcm.googleapis.com"
ASSERTION_LIFETIME = 3600
# A token this close to its expiry is minted again rather than sent.
REFRESH_MARGIN = 300.0
# Distinct service accounts whose tokens are kept; more is a leak (rotated keys), not a need.
MAX_CACHED = 256
# A failed minting is the answer for this long: the other messages of a batch fail with it
# at once instead of each waiting on a token endpoint that is down.
FAILURE_MEMORY = 30.0


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    client_email: str
    private_key: str
    private_key_id: str | None
    token_uri: str

    @classmethod
    def parse(cls, raw: str) -> ServiceAccount:
        """The fields of a service-account key file that minting a token needs."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValueError("fcm_service_account_json is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("fcm_service_account_json is not a JSON object")
        missing = [
            name
            for name in ("client_email", "private_key", "token_uri")
            if not isinstance(data.get(name), str) or not data[name]
        ]
        if missing:
            raise ValueError("fcm_service_account_json lacks " + ", ".join(missing))
        if not data["token_uri"].startswith(("https://", "http://")):
            raise ValueError("fcm_service_account_json has a token_uri that is not a URL")
        key_id = data.get("private_key_id")
        return cls(
            data["client_email"],
            data["private_key"],
            key_id if isinstance(key_id, str) and key_id else None,
            data["token_uri"],
        )


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float


class FcmSender:
    def __init__(
        self,
        client: httpx.AsyncClient,
        api_base: str = DEFAULT_API_BASE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.api_base = api_base.rstrip("/")
        self.clock = clock
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._failures: dict[str, tuple[ProviderUnavailable, float]] = {}
        # How many tokens were minted: for tests and logs, the cache's effect in one number.
        self.minted = 0

    async def send(self, message: OutboundMessage) -> SendOutcome:
        settings = message.settings
        body = {"message": fcm_message(message.to, message.content)}
        size = fcm_payload_size(body["message"])
        if size > MAX_PAYLOAD_BYTES:
            return SendFailed(
                message.message_id,
                PAYLOAD_TOO_LARGE,
                f"the FCM payload is {size} bytes, over FCM's {MAX_PAYLOAD_BYTES}",
                retryable=False,
            )
        project = quote(str(settings.get("fcm_project_id") or ""), safe="")
        url = f"{self.api_base}/v1/projects/{project}/messages:send"
        content = orjson.dumps(body)
        refused: str | None = None
        for _ in range(2):
            try:
                token = await self.access_token(settings, refused=refused)
            except ProviderUnavailable as exc:
                return exc.failure(message.message_id)
            try:
                response = await self.client.post(
                    url,
                    content=content,
                    headers={
                        "authorization": f"Bearer {token}",
                        "content-type": "application/json; charset=utf-8",
                    },
                )
            except httpx.HTTPError as exc:
                return transport_failure(message.message_id, exc, "FCM")
            if response.status_code == 401 and refused is None:
                refused = token  # revoked or expired early: mint once more, then believe it
                continue
            break
        return classify(message.message_id, response)

    async def access_token(self, settings: Mapping[str, Any], *, refused: str | None = None) -> str:
        """The cached access token of the configuration's service account, minted when
        missing, near its expiry, or equal to `refused` (the one FCM just refused)."""
        raw = str(settings.get("fcm_service_account_json") or "")
        key = hashlib.sha256(raw.encode()).hexdigest()
        token = self._tokens.get(key)
        if self._usable(token, refused):
            assert token is not None
            return token.value
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            token = self._tokens.get(key)  # minted by whoever held the lock before
            if self._usable(token, refused):
                assert token is not None
                return token.value
            failed = self._failures.get(key)
            if failed is not None and failed[1] > self.clock():
                raise failed[0]
            try:
                token = await self._mint(ServiceAccount.parse(raw))
            except ValueError as exc:
                failure = ProviderUnavailable(PROVIDER_MISCONFIGURED, str(exc), retryable=False)
                self._failures[key] = (failure, self.clock() + FAILURE_MEMORY)
                raise failure from None
            except ProviderUnavailable as exc:
                self._failures[key] = (exc, self.clock() + FAILURE_MEMORY)
                raise
            self._failures.pop(key, None)
            if len(self._tokens) >= MAX_CACHED:
                self._tokens.clear()
                self._failures.clear()
            self._tokens[key] = token
            return token.value

    def _usable(self, token: _Token | None, refused: str | None) -> bool:
        return (
            token is not None
            and token.value != refused
            and token.expires_at - REFRESH_MARGIN > self.clock()
        )

    async def _mint(self, account: ServiceAccount) -> _Token:
        now = int(self.clock())
        claims = {
            "iss": account.client_email,
            "scope": SCOPE,
            "aud": account.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        try:
            assertion = encode_rs256(claims, account.private_key, kid=account.private_key_id)
        except InvalidKey as exc:
            raise ProviderUnavailable(
                PROVIDER_MISCONFIGURED, f"fcm_service_account_json: {exc}", retryable=False
            ) from None
        try:
            response = await self.client.post(
                account.token_uri,
                data={"grant_type": GRANT_TYPE, "assertion": assertion},
                headers={"accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            failure = transport_failure("", exc, "the FCM token endpoint")
            raise ProviderUnavailable(failure.reason, failure.detail, retryable=True) from None
        answer = _json(response)
        if response.status_code != 200:
            detail = (
                f"the FCM token endpoint answered {response.status_code}: "
                f"{answer.get('error', '')} {answer.get('error_description', '')}".rstrip()
            )
            if is_transient(response.status_code):
                raise ProviderUnavailable(
                    "fcm_token_unavailable",
                    detail,
                    retryable=True,
                    retry_after=retry_after(response),
                )
            raise ProviderUnavailable(PROVIDER_AUTH_FAILED, detail, retryable=False)
        value = answer.get("access_token")
        if not isinstance(value, str) or not value:
            raise ProviderUnavailable(
                PROVIDER_AUTH_FAILED, "the FCM token endpoint gave no access_token", retryable=True
            )
        expires_in = answer.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        self.minted += 1
        return _Token(value, now + lifetime)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_code(error: Mapping[str, Any]) -> str | None:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("FcmError"):
            code = detail.get("errorCode")
            return str(code) if code else None
    return None


def _about_the_token(error: Mapping[str, Any]) -> bool:
    """Whether an INVALID_ARGUMENT names the registration token rather than another field."""
    for detail in error.get("details") or ():
        if not isinstance(detail, dict):
            continue
        for violation in detail.get("fieldViolations") or ():
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return "registration token" in str(error.get("message", "")).lower()


def classify(message_id: str, response: httpx.Response) -> SendOutcome:
    status = response.status_code
    answer = _json(response)
    if status == 200:
        name = answer.get("name")
        return Accepted(message_id, str(name)[:200] if name else None)
    error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
    assert isinstance(error, dict)
    code = _error_code(error)
    grpc_status = str(error.get("status") or "")
    text = str(error.get("message") or response.reason_phrase)
    detail = f"FCM answered {status} {code or grpc_status}: {text}"
    if code == "UNREGISTERED" or (
        (code or grpc_status) == "INVALID_ARGUMENT" and _about_the_token(error)
    ):
        return SendFailed(message_id, INVALID_TOKEN, detail, retryable=False)
    if is_transient(status):
        return SendFailed(
            message_id,
            f"fcm_{snake(code or grpc_status or str(status))}",
            detail,
            retryable=True,
            retry_after=retry_after(response),
        )
    if status == 401:
        return SendFailed(message_id, PROVIDER_AUTH_FAILED, detail, retryable=False)
    return SendFailed(
        message_id, f"fcm_{snake(code or grpc_status or str(status))}", detail, retryable=False
    )
