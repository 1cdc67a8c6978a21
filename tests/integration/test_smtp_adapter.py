"""The SMTP adapter against a real SMTP server (aiosmtpd) on loopback: pooling, content, errors."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tidings.channels.adapters import (
    THROTTLED,
    Accepted,
    OutboundMessage,
    SendFailed,
    SendOutcome,
)
from tidings.channels.email import smtp
from tidings.channels.email.dkim import dns_record
from tidings.channels.email.smtp import SmtpAdapter, SmtpRelay, _Session

pytestmark = pytest.mark.integration


@dataclass
class Received:
    peer: Any
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    def parsed(self) -> EmailMessage:
        message = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class RecordingHandler:
    """Records what arrives; can be told to refuse recipients, drop or stall sessions."""

    received: list[Received] = field(default_factory=list)
    # One entry per session that started a transaction: the client port tells sessions apart.
    peers: set[Any] = field(default_factory=set)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    drop_at_data: set[str] = field(default_factory=set)
    # The reply to the end of the data of a message to one of these recipients.
    data_replies: dict[str, str] = field(default_factory=dict)
    resets: int = 0
    stall_at_data: float = 0.0
    # Answer 421 and hang up on MAIL once a session has carried this many messages.
    messages_per_session: int | None = None
    logins: list[tuple[str, str]] = field(default_factory=list)
    quits: int = 0
    transports: list[Any] = field(default_factory=list)
    # Advertise PIPELINING (RFC 2920), as Postfix does; aiosmtpd reads pipelined commands
    # line by line either way, but the client only pipelines when it is offered.
    pipelining: bool = False
    # Advertise STARTTLS without being able to do it (the server then answers 454).
    false_starttls: bool = False
    # Whether each transaction came over TLS.
    tls: list[bool] = field(default_factory=list)
    _carried: dict[Any, int] = field(default_factory=dict)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        if self.false_starttls:
            responses.insert(1, "250-STARTTLS")
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        self.peers.add(session.peer)
        self.tls.append(session.ssl is not None)
        self.transports.append(server.transport)
        limit = self.messages_per_session
        if limit is not None and self._carried.get(session.peer, 0) >= limit:
            assert server.transport is not None
            server.loop.call_soon(server.transport.close)
            return "421 4.7.0 Too many messages in this session"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.drop_at_data & set(envelope.rcpt_tos):
            assert server.transport is not None
            server.transport.close()
            return "250 OK"
        if self.stall_at_data:
            await asyncio.sleep(self.stall_at_data)
        for address in envelope.rcpt_tos:
            if address in self.data_replies:
                return self.data_replies[address]
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        self.received.append(
            Received(session.peer, envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        )
        self._carried[session.peer] = self._carried.get(session.peer, 0) + 1
        return f"250 2.0.0 Ok: queued as Q{len(self.received)}"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.resets += 1
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 Bye"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append((login, password))
        # handled=False: aiosmtpd then sends the 535 itself.
        return AuthResult(success=(login, password) == ("mailer", "p@ss w0rd"), handled=False)


@dataclass
class SmtpServer:
    handler: RecordingHandler
    controller: Controller
    port: int

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def drop_sessions(self) -> None:
        """Closes every session from the server's side, as an idle timeout would."""
        for transport in self.handler.transports:
            self.controller.loop.call_soon_threadsafe(transport.close)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_server(
    *,
    pipelining: bool = False,
    false_starttls: bool = False,
    auth_require_tls: bool = False,
    **options: Any,
) -> Iterator[SmtpServer]:
    handler = RecordingHandler(pipelining=pipelining, false_starttls=false_starttls)
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=handler.authenticate,
        # AUTH is offered but not required; aiosmtpd refuses AUTH without TLS unless told.
        auth_require_tls=auth_require_tls,
        **options,
    )
    controller.start()
    try:
        yield SmtpServer(handler, controller, port)
    finally:
        controller.stop()


@pytest.fixture(params=[False, True], ids=["one-command-a-time", "pipelining"])
def smtp_server(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    with running_server(pipelining=request.param) as server:
        yield server


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    # scripts/ensure-test-services installs it (make test runs that first).
    assert openssl is not None, "the openssl command is needed to make a test certificate"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(command, check=True, capture_output=True)
    return Certificate(cert, key)


def outbound(
    index: int,
    *,
    url: str | None,
    to: str | None = None,
    headers: dict[str, str] | None = None,
    **content: str,
) -> OutboundMessage:
    settings: dict[str, Any] = {"from_address": "news@example.com", "from_name": "News"}
    if url is not None:
        settings["smtp_url"] = url
    if headers is not None:
        settings["headers"] = headers
    return OutboundMessage(
        message_id=f"0190-{index:04d}",
        to=to or f"user{index}@example.org",
        content=content or {"subject": f"Hello {index}", "html": f"<p>Message {index}</p>"},
        settings=settings,
    )


def send(
    adapter: SmtpAdapter, *batches: Sequence[OutboundMessage], pause: float = 0.0
) -> list[list[SendOutcome]]:
    """Sends the batches one after the other on one event loop, then closes the adapter."""

    async def run() -> list[list[SendOutcome]]:
        results = []
        try:
            for batch in batches:
                results.append(await adapter.send(batch))
                await asyncio.sleep(pause)
        finally:
            await adapter.close()
        return results

    return asyncio.run(run())


def failure(outcome: SendOutcome) -> SendFailed:
    assert isinstance(outcome, SendFailed), outcome
    return outcome


def test_a_batch_travels_over_the_pools_persistent_connections(smtp_server: SmtpServer):
    adapter = SmtpAdapter(pool_size=4, local_hostname="client.test")
    first = [outbound(i, url=smtp_server.url) for i in range(50)]
    second = [outbound(i, url=smtp_server.url) for i in range(50, 100)]
    started = time.monotonic()
    results = send(adapter, first, second)
    elapsed = time.monotonic() - started

    for batch, outcomes in zip((first, second), results, strict=True):
        assert [outcome.message_id for outcome in outcomes] == [m.message_id for m in batch]
        assert all(isinstance(outcome, Accepted) for outcome in outcomes), outcomes
    provider_ids = {o.provider_message_id for r in results for o in r if isinstance(o, Accepted)}
    assert provider_ids == {f"Q{n}" for n in range(1, 101)}
    assert len(smtp_server.handler.received) == 100
    # Both batches shared the same few sessions: at most one per pool slot, all told.
    assert 1 <= len(smtp_server.handler.peers) <= 4
    assert smtp_server.handler.quits == len(smtp_server.handler.peers)
    assert elapsed < 10


def test_content_and_envelope_arrive_intact(smtp_server: SmtpServer):
    html = "<h1>Grüße, Zoë</h1><p>Your order <a href='https://shop.test/o/42'>#42</a> ships.</p>"
    text = "Grüße, Zoë\n\nYour order #42 ships: https://shop.test/o/42\n"
    message = OutboundMessage(
        message_id="0190-aaaa",
        to="zoe@exämple.org",
        content={"subject": "Ihre Bestellung 🎉 ist unterwegs", "html": html, "text": text},
        settings={
            "from_address": "shop@example.com",
            "from_name": "Bäckerei Müller, Berlin",
            "reply_to": "help@example.com",
            "smtp_url": smtp_server.url,
            "headers": {"X-Campaign": "orders", "X-Note": "über"},
        },
        headers={"List-Unsubscribe": "<https://shop.test/u/1>", "x-campaign": "override"},
    )
    [[outcome]] = send(SmtpAdapter(local_hostname="client.test"), [message])

    assert isinstance(outcome, Accepted)
    [received] = smtp_server.handler.received
    assert received.mail_from == "shop@example.com"
    assert received.rcpt_tos == ["zoe@xn--exmple-cua.org"]
    parsed = received.parsed()
    assert parsed["Subject"] == "Ihre Bestellung 🎉 ist unterwegs"
    assert parsed["From"].addresses[0].display_name == "Bäckerei Müller, Berlin"
    assert parsed["From"].addresses[0].addr_spec == "shop@example.com"
    assert parsed["To"] == "zoe@xn--exmple-cua.org"
    assert parsed["Reply-To"] == "help@example.com"
    assert parsed["Message-ID"] == "<0190-aaaa@example.com>"
    assert parsed["List-Unsubscribe"] == "<https://shop.test/u/1>"
    assert parsed.get_all("X-Campaign") == ["override"]
    assert parsed["X-Note"] == "über"
    plain, rich = parsed.iter_parts()
    assert plain.get_content().replace("\r\n", "\n") == text
    assert rich.get_content() == html


def test_a_451_reply_is_transient_and_the_session_carries_on(smtp_server: SmtpServer):
    smtp_server.handler.rcpt_replies["busy@example.org"] = "451 4.3.0 Mailbox busy, try later"
    batch = [
        outbound(0, url=smtp_server.url),
        outbound(1, url=smtp_server.url, to="busy@example.org"),
        outbound(2, url=smtp_server.url),
    ]
    [outcomes] = send(SmtpAdapter(pool_size=1, local_hostname="client.test"), batch)

    assert isinstance(outcomes[0], Accepted) and isinstance(outcomes[2], Accepted)
    failed = failure(outcomes[1])
    assert (failed.reason, failed.retryable, failed.message_id) == ("smtp_451", True, "0190-0001")
    assert "Mailbox busy" in failed.detail
    assert len(smtp_server.handler.peers) == 1


def test_each_message_after_the_first_costs_one_write(
    smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
):
    """With PIPELINING, a message's content and the next message's commands go together."""
    writes: list[bytes] = []
    write = _Session.write

    def counting(session: _Session, data: bytes) -> None:
        writes.append(data)
        write(session, data)

    monkeypatch.setattr(_Session, "write", counting)
    batch = [outbound(i, url=smtp_server.url) for i in range(6)]
    [outcomes] = send(SmtpAdapter(pool_size=1, local_hostname="client.test"), batch)

    assert all(isinstance(outcome, Accepted) for outcome in outcomes), outcomes
    assert [received.rcpt_tos for received in smtp_server.handler.received] == [
        [message.to] for message in batch
    ]
    transactions = [data for data in writes if b"DATA\r\n" in data or b"\r\n.\r\n" in data]
    if smtp_server.handler.pipelining:
        assert len(transactions) == len(batch) + 1
        assert all(data.endswith(b"DATA\r\n") for data in transactions[:-1])
        assert transactions[-1].endswith(b"\r\n.\r\n")
    else:
        # DATA, then the content, each on its own.
        assert len(transactions) == 2 * len(batch)


def test_a_refused_message_content_fails_alone(smtp_server: SmtpServer):
    """A refusal after the data ends that transaction only; the next one's commands, already
    sent behind it when pipelining, carry on without an RSET between them."""
    smtp_server.handler.data_replies["spam@example.org"] = "554 5.7.1 Message refused"
    batch = [
        outbound(0, url=smtp_server.url),
        outbound(1, url=smtp_server.url, to="spam@example.org"),
        outbound(2, url=smtp_server.url),
        outbound(3, url=smtp_server.url, to="spam@example.org"),
    ]
    [outcomes] = send(SmtpAdapter(pool_size=1, local_hostname="client.test"), batch)

    assert isinstance(outcomes[0], Accepted) and isinstance(outcomes[2], Accepted)
    for refused in (outcomes[1], outcomes[3]):
        failed = failure(refused)
        assert (failed.reason, failed.retryable) == ("smtp_554", False)
        assert failed.detail == "DATA: 554 5.7.1 Message refused"
    assert [received.rcpt_tos for received in smtp_server.handler.received] == [
        ["user0@example.org"],
        ["user2@example.org"],
    ]
    assert len(smtp_server.handler.peers) == 1
    if smtp_server.handler.pipelining:
        # Only the last, with nothing behind it, is followed by an RSET.
        assert smtp_server.handler.resets == 1


def test_refusals_of_the_next_message_leave_the_one_before_alone(smtp_server: SmtpServer):
    smtp_server.handler.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user here"
    smtp_server.handler.rcpt_replies["busy@example.org"] = "451 4.3.0 Mailbox busy"
    addresses = [None, "gone@example.org", None, "busy@example.org", "gone@example.org", None]
    batch = [outbound(i, url=smtp_server.url, to=to) for i, to in enumerate(addresses)]
    [outcomes] = send(SmtpAdapter(pool_size=1, local_hostname="client.test"), batch)

    reasons = [
        "accepted" if isinstance(outcome, Accepted) else failure(outcome).reason
        for outcome in outcomes
    ]
    assert reasons == ["accepted", "smtp_550", "accepted", "smtp_451", "smtp_550", "accepted"]
    assert [o.message_id for o in outcomes] == [m.message_id for m in batch]
    assert len(smtp_server.handler.received) == 3
    assert len(smtp_server.handler.peers) == 1


def test_a_550_reply_is_permanent_with_the_reply_text(smtp_server: SmtpServer):
    smtp_server.handler.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user here"
    [[outcome]] = send(
        SmtpAdapter(local_hostname="client.test"),
        [outbound(0, url=smtp_server.url, to="gone@example.org")],
    )

    failed = failure(outcome)
    assert (failed.reason, failed.retryable) == ("smtp_550", False)
    assert "5.1.1 No such user here" in failed.detail


def test_a_relay_that_is_down_is_a_transient_connection_error():
    url = f"smtp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    [outcomes] = send(
        SmtpAdapter(local_hostname="client.test"), [outbound(i, url=url) for i in range(20)]
    )

    for outcome in outcomes:
        failed = failure(outcome)
        assert (failed.reason, failed.retryable) == ("connection_error", True)
    assert time.monotonic() - started < 5


def test_a_dropped_connection_fails_that_message_and_the_next_one_reconnects(
    smtp_server: SmtpServer,
):
    smtp_server.handler.drop_at_data.add("drop@example.org")
    batch = [
        outbound(0, url=smtp_server.url),
        outbound(1, url=smtp_server.url, to="drop@example.org"),
        outbound(2, url=smtp_server.url),
    ]
    [outcomes] = send(SmtpAdapter(pool_size=1, local_hostname="client.test"), batch)

    assert isinstance(outcomes[0], Accepted) and isinstance(outcomes[2], Accepted)
    failed = failure(outcomes[1])
    assert (failed.reason, failed.retryable) == ("connection_error", True)
    assert len(smtp_server.handler.peers) == 2


def test_a_silent_relay_times_out_as_a_connection_error(smtp_server: SmtpServer):
    smtp_server.handler.stall_at_data = 1.0
    adapter = SmtpAdapter(command_timeout=0.2, local_hostname="client.test")
    [[outcome]] = send(adapter, [outbound(0, url=smtp_server.url)])

    failed = failure(outcome)
    assert (failed.reason, failed.retryable) == ("connection_error", True)


def test_sessions_the_relay_ends_are_replaced_without_failing_messages(
    smtp_server: SmtpServer,
):
    # A 421 to MAIL FROM on a reused session: nothing was taken, the message goes on a new one.
    smtp_server.handler.messages_per_session = 2
    adapter = SmtpAdapter(pool_size=1, local_hostname="client.test")
    batch = [outbound(i, url=smtp_server.url) for i in range(5)]
    [outcomes] = send(adapter, batch)

    assert all(isinstance(outcome, Accepted) for outcome in outcomes), outcomes
    assert len(smtp_server.handler.received) == 5
    assert len(smtp_server.handler.peers) == 3


def test_idle_sessions_closed_by_the_relay_are_reopened(smtp_server: SmtpServer):
    adapter = SmtpAdapter(pool_size=2, local_hostname="client.test")

    async def run() -> list[SendOutcome]:
        try:
            await adapter.send([outbound(i, url=smtp_server.url) for i in range(4)])
            smtp_server.drop_sessions()
            await asyncio.sleep(0.2)
            return await adapter.send([outbound(i, url=smtp_server.url) for i in range(4, 8)])
        finally:
            await adapter.close()

    outcomes = asyncio.run(run())
    assert all(isinstance(outcome, Accepted) for outcome in outcomes), outcomes
    assert len(smtp_server.handler.received) == 8


def test_auth_with_the_urls_user_and_password(smtp_server: SmtpServer):
    # Credentials in plain text only when the URL says so.
    good = f"smtp://mailer:p%40ss%20w0rd@127.0.0.1:{smtp_server.port}?starttls=none"
    bad = f"smtp://mailer:wrong@127.0.0.1:{smtp_server.port}?starttls=none"
    [accepted, refused] = send(
        SmtpAdapter(local_hostname="client.test"),
        [outbound(0, url=good)],
        [outbound(1, url=bad), outbound(2, url=bad)],
    )

    assert isinstance(accepted[0], Accepted)
    assert ("mailer", "p@ss w0rd") in smtp_server.handler.logins
    for outcome in refused:
        failed = failure(outcome)
        # The relay refused the credentials, not the message: it may be sent once they're fixed.
        assert (failed.reason, failed.retryable) == ("smtp_535", True)
    assert len(smtp_server.handler.received) == 1


def test_starttls_required_but_not_offered_fails_the_session(smtp_server: SmtpServer):
    url = f"{smtp_server.url}?starttls=required"
    [[outcome]] = send(SmtpAdapter(local_hostname="client.test"), [outbound(0, url=url)])

    failed = failure(outcome)
    assert failed.retryable and failed.reason == "smtp_error"
    assert smtp_server.handler.received == []


def test_the_default_relay_serves_configurations_without_one(smtp_server: SmtpServer):
    [[outcome]] = send(
        SmtpAdapter(default_smtp_url=smtp_server.url, local_hostname="client.test"),
        [outbound(0, url=None)],
    )
    assert isinstance(outcome, Accepted)

    [[outcome]] = send(SmtpAdapter(local_hostname="client.test"), [outbound(0, url=None)])
    failed = failure(outcome)
    assert (failed.reason, failed.retryable) == ("no_smtp_relay", False)


def test_a_message_that_cannot_be_written_fails_alone_and_permanently(smtp_server: SmtpServer):
    batch = [
        outbound(0, url=smtp_server.url, headers={"X-Evil": "a\r\nBcc: victim@example.org"}),
        outbound(1, url=smtp_server.url, to="not an address"),
        outbound(2, url=smtp_server.url),
    ]
    [outcomes] = send(SmtpAdapter(local_hostname="client.test"), batch)

    assert (failure(outcomes[0]).reason, failure(outcomes[0]).retryable) == (
        "invalid_header",
        False,
    )
    assert (failure(outcomes[1]).reason, failure(outcomes[1]).retryable) == (
        "invalid_address",
        False,
    )
    assert isinstance(outcomes[2], Accepted)
    [received] = smtp_server.handler.received
    assert b"victim" not in received.content


def test_an_invalid_default_relay_url_is_refused_at_construction():
    with pytest.raises(ValueError, match="smtp://"):
        SmtpAdapter(default_smtp_url="http://relay.test")
    with pytest.raises(ValueError, match="starttls"):
        SmtpAdapter(default_smtp_url="smtp://relay.test?starttls=maybe")


def test_implicit_tls_with_smtps(certificate: Certificate):
    with running_server(ssl_context=certificate.server_context()) as server:
        url = f"smtps://mailer:p%40ss%20w0rd@127.0.0.1:{server.port}"
        trusting = SmtpAdapter(tls_context=certificate.client_context(), local_hostname="c.test")
        [[accepted]] = send(trusting, [outbound(0, url=url)])
        # The default context does not trust a self-signed certificate.
        [[refused]] = send(SmtpAdapter(local_hostname="c.test"), [outbound(1, url=url)])

    assert isinstance(accepted, Accepted)
    assert server.handler.logins == [("mailer", "p@ss w0rd")]
    failed = failure(refused)
    assert (failed.reason, failed.retryable) == ("tls_error", True)
    assert len(server.handler.received) == 1


def test_starttls_when_required(certificate: Certificate):
    with running_server(tls_context=certificate.server_context(), require_starttls=True) as server:
        url = f"smtp://127.0.0.1:{server.port}?starttls=required"
        adapter = SmtpAdapter(tls_context=certificate.client_context(), local_hostname="c.test")
        [[accepted]] = send(adapter, [outbound(0, url=url)])
        # Without STARTTLS this server refuses the transaction.
        plain = f"{server.url}?starttls=none"
        [[refused]] = send(SmtpAdapter(local_hostname="c.test"), [outbound(1, url=plain)])

    assert isinstance(accepted, Accepted)
    assert len(server.handler.received) == 1
    assert server.handler.tls == [True]
    failed = failure(refused)
    # The session, not the message, is refused: the URL can be fixed while the message waits.
    assert (failed.reason, failed.retryable) == ("smtp_530", True)


def test_the_adapter_runs_on_uvloop(smtp_server: SmtpServer):
    # `tidings serve` runs on uvloop, whose transports are not asyncio.Transport subclasses.
    uvloop = pytest.importorskip("uvloop")
    adapter = SmtpAdapter(pool_size=2, local_hostname="client.test")

    async def run() -> list[SendOutcome]:
        try:
            return await adapter.send([outbound(i, url=smtp_server.url) for i in range(6)])
        finally:
            await adapter.close()

    outcomes = uvloop.run(run())
    assert all(isinstance(outcome, Accepted) for outcome in outcomes), outcomes
    assert len(smtp_server.handler.received) == 6


def test_starttls_is_used_when_offered_without_verifying_the_certificate(
    certificate: Certificate,
):
    # An smtp:// URL without ?starttls= or credentials encrypts when the relay offers it, as
    # MTAs do: the self-signed certificate is not trusted, yet TLS still beats plain text.
    with running_server(tls_context=certificate.server_context()) as server:
        url = f"smtp://127.0.0.1:{server.port}"
        [[accepted]] = send(SmtpAdapter(local_hostname="c.test"), [outbound(0, url=url)])

    assert isinstance(accepted, Accepted)
    assert server.handler.tls == [True]


def test_credentials_need_verified_tls_unless_the_url_says_plain(certificate: Certificate):
    """Opportunistic TLS can be stripped or intercepted: a URL with a user defaults to
    STARTTLS required (the certificate verified), and refuses `opportunistic`."""
    relay = SmtpRelay.from_url("smtp://mailer:secret@relay.example")
    assert (relay.start_tls, relay.opportunistic_tls, relay.port) == (True, False, 587)
    with pytest.raises(ValueError, match="verified TLS"):
        SmtpRelay.from_url("smtp://mailer:secret@relay.example?starttls=opportunistic")
    plain = SmtpRelay.from_url("smtp://mailer:secret@relay.example:25?starttls=none")
    assert (plain.start_tls, plain.opportunistic_tls) == (False, False)
    # The default, against a relay whose certificate is not trusted: nothing is sent, and the
    # credentials never leave.
    options = {"tls_context": certificate.server_context(), "auth_require_tls": True}
    with running_server(**options) as server:
        url = f"smtp://mailer:p%40ss%20w0rd@127.0.0.1:{server.port}"
        [[refused]] = send(SmtpAdapter(local_hostname="c.test"), [outbound(0, url=url)])
    assert failure(refused).reason == "tls_error"
    assert server.handler.logins == []


def test_starttls_required_verifies_the_certificate_and_authenticates(certificate: Certificate):
    options = {"tls_context": certificate.server_context(), "auth_require_tls": True}
    with running_server(require_starttls=True, **options) as server:
        url = f"smtp://mailer:p%40ss%20w0rd@127.0.0.1:{server.port}?starttls=required"
        trusting = SmtpAdapter(tls_context=certificate.client_context(), local_hostname="c.test")
        [[accepted]] = send(trusting, [outbound(0, url=url)])
        [[refused]] = send(SmtpAdapter(local_hostname="c.test"), [outbound(1, url=url)])

    assert isinstance(accepted, Accepted)
    assert server.handler.logins == [("mailer", "p@ss w0rd")]
    assert server.handler.tls == [True]
    failed = failure(refused)
    assert (failed.reason, failed.retryable) == ("tls_error", True)


def test_opportunistic_starttls_that_fails_falls_back_to_plain_text():
    with running_server(false_starttls=True) as server:
        adapter = SmtpAdapter(local_hostname="c.test")
        [outcomes] = send(adapter, [outbound(i, url=server.url) for i in range(3)])

    assert all(isinstance(outcome, Accepted) for outcome in outcomes), outcomes
    assert server.handler.tls == [False] * 3


def test_starttls_none_never_upgrades(certificate: Certificate):
    with running_server(tls_context=certificate.server_context()) as server:
        url = f"{server.url}?starttls=none"
        [[accepted]] = send(SmtpAdapter(local_hostname="c.test"), [outbound(0, url=url)])

    assert isinstance(accepted, Accepted)
    assert server.handler.tls == [False]


@pytest.mark.parametrize("size", [1, 3])
def test_a_configuration_sets_its_pool_size(size: int):
    with running_server() as server:
        batch = [outbound(i, url=server.url) for i in range(12)]
        batch = [replace(m, settings={**m.settings, "smtp_pool_size": size}) for m in batch]
        [outcomes] = send(SmtpAdapter(pool_size=8, local_hostname="c.test"), batch)

    assert all(isinstance(outcome, Accepted) for outcome in outcomes), outcomes
    assert len(server.handler.peers) == size


def test_a_configuration_rate_spaces_messages_and_hands_back_the_rest(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(smtp, "MAX_THROTTLE_WAIT", 0.6)
    with running_server(pipelining=True) as server:
        batch = [outbound(i, url=server.url) for i in range(8)]
        batch = [replace(m, settings={**m.settings, "smtp_rate_per_second": 5}) for m in batch]
        started = time.monotonic()
        [outcomes] = send(SmtpAdapter(pool_size=4, local_hostname="c.test"), batch)
        elapsed = time.monotonic() - started

    # Slots at 0, 0.2, 0.4 and 0.6 s; the others are more than 0.6 s away.
    sent = [outcome for outcome in outcomes if isinstance(outcome, Accepted)]
    assert len(sent) == 4 == len(server.handler.received)
    assert 0.55 <= elapsed < 3
    throttled = [failure(outcome) for outcome in outcomes[4:]]
    assert all(f.reason == THROTTLED and f.retryable for f in throttled)
    delays = [f.retry_after or 0 for f in throttled]
    assert delays == sorted(delays) and delays[-1] - delays[0] == pytest.approx(0.6, abs=0.05)


def test_style_blocks_are_inlined(smtp_server: SmtpServer):
    html = (
        "<html><head><style>p.note { color: #c00 } @media (max-width: 600px) { p { margin: 0 } }"
        "</style></head><body><p class='note'>Bonjour é</p></body></html>"
    )
    message = outbound(0, url=smtp_server.url, subject="Hi", html=html)
    [[outcome]] = send(SmtpAdapter(local_hostname="c.test"), [message])

    assert isinstance(outcome, Accepted)
    [received] = smtp_server.handler.received
    parts = list(received.parsed().walk())
    html_part = next(part for part in parts if part.get_content_type() == "text/html")
    text_part = next(part for part in parts if part.get_content_type() == "text/plain")
    sent = html_part.get_content()
    assert 'style="color: #c00;"' in sent
    assert "@media" in sent and "p.note" not in sent
    assert text_part.get_content().strip() == "Bonjour é"


def test_dkim_signed_messages_verify(smtp_server: SmtpServer):
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    message = outbound(0, url=smtp_server.url)
    settings = {"dkim_domain": "example.com", "dkim_selector": "mail", "dkim_private_key": pem}
    unsubscribe = {"List-Unsubscribe": "<https://t.test/u/1>", "List-Unsubscribe-Post": "x=y"}
    message = replace(message, settings={**message.settings, **settings}, headers=unsubscribe)
    [[outcome]] = send(SmtpAdapter(local_hostname="c.test"), [message])

    assert isinstance(outcome, Accepted)
    [received] = smtp_server.handler.received
    record = dns_record(key).encode("ascii")
    looked_up: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        looked_up.append(name)
        return record

    assert dkimpy.verify(received.content, dnsfunc=dns)
    assert looked_up == [b"mail._domainkey.example.com."]
    signature = received.parsed()["DKIM-Signature"]
    assert "list-unsubscribe" in signature and "list-unsubscribe-post" in signature


def test_a_configuration_may_leave_style_blocks_alone(smtp_server: SmtpServer):
    html = "<style>p { color: red }</style><p>x</p>"
    message = outbound(0, url=smtp_server.url, subject="Hi", html=html)
    message = replace(message, settings={**message.settings, "inline_css": False})
    [[outcome]] = send(SmtpAdapter(local_hostname="c.test"), [message])

    assert isinstance(outcome, Accepted)
    [received] = smtp_server.handler.received
    html_part = next(p for p in received.parsed().walk() if p.get_content_type() == "text/html")
    assert html_part.get_content().strip() == html
