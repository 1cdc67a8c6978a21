"""Loopback stand-ins for FCM and APNs that speak their real wire protocols.

FcmFake is an HTTP/1.1 server with Google's OAuth2 token endpoint (RFC 7523 jwt-bearer grant:
the assertion's RS256 signature is checked with the service account's public key) and FCM's
HTTP v1 `messages:send` (the bearer must be a token it issued). ApnsFake is an HTTP/2 server
(h2c, prior knowledge) with APNs's `POST /3/device/{token}`: the provider token's ES256
signature is checked with the team key's public half, and the topic against the bundle id.
Both answer as told per device token, and record what they received.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import h2.config
import h2.connection
import h2.events
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

Answer = tuple[int, dict[str, Any] | None, dict[str, str]]


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def split_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    header, claims, signature = token.split(".")
    return (
        json.loads(_unb64(header)),
        json.loads(_unb64(claims)),
        f"{header}.{claims}".encode(),
        _unb64(signature),
    )


def rsa_key() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return key, pem


def p256_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return key, pem


def fcm_error(status: int, grpc_status: str, message: str, code: str | None = None) -> Answer:
    details: list[dict[str, Any]] = []
    if code:
        details.append(
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
        )
    body = {
        "error": {"code": status, "message": message, "status": grpc_status, "details": details}
    }
    return status, body, {}


FCM_UNREGISTERED = fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
FCM_BAD_TOKEN = fcm_error(
    400,
    "INVALID_ARGUMENT",
    "The registration token is not a valid FCM registration token",
    "INVALID_ARGUMENT",
)


@dataclass
class FcmFake:
    project_id: str = "tidings-test"
    client_email: str = "sender@tidings-test.iam.gserviceaccount.com"
    # Device token -> the answer to a send to it (default: 200 with a message name).
    answers: dict[str, Answer] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    token_requests: int = 0
    # Access tokens FCM no longer takes (401), as if revoked.
    revoked: set[str] = field(default_factory=set)
    issued: set[str] = field(default_factory=set)
    expires_in: int = 3599

    def __post_init__(self) -> None:
        self.key, self.private_key_pem = rsa_key()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _fcm_handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def service_account_json(self) -> str:
        return json.dumps(
            {
                "type": "service_account",
                "project_id": self.project_id,
                "private_key_id": "k1",
                "private_key": self.private_key_pem,
                "client_email": self.client_email,
                "client_id": "1",
                "token_uri": f"{self.url}/token",
            }
        )

    def settings(self) -> dict[str, Any]:
        return {
            "provider": "fcm",
            "app_id": "com.example.app",
            "fcm_project_id": self.project_id,
            "fcm_service_account_json": self.service_account_json,
        }

    def __enter__(self) -> FcmFake:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def token(self, form: dict[str, list[str]]) -> Answer:
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return 400, {"error": "unsupported_grant_type"}, {}
        header, claims, signed, signature = split_jwt(form["assertion"][0])
        try:
            self.key.public_key().verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            refusal = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            return 400, refusal, {}
        expected = {"iss": self.client_email, "scope": FCM_SCOPE, "aud": f"{self.url}/token"}
        if (
            header.get("alg") != "RS256"
            or header.get("kid") != "k1"
            or any(claims.get(name) != value for name, value in expected.items())
            or claims["exp"] - claims["iat"] != 3600
            or abs(claims["iat"] - time.time()) > 60
        ):
            return 400, {"error": "invalid_grant", "error_description": "Bad claims"}, {}
        with self.lock:
            self.token_requests += 1
            value = f"ya29.fake-{self.token_requests}"
            self.issued.add(value)
        token = {"access_token": value, "expires_in": self.expires_in, "token_type": "Bearer"}
        return 200, token, {}

    def send(self, path: str, authorization: str, body: dict[str, Any]) -> Answer:
        if path != f"/v1/projects/{self.project_id}/messages:send":
            return fcm_error(404, "NOT_FOUND", "no such project")
        bearer = authorization.removeprefix("Bearer ")
        if bearer not in self.issued or bearer in self.revoked:
            return fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication")
        message = body.get("message")
        if not isinstance(message, dict) or not message.get("token"):
            return fcm_error(400, "INVALID_ARGUMENT", "message.token is required")
        data = message.get("data", {})
        if not all(isinstance(v, str) for v in data.values()):
            return fcm_error(400, "INVALID_ARGUMENT", "data values must be strings")
        with self.lock:
            self.received.append(message)
            number = len(self.received)
        answer = self.answers.get(message["token"])
        if answer is not None:
            return answer
        return 200, {"name": f"projects/{self.project_id}/messages/0:{number}"}, {}


def _fcm_handler(fake: FcmFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length)
            if self.path == "/token":
                answer = fake.token(parse_qs(raw.decode()))
            else:
                assert self.headers["content-type"].startswith("application/json")
                answer = fake.send(
                    self.path, self.headers.get("authorization", ""), json.loads(raw)
                )
            status, body, headers = answer
            payload = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("content-type", "application/json; charset=UTF-8")
            self.send_header("content-length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@dataclass
class ApnsRequest:
    token: str
    headers: dict[str, str]
    payload: dict[str, Any]


@dataclass
class ApnsFake:
    team_id: str = "TEAM123456"
    key_id: str = "KEY1234567"
    bundle_id: str = "com.example.app"
    answers: dict[str, Answer] = field(default_factory=dict)
    received: list[ApnsRequest] = field(default_factory=list)
    # Every distinct provider token seen, and those to refuse once as expired.
    provider_tokens: list[str] = field(default_factory=list)
    expired: set[str] = field(default_factory=set)
    connections: int = 0

    def __post_init__(self) -> None:
        self.key, self.private_key_pem = p256_key()
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.ids = itertools.count(1)

    def settings(self) -> dict[str, Any]:
        return {
            "provider": "apns",
            "app_id": self.bundle_id,
            "apns_team_id": self.team_id,
            "apns_key_id": self.key_id,
            "apns_private_key": self.private_key_pem,
            "apns_bundle_id": self.bundle_id,
            "apns_environment": "sandbox",
        }

    def __enter__(self) -> ApnsFake:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config=config)
        conn.initiate_connection()
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            sock.sendall(conn.data_to_send())
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = (dict(event.headers), bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        status, reply, extra = self.answer(headers, bytes(body))
                        payload = json.dumps(reply).encode() if reply is not None else b""
                        conn.send_headers(
                            event.stream_id,
                            [(":status", str(status)), *extra.items()],
                            end_stream=not payload,
                        )
                        if payload:
                            conn.send_data(event.stream_id, payload, end_stream=True)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        sock.sendall(conn.data_to_send())
                        return
                sock.sendall(conn.data_to_send())
        except OSError:
            return

    def answer(self, headers: dict[str, str], body: bytes) -> Answer:
        path = headers.get(":path", "")
        if headers.get(":method") != "POST" or not path.startswith("/3/device/"):
            return 404, {"reason": "BadPath"}, {}
        token = path.removeprefix("/3/device/")
        authorization = headers.get("authorization", "")
        if not authorization.startswith("bearer "):
            return 403, {"reason": "MissingProviderToken"}, {}
        provider_token = authorization.removeprefix("bearer ")
        header, claims, signed, signature = split_jwt(provider_token)
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        try:
            self.key.public_key().verify(
                encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256())
            )
        except Exception:
            return 403, {"reason": "InvalidProviderToken"}, {}
        if (
            len(signature) != 64
            or header != {"alg": "ES256", "kid": self.key_id}
            or claims.get("iss") != self.team_id
            or abs(claims.get("iat", 0) - time.time()) > 3600
        ):
            return 403, {"reason": "InvalidProviderToken"}, {}
        with self.lock:
            if provider_token not in self.provider_tokens:
                self.provider_tokens.append(provider_token)
            if provider_token in self.expired:
                return 403, {"reason": "ExpiredProviderToken"}, {}
        if headers.get("apns-topic") != self.bundle_id:
            return 400, {"reason": "TopicDisallowed"}, {}
        if headers.get("apns-push-type") != "alert":
            return 400, {"reason": "InvalidPushType"}, {}
        if len(body) > 4096:
            return 413, {"reason": "PayloadTooLarge"}, {}
        payload = json.loads(body)
        if not isinstance(payload.get("aps"), dict):
            return 400, {"reason": "PayloadEmpty"}, {}
        with self.lock:
            self.received.append(ApnsRequest(token, headers, payload))
        answer = self.answers.get(token)
        if answer is not None:
            return answer
        apns_id = headers.get("apns-id") or str(uuid.UUID(int=next(self.ids)))
        return 200, None, {"apns-id": apns_id}
