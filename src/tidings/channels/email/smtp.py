"""Email delivery through SMTP relays over pools of persistent aiosmtplib connections.

One pool per distinct relay URL, `pool_size` connections each, opened on first use and kept
open between batches: a new session per message costs a TCP (and maybe TLS) handshake, EHLO and
AUTH, and more than halves throughput. A connection carries one message at a time; a batch is
spread over the pool's connections concurrently.

Failures are classified where they are seen. A relay's reply to the transaction decides: 4xx is
transient (`smtp_451`), 5xx permanent (`smtp_550`), with the reply text in the detail. A lost,
refused or silent connection is transient (`connection_error`). Failing to open a session at
all (unreachable relay, TLS failure, greeting or AUTH refused) is transient whatever the code,
and so are the replies that say the session lacks authentication or TLS (530, 534, 535, 538,
RFC 4954): they say nothing about the message, and a relay's URL or credentials can be fixed
while the message waits. Once a session cannot be opened, the rest of that relay's batch fails
at once rather than each message waiting for its own connect timeout.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from tidings.channels.adapters import Accepted, OutboundMessage, SendFailed, SendOutcome
from tidings.channels.email.mime import MessageBuildError, build_message, envelope

__all__ = ["SmtpAdapter", "SmtpRelay"]

DEFAULT_POOL_SIZE = 4
CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0
# Relays drop idle sessions (Postfix after 300 s) and middleboxes may do so silently, which
# would cost the next message a full command timeout: older sessions are replaced instead.
IDLE_TIMEOUT = 60.0
QUIT_TIMEOUT = 5.0

_QUEUED_AS = re.compile(r"queued as ([^\s;,]+)", re.IGNORECASE)
# RFC 4954's replies about the session's authentication (or, for 530, often its missing TLS).
_SESSION_REFUSALS = frozenset({530, 534, 535, 538})


@dataclass(frozen=True, slots=True)
class SmtpRelay:
    """Where and how to open a session, read from an smtp:// or smtps:// URL.

    smtps:// is TLS from the first byte (port 465 by default); smtp:// is plain (port 25), or
    upgraded with STARTTLS when the URL ends with `?starttls=required` (port 587 by default), in
    which case a relay that does not offer it is an error. User and password, percent-decoded,
    are used for AUTH.
    """

    hostname: str
    port: int
    use_tls: bool
    start_tls: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpRelay:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise ValueError("an SMTP relay URL starts with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("the SMTP relay URL names no host")
        query = parse_qs(parts.query, keep_blank_values=True)
        starttls = query.pop("starttls", ["none"])
        if query or len(starttls) != 1 or starttls[0] not in ("required", "none"):
            raise ValueError("the only option of an SMTP relay URL is starttls=required")
        start_tls = starttls[0] == "required"
        if start_tls and scheme == "smtps":
            raise ValueError("starttls=required goes with smtp://; smtps:// is TLS throughout")
        port = parts.port  # raises ValueError when out of range
        if not port:
            port = 465 if scheme == "smtps" else 587 if start_tls else 25
        return cls(
            hostname=parts.hostname,
            port=port,
            use_tls=scheme == "smtps",
            start_tls=start_tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )


@dataclass(frozen=True, slots=True)
class _Options:
    connect_timeout: float
    command_timeout: float
    idle_timeout: float
    tls_context: ssl.SSLContext | None


@dataclass(frozen=True, slots=True)
class _Job:
    index: int
    message: OutboundMessage


class _RelayDown(Exception):
    """No session could be opened; what every message waiting for this relay is told."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def failure(self, message_id: str) -> SendFailed:
        return SendFailed(message_id, self.reason, self.detail, retryable=True)


class SmtpAdapter:
    """The email ChannelAdapter: sends through the configuration's `smtp_url`, or the
    `default_smtp_url` (TIDINGS_SMTP_URL) when it has none."""

    def __init__(
        self,
        default_smtp_url: str | None = None,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: float = CONNECT_TIMEOUT,
        command_timeout: float = COMMAND_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        local_hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if default_smtp_url:
            # A bad TIDINGS_SMTP_URL is an operator's mistake to report at start, not per message.
            SmtpRelay.from_url(default_smtp_url)
        self.default_smtp_url = default_smtp_url or None
        self.pool_size = pool_size
        self._options = _Options(connect_timeout, command_timeout, idle_timeout, tls_context)
        self._local_hostname = local_hostname
        self._pools: dict[str, _Pool] = {}

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        outcomes: list[SendOutcome | None] = [None] * len(messages)
        batches: dict[_Pool, list[_Job]] = {}
        for index, message in enumerate(messages):
            url = message.settings.get("smtp_url") or self.default_smtp_url
            if not url:
                outcomes[index] = SendFailed(
                    message.message_id,
                    "no_smtp_relay",
                    "neither the channel configuration nor TIDINGS_SMTP_URL names an SMTP relay",
                    retryable=False,
                )
                continue
            try:
                pool = await self._pool(str(url))
            except ValueError as exc:
                outcomes[index] = SendFailed(
                    message.message_id, "invalid_smtp_url", str(exc), retryable=False
                )
                continue
            batches.setdefault(pool, []).append(_Job(index, message))
        if batches:
            await asyncio.gather(*(pool.send(jobs, outcomes) for pool, jobs in batches.items()))
        result: list[SendOutcome] = []
        for outcome in outcomes:
            assert outcome is not None, "every job records an outcome"
            result.append(outcome)
        return result

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(pool.close() for pool in pools))
        # Let the transports' connection_lost callbacks run (they close the sockets) before a
        # caller's event loop may end.
        await asyncio.sleep(0)

    async def _pool(self, url: str) -> _Pool:
        pool = self._pools.get(url)
        if pool is None:
            relay = SmtpRelay.from_url(url)
            if self._local_hostname is None:
                # What aiosmtplib would otherwise look up (in a thread) for every connection.
                self._local_hostname = await asyncio.to_thread(socket.getfqdn)
            pool = _Pool(relay, self.pool_size, self._options, self._local_hostname)
            self._pools[url] = pool
        return pool


class _Pool:
    """The sessions to one relay; idle ones wait in a queue, so concurrent batches share them."""

    def __init__(self, relay: SmtpRelay, size: int, options: _Options, local_hostname: str) -> None:
        self._connections = [_Connection(relay, options, local_hostname) for _ in range(size)]
        self._idle: asyncio.Queue[_Connection] = asyncio.Queue()
        for connection in self._connections:
            self._idle.put_nowait(connection)

    async def send(self, jobs: list[_Job], outcomes: list[SendOutcome | None]) -> None:
        pending = deque(jobs)
        down: list[_RelayDown] = []
        workers = min(len(self._connections), len(jobs))
        await asyncio.gather(*(self._work(pending, outcomes, down) for _ in range(workers)))

    async def _work(
        self,
        pending: deque[_Job],
        outcomes: list[SendOutcome | None],
        down: list[_RelayDown],
    ) -> None:
        if not pending:
            return
        connection = await self._idle.get()
        try:
            while pending:
                job = pending.popleft()
                outcomes[job.index] = await self._send_one(connection, job, down)
        finally:
            self._idle.put_nowait(connection)

    async def _send_one(
        self, connection: _Connection, job: _Job, down: list[_RelayDown]
    ) -> SendOutcome:
        message_id = job.message.message_id
        try:
            raw, sender, recipients = _serialize(job.message)
        except MessageBuildError as exc:
            return SendFailed(message_id, exc.reason, exc.detail, retryable=False)
        if down:
            return down[0].failure(message_id)
        try:
            return await connection.deliver(message_id, raw, sender, recipients)
        except _RelayDown as exc:
            down.append(exc)
            return exc.failure(message_id)
        except Exception as exc:
            # Not the message's fault, and raising would lose the outcomes of the whole batch
            # (those already sent would be sent again).
            connection.discard()
            return SendFailed(message_id, "internal_error", repr(exc), retryable=True)

    async def close(self) -> None:
        await asyncio.gather(*(connection.close() for connection in self._connections))


class _Connection:
    """One SMTP session to a relay, reopened when lost; one transaction at a time."""

    def __init__(self, relay: SmtpRelay, options: _Options, local_hostname: str) -> None:
        self._relay = relay
        self._options = options
        self._local_hostname = local_hostname
        self._client: aiosmtplib.SMTP | None = None
        # aiosmtplib closes a session itself on some errors and on QUIT, gracefully, which for
        # TLS is the slow way (see _hang_up): the transport is kept to be aborted in any case.
        self._transport: asyncio.BaseTransport | None = None
        self._last_used = 0.0

    async def deliver(
        self, message_id: str, raw: bytes, sender: bytes, recipients: list[bytes]
    ) -> SendOutcome:
        """The outcome of one transaction; raises _RelayDown when no session can be opened."""
        for attempt in range(2):
            fresh, client = await self._open()
            self._last_used = time.monotonic()
            stage = "MAIL FROM"
            try:
                # Raw commands rather than client.mail()/rcpt(), which re-parse each address with
                # the stdlib's parseaddr (a tenth of the time per message); the addresses come
                # from mime.envelope, which only lets through what is safe on a command line.
                size = (b"SIZE=%d" % len(raw),) if client.supports_extension("size") else ()
                response = await client.execute_command(b"MAIL", b"FROM:<%s>" % sender, *size)
                if response.code != 250:
                    raise aiosmtplib.SMTPSenderRefused(response.code, response.message, "")
                stage = "RCPT TO"
                for recipient in recipients:
                    response = await client.execute_command(b"RCPT", b"TO:<%s>" % recipient)
                    if response.code not in (250, 251):
                        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, "")
                stage = "DATA"
                reply = await client.data(raw)
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code == 421:
                    # The relay is closing this session (idle, too many messages, shutting down).
                    self.discard()
                    if stage == "MAIL FROM" and not fresh and attempt == 0:
                        continue
                else:
                    await self._reset(client)
                permanent = 500 <= exc.code <= 599 and exc.code not in _SESSION_REFUSALS
                return SendFailed(
                    message_id,
                    f"smtp_{exc.code}",
                    f"{stage}: {exc.code} {exc.message}",
                    retryable=not permanent,
                )
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
                self.discard()
                # A reused session the relay dropped while idle fails on its first command, before
                # the relay has taken anything: a fresh one can safely carry the same message.
                if stage == "MAIL FROM" and not fresh and attempt == 0:
                    continue
                # Lost during DATA, the message may have been delivered: retrying risks a
                # duplicate, which the caller's retry policy decides on.
                return SendFailed(
                    message_id, "connection_error", f"{stage}: {_describe(exc)}", retryable=True
                )
            except BaseException:
                # Cancelled (or worse) mid-transaction: the session's state is unknown.
                self.discard()
                raise
            return Accepted(message_id, _provider_id(reply.message))
        raise AssertionError("unreachable: the second attempt always returns")

    async def _open(self) -> tuple[bool, aiosmtplib.SMTP]:
        """(whether the session is new, the session)."""
        client = self._client
        if client is not None:
            idle = time.monotonic() - self._last_used
            if client.is_connected and idle < self._options.idle_timeout:
                return False, client
            self.discard()
        relay, options = self._relay, self._options
        client = aiosmtplib.SMTP(
            hostname=relay.hostname,
            port=relay.port,
            username=relay.username,
            password=relay.password,
            local_hostname=self._local_hostname,
            timeout=options.command_timeout,
            use_tls=relay.use_tls,
            start_tls=relay.start_tls,
            tls_context=options.tls_context,
        )
        try:
            await client.connect(timeout=options.connect_timeout)
            if client.is_ehlo_or_helo_needed:
                # Now rather than at MAIL FROM, so that the first message knows about SIZE.
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
        except aiosmtplib.SMTPResponseException as exc:
            _hang_up(client, client.transport)
            raise _RelayDown(
                f"smtp_{exc.code}", f"opening a session: {exc.code} {exc.message}"
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            _hang_up(client, client.transport)
            tls = isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError)
            if tls:
                raise _RelayDown("tls_error", f"TLS with {relay.hostname} failed: {exc}") from exc
            if isinstance(exc, OSError):
                raise _RelayDown(
                    "connection_error",
                    f"cannot reach {relay.hostname}:{relay.port}: {_describe(exc)}",
                ) from exc
            # STARTTLS or AUTH required by the URL but not offered, and the like.
            raise _RelayDown("smtp_error", f"opening a session: {exc}") from exc
        self._client, self._transport = client, client.transport
        return True, client

    async def _reset(self, client: aiosmtplib.SMTP) -> None:
        """Clears a refused transaction so the session can carry the next message."""
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            self.discard()

    def discard(self) -> None:
        """Drops the session without a goodbye; the next message opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            _hang_up(client, self._transport)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.is_connected:
                await client.quit(timeout=QUIT_TIMEOUT)
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            _hang_up(client, self._transport)


def _hang_up(client: aiosmtplib.SMTP, transport: asyncio.BaseTransport | None) -> None:
    """Closes the session's socket at once.

    A TLS transport's close() exchanges close_notify with the peer over several turns of the
    event loop (up to 30 s); a loop that ends meanwhile leaks the socket. After QUIT, or for a
    session being thrown away, there is nothing left to say.
    """
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    client.close()


def _serialize(message: OutboundMessage) -> tuple[bytes, bytes, list[bytes]]:
    """(raw message, MAIL FROM, RCPT TO) of an outbound email."""
    settings, content = message.settings, message.content
    from_address = _text(settings.get("from_address"))
    if not from_address:
        raise MessageBuildError("invalid_address", "the channel configuration has no from address")
    # Per-message headers (e.g. List-Unsubscribe) win over the configuration's, whatever the case.
    merged: dict[str, tuple[str, str]] = {}
    for headers in (settings.get("headers") or {}, message.headers):
        for name, value in _headers(headers).items():
            merged[name.lower()] = (name, value)
    raw = build_message(
        message_id=message.message_id,
        from_address=from_address,
        from_name=_text(settings.get("from_name")),
        to=message.to,
        reply_to=_text(settings.get("reply_to")),
        subject=_text(content.get("subject")) or "",
        html=_text(content.get("html")),
        text=_text(content.get("text")),
        headers=dict(merged.values()),
    )
    sender, recipients = envelope(from_address=from_address, to=message.to)
    return raw, sender.encode("ascii"), [recipient.encode("ascii") for recipient in recipients]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _headers(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise MessageBuildError("invalid_header", "headers must be a mapping of names to values")
    for name, header_value in value.items():
        if not isinstance(name, str) or not isinstance(header_value, str):
            raise MessageBuildError("invalid_header", "header names and values must be text")
    return value


def _provider_id(reply: str) -> str | None:
    """The relay's queue id when it says one in Postfix's way, else its whole reply, which is
    where other relays put theirs."""
    match = _QUEUED_AS.search(reply)
    if match:
        return match.group(1)
    return reply.strip()[:255] or None


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
