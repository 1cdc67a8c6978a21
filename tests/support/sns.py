"""A fake Amazon SNS for tests: a signing certificate and key made on the spot, an HTTPS
server on loopback that serves the certificate and answers subscription confirmations the
way SNS does, and a signer for SNS messages (SignatureVersion 1 and 2)."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tidings.feedback.sns import canonical_string

CERT_PATH = "/SimpleNotificationService-test.pem"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:tidings-feedback"


@dataclass
class Credentials:
    key: rsa.RSAPrivateKey
    pem: bytes
    key_pem: bytes


def make_credentials() -> Credentials:
    """A self-signed certificate for 127.0.0.1: the TLS server's and the signing one."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return Credentials(
        key=key,
        pem=certificate.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def sign(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "2") -> dict[str, Any]:
    """The message with SignatureVersion and Signature as SNS sets them."""
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(canonical_string(message), padding.PKCS1v15(), algorithm)
    return {
        **message,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
    }


@dataclass
class FakeSns:
    """The running server: `base` is https://127.0.0.1:PORT; `requests` the paths asked for."""

    base: str
    credentials: Credentials
    requests: list[str] = field(default_factory=list)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.credentials.pem.decode())

    def notification(self, ses_message: str, *, version: str = "2", **extra: Any) -> dict[str, Any]:
        message = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": TOPIC,
            "Message": ses_message,
            "Timestamp": "2026-11-23T16:10:00.000Z",
            "SigningCertURL": self.base + CERT_PATH,
            "UnsubscribeURL": self.base + "/?Action=Unsubscribe",
            **extra,
        }
        return sign(message, self.credentials.key, version)

    def subscription(self) -> dict[str, Any]:
        token = uuid.uuid4().hex
        message = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe to the topic.",
            "SubscribeURL": f"{self.base}/?Action=ConfirmSubscription&Token={token}",
            "Timestamp": "2026-11-23T16:10:00.000Z",
            "SigningCertURL": self.base + CERT_PATH,
        }
        return sign(message, self.credentials.key, "1")


@contextmanager
def fake_sns() -> Iterator[FakeSns]:
    credentials = make_credentials()
    fake: FakeSns

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.requests.append(self.path)
            if self.path == CERT_PATH:
                body, kind = credentials.pem, "application/x-pem-file"
            elif self.path.startswith("/?Action=ConfirmSubscription"):
                body = b"<ConfirmSubscriptionResponse><SubscriptionArn>x</SubscriptionArn>"
                body += b"</ConfirmSubscriptionResponse>"
                kind = "text/xml"
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_file.write_bytes(credentials.pem)
        key_file.write_bytes(credentials.key_pem)
        context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    fake = FakeSns(f"https://127.0.0.1:{server.server_address[1]}", credentials)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
