"""Amazon SNS HTTP(S) deliveries: signature verification and subscription confirmation.

SNS signs the canonical string of a message (RFC-free, AWS's own: for each of a fixed list of
keys present, "Key\\nValue\\n", keys in byte order) with RSA: SHA1 for SignatureVersion 1,
SHA256 for 2. The certificate comes from SigningCertURL, which must be https on a host
matching TIDINGS_SNS_HOST_PATTERN (by default `sns.<region>.amazonaws.com`); it is fetched
once per URL and cached. SubscriptionConfirmation messages are verified the same way, then
confirmed by a GET of their SubscribeURL, which must be on such a host too.

Outbound calls go through an HttpPort: strict timeouts, no redirects followed, bodies capped.
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tidings.errors import PermissionDenied, Unavailable

DEFAULT_HOST_PATTERN = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"
_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
SUBSCRIPTION_TYPES = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})
NOTIFICATION = "Notification"
MAX_CERTIFICATE_BYTES = 64 * 1024
MAX_CONFIRMATION_BYTES = 64 * 1024
CACHED_CERTIFICATES = 32
TIMEOUT = httpx.Timeout(5.0)
LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=0)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes


class HttpPort(Protocol):
    """GETs a URL; raises OSError-like httpx errors, or ValueError past max_bytes."""

    async def get(self, url: str, *, max_bytes: int) -> HttpResponse: ...


class HttpxPort:
    """The real HttpPort: a short-lived httpx client per call (calls are rare: a certificate
    per URL, once; a confirmation per subscription)."""

    def __init__(self, verify: ssl.SSLContext | bool = True) -> None:
        self._verify = verify

    async def get(self, url: str, *, max_bytes: int) -> HttpResponse:
        async with (
            httpx.AsyncClient(
                timeout=TIMEOUT, limits=LIMITS, follow_redirects=False, verify=self._verify
            ) as client,
            client.stream("GET", url) as response,
        ):
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ValueError(f"the response is larger than {max_bytes} bytes")
            return HttpResponse(response.status_code, bytes(body))


def canonical_string(message: Mapping[str, Any]) -> bytes:
    """The bytes SNS signed for this message."""
    kind = message.get("Type")
    keys = _SUBSCRIPTION_KEYS if kind in SUBSCRIPTION_TYPES else _NOTIFICATION_KEYS
    lines = []
    for key in keys:
        value = message.get(key)
        if value is None:
            continue  # Subject is optional
        lines.append(f"{key}\n{value}\n")
    return "".join(lines).encode("utf-8")


class SnsVerifier:
    """Verifies SNS messages and confirms subscriptions; keeps certificates by URL."""

    def __init__(
        self,
        http: HttpPort,
        *,
        host_pattern: str = DEFAULT_HOST_PATTERN,
        topic_arns: frozenset[str] | None = None,
    ) -> None:
        self.http = http
        self._host = re.compile(host_pattern, re.IGNORECASE)
        # None: any topic AWS signed; a set: only these (empty: none at all).
        self.topic_arns = topic_arns
        self._certificates: dict[str, rsa.RSAPublicKey] = {}

    def _allowed_url(self, url: Any) -> bool:
        if not isinstance(url, str):
            return False
        parts = urlsplit(url)
        return (
            parts.scheme == "https"
            and not parts.username
            and not parts.password
            and bool(self._host.fullmatch(parts.netloc))
        )

    async def _public_key(self, url: str) -> rsa.RSAPublicKey:
        cached = self._certificates.get(url)
        if cached is not None:
            return cached
        if not url.endswith(".pem"):
            raise PermissionDenied("SigningCertURL is not a certificate of Amazon SNS")
        try:
            response = await self.http.get(url, max_bytes=MAX_CERTIFICATE_BYTES)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            raise Unavailable(f"the SNS signing certificate could not be fetched: {exc}") from None
        if response.status != 200:
            raise Unavailable(f"the SNS signing certificate answered {response.status}")
        try:
            key = x509.load_pem_x509_certificate(response.body).public_key()
        except ValueError:
            raise PermissionDenied("the SNS signing certificate is not a PEM certificate") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise PermissionDenied("the SNS signing certificate does not hold an RSA key")
        if len(self._certificates) >= CACHED_CERTIFICATES:
            self._certificates.pop(next(iter(self._certificates)))
        self._certificates[url] = key
        return key

    async def verify(self, message: Mapping[str, Any]) -> None:
        """Raises PermissionDenied unless SNS signed this message (for an allowed topic)."""
        if self.topic_arns is not None and message.get("TopicArn") not in self.topic_arns:
            raise PermissionDenied("the SNS topic is not one TIDINGS_SNS_TOPIC_ARNS allows")
        version = message.get("SignatureVersion")
        algorithm: hashes.HashAlgorithm
        if version == "1":
            algorithm = hashes.SHA1()
        elif version == "2":
            algorithm = hashes.SHA256()
        else:
            raise PermissionDenied("the SNS message has no SignatureVersion 1 or 2")
        url = message.get("SigningCertURL")
        if not self._allowed_url(url):
            raise PermissionDenied("SigningCertURL is not an https URL of Amazon SNS")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise PermissionDenied("the SNS signature is not base64") from None
        key = await self._public_key(str(url))
        try:
            key.verify(signature, canonical_string(message), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise PermissionDenied("the SNS signature does not verify") from None

    async def confirm(self, message: Mapping[str, Any]) -> None:
        """Confirms a (verified) subscription by visiting its SubscribeURL."""
        url = message.get("SubscribeURL")
        if not self._allowed_url(url):
            raise PermissionDenied("SubscribeURL is not an https URL of Amazon SNS")
        try:
            response = await self.http.get(str(url), max_bytes=MAX_CONFIRMATION_BYTES)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            raise Unavailable(f"the SNS subscription could not be confirmed: {exc}") from None
        if response.status != 200:
            raise Unavailable(f"confirming the SNS subscription answered {response.status}")
