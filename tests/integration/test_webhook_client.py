"""The real webhook sender against real servers: HTTPS to the pinned address verifies the
certificate of the URL's name; redirects are not followed; responses are read up to a cap."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tidings.webhooks.client import (
    MAX_POOLED_HOSTS,
    AddressPolicy,
    HttpWebhookSender,
    Outcome,
    SendResult,
    parse_networks,
)

pytestmark = pytest.mark.integration

CHUNK = b"x" * 65536
CHUNKS = 1024


def certificate_for(name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


class Seen:
    hosts: list[str]
    server_names: list[str | None]


@pytest.fixture
def tls_receiver() -> Iterator[tuple[ThreadingHTTPServer, bytes, Seen]]:
    """An HTTPS server on 127.0.0.1 whose certificate names hooks.test only."""
    cert_pem, key_pem = certificate_for("hooks.test")
    seen = Seen()
    seen.hosts, seen.server_names = [], []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.hosts.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        context.load_cert_chain(cert_file, key_file)

    def remember(sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        seen.server_names.append(server_name)

    context.sni_callback = remember  # type: ignore[assignment]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, cert_pem, seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def to_loopback(host: str, port: int) -> list[ipaddress.IPv4Address]:
    return [ipaddress.IPv4Address("127.0.0.1")]


def post(url: str, trusted: bytes) -> Outcome:
    context = ssl.create_default_context(cadata=trusted.decode())
    sender = HttpWebhookSender(
        AddressPolicy(allowed_networks=parse_networks("127.0.0.0/8")),
        resolver=to_loopback,
        verify=context,
    )

    async def run() -> Outcome:
        try:
            return (await sender.send(url, {}, b"{}")).outcome
        finally:
            await sender.close()

    return asyncio.run(run())


def test_the_name_is_sent_as_host_and_sni_and_its_certificate_verified(tls_receiver):
    server, cert_pem, seen = tls_receiver
    port = server.server_address[1]
    assert post(f"https://hooks.test:{port}/in", cert_pem) is Outcome.DELIVERED
    assert seen.hosts == [f"hooks.test:{port}"]
    assert seen.server_names == ["hooks.test"]


def test_a_certificate_for_another_name_is_refused(tls_receiver):
    server, cert_pem, seen = tls_receiver
    port = server.server_address[1]
    assert post(f"https://other.test:{port}/in", cert_pem) is Outcome.RETRY
    assert seen.hosts == []


@dataclass
class Streamed:
    finished: threading.Event = field(default_factory=threading.Event)
    completed: bool = False


@pytest.fixture
def plain_receiver() -> Iterator[tuple[ThreadingHTTPServer, Streamed]]:
    """/redirect answers 302 to the metadata service; /huge streams 64 MiB."""
    streamed = Streamed()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/ok":
                self.send_response(204)
                self.end_headers()
                return
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(CHUNKS * len(CHUNK)))
            self.end_headers()
            try:
                for _ in range(CHUNKS):
                    self.wfile.write(CHUNK)
                streamed.completed = True
            except OSError:
                pass  # the sender stopped reading and hung up, as it should
            finally:
                streamed.finished.set()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, streamed
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def send_plain(url: str) -> SendResult:
    sender = HttpWebhookSender(
        AddressPolicy(allowed_networks=parse_networks("127.0.0.1")), max_response_bytes=4096
    )

    async def run() -> SendResult:
        try:
            return await sender.send(url, {}, b"{}")
        finally:
            await sender.close()

    return asyncio.run(run())


def test_a_redirect_is_not_followed(plain_receiver):
    port = plain_receiver[0].server_address[1]
    result = send_plain(f"http://127.0.0.1:{port}/redirect")
    assert result.outcome is Outcome.RETRY
    assert result.status_code == 302
    assert result.error is not None and "redirect" in result.error


def test_a_huge_response_is_read_only_up_to_the_cap(plain_receiver):
    server, streamed = plain_receiver
    result = send_plain(f"http://127.0.0.1:{server.server_address[1]}/huge")
    assert result.outcome is Outcome.DELIVERED
    assert result.response_snippet is not None
    assert 0 < len(result.response_snippet) <= 512
    # The sender hung up long before the 64 MiB were through.
    assert streamed.finished.wait(10)
    assert not streamed.completed


def test_connections_are_kept_per_host_name_for_a_bounded_number_of_names(plain_receiver):
    server, _ = plain_receiver
    port = server.server_address[1]
    sender = HttpWebhookSender(
        AddressPolicy(allowed_networks=parse_networks("127.0.0.1")), resolver=to_loopback
    )

    async def run() -> tuple[set[Outcome], int]:
        try:
            outcomes = set()
            for index in range(MAX_POOLED_HOSTS + 6):
                result = await sender.send(f"http://h{index}.test:{port}/ok", {}, b"{}")
                outcomes.add(result.outcome)
            return outcomes, len(sender._clients)
        finally:
            await sender.close()

    outcomes, pooled = asyncio.run(run())
    assert outcomes == {Outcome.DELIVERED}
    assert pooled == MAX_POOLED_HOSTS
    assert sender._clients == {}
