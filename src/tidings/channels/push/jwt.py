"""The JSON Web Tokens push providers want: RS256 for Google's OAuth, ES256 for APNs.

Only signing, and only these two algorithms (RFC 7515/7518): a few lines over `cryptography`
rather than a JWT library whose verification paths Tidings would never use.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


class InvalidKey(ValueError):
    """The private key cannot be read, or is not of the algorithm's type."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _load(pem: str) -> Any:
    try:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"the private key is not a PEM key without password: {exc}") from None


def check_rsa_key(pem: str) -> None:
    if not isinstance(_load(pem), rsa.RSAPrivateKey):
        raise InvalidKey("RS256 needs an RSA private key")


def check_p256_key(pem: str) -> None:
    key = _load(pem)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidKey("ES256 needs a P-256 elliptic-curve private key (an APNs .p8 key)")


def _signing_input(header: Mapping[str, Any], claims: Mapping[str, Any]) -> bytes:
    return (b64url(orjson.dumps(header)) + "." + b64url(orjson.dumps(claims))).encode("ascii")


def encode_rs256(claims: Mapping[str, Any], private_key_pem: str, *, kid: str | None = None) -> str:
    key = _load(private_key_pem)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidKey("RS256 needs an RSA private key")
    header = {"alg": "RS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = _signing_input(header, claims)
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input.decode("ascii") + "." + b64url(signature)


def encode_es256(claims: Mapping[str, Any], private_key_pem: str, *, kid: str) -> str:
    key = _load(private_key_pem)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidKey("ES256 needs a P-256 elliptic-curve private key (an APNs .p8 key)")
    header = {"alg": "ES256", "kid": kid}
    signing_input = _signing_input(header, claims)
    # JWS wants the raw r || s (32 bytes each), not the DER sequence cryptography returns.
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing_input.decode("ascii") + "." + b64url(signature)
