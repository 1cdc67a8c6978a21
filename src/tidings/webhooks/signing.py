"""Standard Webhooks signatures: HMAC-SHA256 over id, timestamp and body, `whsec_` secrets.

The scheme (https://www.standardwebhooks.com): a request carries `webhook-id` (the event's
id, the same on every retry, for receivers to deduplicate), `webhook-timestamp` (seconds since
the epoch when this attempt was signed) and `webhook-signature`: `v1,` followed by the base64
HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with the secret's decoded bytes. While a secret
is being rotated each request is signed with both, the signatures separated by a space, so a
receiver that knows either verifies it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_secrets
import time
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
SIGNATURE_VERSION = "v1"
# How far a timestamp may be from the receiver's clock (the spec's reference libraries: 5 min).
DEFAULT_TOLERANCE_SECONDS = 300

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class SignatureInvalid(Exception):
    """The request's headers or signature do not verify; the message says which part."""


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a `whsec_` secret stands for (its base64 part, decoded)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("the secret is not whsec_ followed by base64") from None


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 signature>` of one request."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_header(secrets: Iterable[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets)


def signed_headers(
    secrets: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        HEADER_ID: message_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: signature_header(secrets, message_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> str:
    """Checks a received request against `secret`; returns its `webhook-id`.

    `headers` is looked up by lower-case name (a plain dict of lower-case names, or any
    case-insensitive mapping such as a web framework's). Raises SignatureInvalid when a
    header is missing, the timestamp is outside the tolerance (a replayed request), or no
    `v1` signature in the header matches.
    """
    message_id = headers.get(HEADER_ID)
    timestamp_text = headers.get(HEADER_TIMESTAMP)
    signatures = headers.get(HEADER_SIGNATURE)
    if not message_id or not timestamp_text or not signatures:
        raise SignatureInvalid("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise SignatureInvalid("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise SignatureInvalid("webhook-timestamp is too far from now")
    expected = sign(secret, message_id, timestamp, body).encode()
    for candidate in signatures.split(" "):
        if candidate.startswith(f"{SIGNATURE_VERSION},") and hmac.compare_digest(
            candidate.encode(), expected
        ):
            return message_id
    raise SignatureInvalid("no signature matches")
