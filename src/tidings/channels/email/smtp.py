"""Email delivery through SMTP relays over pools of persistent connections.

One pool per distinct relay URL and configuration limits (`smtp_pool_size` connections, default
`pool_size`; `smtp_rate_per_second`, messages spaced evenly), opened on first use and kept
open between batches: a new session per message costs a TCP (and maybe TLS) handshake, EHLO and
AUTH, and more than halves throughput. A connection carries one message at a time; a batch is
spread over the pool's connections concurrently.

The client is a small one written for this hot path on asyncio's protocol API rather than a
general library. When the relay offers PIPELINING (RFC 2920; Postfix does) it writes MAIL FROM,
RCPT TO and DATA together, and once the relay has said 354, the message's content followed by
the next message's MAIL FROM, RCPT TO and DATA, so that a message costs one write and one round
trip on a busy connection (a socket write cost more CPU than building the message). The reply
to the content comes first and decides that message alone: the end of its data ends its
transaction whatever the reply (RFC 5321 4.1.1.4), and the replies that follow are the next
message's. The message bytes come from mime.build_message (after css.inline_css, and signed by
dkim.sign when the configuration has a key), already with CRLF line endings, and are only
dot-stuffed. aiosmtplib spent several times as much CPU per message
(one write and one round trip per command, two regular-expression passes over each message),
and on `tidings serve` that CPU is taken from the API, which shares the process.

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
import base64
import logging
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from tidings.channels.adapters import (
    THROTTLED,
    Accepted,
    OutboundMessage,
    SendFailed,
    SendOutcome,
)
from tidings.channels.email import dkim
from tidings.channels.email.css import inline_css
from tidings.channels.email.mime import MessageBuildError, build_message, envelope

__all__ = ["SmtpAdapter", "SmtpRelay"]

log = logging.getLogger("tidings.smtp")

DEFAULT_POOL_SIZE = 4
STARTTLS_MODES = ("required", "opportunistic", "none")
CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0
# Relays drop idle sessions (Postfix after 300 s) and middleboxes may do so silently, which
# would cost the next message a full command timeout: older sessions are replaced instead.
IDLE_TIMEOUT = 60.0
QUIT_TIMEOUT = 5.0
PLAIN_FALLBACK_SECONDS = 3600.0
# The longest a message waits for its turn under a configuration's rate before it is handed back
# to be sent later (THROTTLED), so that a batch is not held for minutes.
MAX_THROTTLE_WAIT = 5.0

_QUEUED_AS = re.compile(r"queued as ([^\s;,]+)", re.IGNORECASE)
# RFC 4954's replies about the session's authentication (or, for 530, often its missing TLS).
_SESSION_REFUSALS = frozenset({530, 534, 535, 538})


@dataclass(frozen=True, slots=True)
class SmtpRelay:
    """Where and how to open a session, read from an smtp:// or smtps:// URL.

    smtps:// is TLS from the first byte (port 465 by default), its certificate verified.
    smtp:// (port 25, or 587 with STARTTLS required) takes `?starttls=`: `required` (the relay
    must offer STARTTLS and present a valid certificate), `opportunistic` (the default: STARTTLS
    when offered, without verifying the certificate, as MTAs do between themselves (RFC 7435),
    since the alternative is no encryption at all; a relay whose TLS fails is then used in
    plain text) or `none`. User and password, percent-decoded, are used for AUTH; with them the
    default is `required`, and `opportunistic` is refused, so credentials never cross a
    connection an attacker could have downgraded.
    """

    hostname: str
    port: int
    use_tls: bool
    start_tls: bool
    username: str | None
    password: str | None
    opportunistic_tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> SmtpRelay:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise ValueError("an SMTP relay URL starts with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("the SMTP relay URL names no host")
        query = parse_qs(parts.query, keep_blank_values=True)
        starttls = query.pop("starttls", [None])
        if query or len(starttls) != 1 or starttls[0] not in (*STARTTLS_MODES, None):
            raise ValueError(
                "the only option of an SMTP relay URL is starttls=required|opportunistic|none"
            )
        if starttls[0] is not None and scheme == "smtps":
            raise ValueError("starttls= goes with smtp://; smtps:// is TLS throughout")
        # Credentials go only over verified TLS unless the URL says otherwise: opportunistic
        # TLS can be stripped or intercepted by anyone on the path, who would read them.
        mode = starttls[0] or ("required" if parts.username else "opportunistic")
        if mode == "opportunistic" and parts.username and scheme == "smtp":
            raise ValueError(
                "a relay with a user name needs verified TLS: smtps://, starttls=required, or "
                "starttls=none for a relay trusted in plain text"
            )
        port = parts.port  # raises ValueError when out of range
        if not port:
            port = 465 if scheme == "smtps" else 587 if mode == "required" else 25
        return cls(
            hostname=parts.hostname,
            port=port,
            use_tls=scheme == "smtps",
            start_tls=scheme == "smtp" and mode == "required",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            opportunistic_tls=scheme == "smtp" and mode == "opportunistic",
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


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A message written out for the wire: its bytes (not yet dot-stuffed) and envelope."""

    index: int
    message_id: str
    raw: bytes
    sender: bytes
    recipients: list[bytes]


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
        self._pools: dict[tuple[str, int, float | None], _Pool] = {}

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
                pool = await self._pool(
                    str(url),
                    _positive(message.settings.get("smtp_pool_size"), int) or self.pool_size,
                    _positive(message.settings.get("smtp_rate_per_second"), float),
                )
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

    async def _pool(self, url: str, size: int, rate: float | None) -> _Pool:
        """The pool of a relay URL with a configuration's size and rate: configurations that
        name the same relay with the same limits share one."""
        key = (url, size, rate)
        pool = self._pools.get(key)
        if pool is None:
            relay = SmtpRelay.from_url(url)
            if self._local_hostname is None:
                # Looked up once (in a thread: it may query DNS) rather than per connection.
                self._local_hostname = await asyncio.to_thread(socket.getfqdn)
            throttle = _Throttle(rate) if rate else None
            pool = _Pool(relay, size, self._options, self._local_hostname, throttle)
            self._pools[key] = pool
        return pool


class _Throttle:
    """Spaces messages `1 / rate` seconds apart (no bursts: relays that limit a rate often count
    over short windows). Each message reserves the next free slot."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0

    def reserve(self, *, wait: bool = True) -> float | None:
        """Seconds until the reserved slot; None when `wait` is False and it is not now, or
        when it is more than MAX_THROTTLE_WAIT away (nothing is reserved then)."""
        now = time.monotonic()
        slot = max(now, self._next)
        delay = slot - now
        if delay > (MAX_THROTTLE_WAIT if wait else 0.0):
            return None
        self._next = slot + self.interval
        return delay

    def delay_of(self, position: int) -> float:
        """Seconds until the slot of the position-th message after those reserved."""
        return max(0.0, self._next - time.monotonic()) + position * self.interval


class _Pool:
    """The sessions to one relay; idle ones wait in a queue, so concurrent batches share them."""

    def __init__(
        self,
        relay: SmtpRelay,
        size: int,
        options: _Options,
        local_hostname: str,
        throttle: _Throttle | None = None,
    ) -> None:
        self._throttle = throttle
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
        # Messages this connection took: the one being sent, and the next one once its commands
        # went out with that one's content.
        mine: deque[_Prepared] = deque()

        throttle = self._throttle

        def prepare(job: _Job) -> _Prepared | None:
            """The message written out, into `mine`; one that cannot be is failed on the spot."""
            try:
                raw, sender, recipients = _serialize(job.message)
            except MessageBuildError as exc:
                outcomes[job.index] = SendFailed(
                    job.message.message_id, exc.reason, exc.detail, retryable=False
                )
                return None
            prepared = _Prepared(job.index, job.message.message_id, raw, sender, recipients)
            mine.append(prepared)
            return prepared

        def ahead() -> _Prepared | None:
            """The next message, to pipeline behind the current one: only when its turn under
            the configuration's rate is now."""
            while pending:
                if throttle is not None and throttle.reserve(wait=False) is None:
                    return None
                prepared = prepare(pending.popleft())
                if prepared is not None:
                    return prepared
            return None

        async def take() -> bool:
            """Whether a next message is in `mine`, after waiting for its turn."""
            while pending:
                if throttle is not None and not down:
                    delay = throttle.reserve()
                    if delay is None:
                        self._postpone(pending, outcomes, throttle)
                        return False
                    job = pending.popleft()
                    if delay:
                        await asyncio.sleep(delay)
                else:
                    job = pending.popleft()
                if prepare(job) is not None:
                    return True
            return False

        try:
            while mine or await take():
                message = mine.popleft()
                outcomes[message.index] = await self._send_one(connection, message, down, ahead)
        finally:
            self._idle.put_nowait(connection)

    @staticmethod
    def _postpone(
        pending: deque[_Job], outcomes: list[SendOutcome | None], throttle: _Throttle
    ) -> None:
        """Fails the messages whose turn is too far off as THROTTLED, each with the delay of
        its turn: holding them would hold the batch (and the claim on it) as long."""
        position = 0
        while pending:
            job = pending.popleft()
            outcomes[job.index] = SendFailed(
                job.message.message_id,
                THROTTLED,
                "the channel configuration's SMTP rate is reached",
                retryable=True,
                retry_after=throttle.delay_of(position),
            )
            position += 1

    async def _send_one(
        self,
        connection: _Connection,
        message: _Prepared,
        down: list[_RelayDown],
        following: Callable[[], _Prepared | None],
    ) -> SendOutcome:
        if down:
            return down[0].failure(message.message_id)
        try:
            return await connection.deliver(message, following)
        except _RelayDown as exc:
            down.append(exc)
            return exc.failure(message.message_id)
        except Exception as exc:
            # Not the message's fault, and raising would lose the outcomes of the whole batch
            # (those already sent would be sent again).
            connection.discard()
            return SendFailed(message.message_id, "internal_error", repr(exc), retryable=True)

    async def close(self) -> None:
        await asyncio.gather(*(connection.close() for connection in self._connections))


class _Closed(ConnectionError):
    """The relay closed the session, or it was closed here."""


class _Refused(Exception):
    """A reply that ends the opening of a session (greeting, EHLO, STARTTLS, AUTH)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


class _Unsupported(Exception):
    """The relay lacks what the URL requires (STARTTLS, an AUTH mechanism)."""


class _TlsFailed(Exception):
    """Opportunistic STARTTLS failed: the session is opened again in plain text."""


def _unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# Opportunistic TLS encrypts without authenticating the relay (RFC 7435); made once, as
# loading the default trust store for each session would cost more than the handshake.
_UNVERIFIED = _unverified_context()


# (code, text): the text's lines joined with "\\n", as relays' multi-line replies read.
_Reply = tuple[int, str]
# A reply longer than this without a line break is not SMTP.
_MAX_REPLY_LINE = 8192
_OK = frozenset({250})
_RCPT_OK = frozenset({250, 251})
_DATA_OK = frozenset({354})


class _Session(asyncio.Protocol):
    """The byte side of one SMTP session: writes commands and collects the replies awaited.

    request() writes a group of commands and waits for as many replies as it names, or for a
    421, after which a relay closes the session and answers nothing more.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._replies: list[_Reply] = []
        self._expected = 0
        self._waiter: asyncio.Future[list[_Reply]] | None = None
        self._lost: BaseException | None = None
        self.extensions: dict[str, str] = {}

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        detail = f" ({_describe(exc)})" if exc is not None else ""
        self._lost = _Closed(f"the relay closed the connection{detail}")
        self._settle()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        if buffer:
            buffer += data
            data = bytes(buffer)
            buffer.clear()
        lines = data.split(b"\n")
        # What follows the last line break: the start of a line still on its way.
        buffer += lines.pop()
        replies, pending = self._replies, self._lines
        for line in lines:
            line = line.rstrip(b"\r")
            if line[3:4] == b"-":
                pending.append(line)
                continue
            digits = line[:3]
            if not digits.isdigit():
                self._replies = []
                self.abort(_Closed("the relay's reply is not SMTP"))
                self._settle()
                return
            if pending:
                pending.append(line)
                text = "\n".join(item[4:].decode("utf-8", "replace") for item in pending)
                pending.clear()
            else:
                text = line[4:].decode("utf-8", "replace")
            replies.append((int(digits), text))
        if len(buffer) > _MAX_REPLY_LINE:
            self._replies = []
            self.abort(_Closed("the relay's reply is not SMTP"))
        self._settle()

    def _settle(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        replies = self._take(self._expected)
        if replies is not None:
            waiter.set_result(replies)
        elif self._lost is not None:
            waiter.set_exception(self._lost)

    def _take(self, count: int) -> list[_Reply] | None:
        """The next `count` replies, or up to a 421 among them (after which a relay says
        nothing more); None while they have not all come."""
        replies = self._replies
        for index in range(min(count, len(replies))):
            if replies[index][0] == 421:
                count = index + 1
                break
        else:
            if len(replies) < count:
                return None
        taken = replies[:count]
        del replies[:count]
        return taken

    # requests

    @property
    def usable(self) -> bool:
        """Open, and with nothing said unasked (a relay's 421 before it hangs up, say)."""
        transport = self.transport
        return (
            self._lost is None
            and transport is not None
            and not transport.is_closing()
            and not self._replies
            and not self._lines
        )

    def write(self, data: bytes) -> None:
        """Writes commands (or a message) whose replies `receive` then collects, in order."""
        if self._lost is not None:
            raise self._lost
        assert self.transport is not None
        self.transport.write(data)

    async def receive(self, expected: int, timeout: float) -> list[_Reply]:
        """The next `expected` replies to what was written, fewer when one is a 421. Raises
        _Closed when the session ends first, TimeoutError."""
        # Replies to pipelined commands have often come already.
        replies = self._take(expected)
        if replies is not None:
            return replies
        if self._lost is not None:
            raise self._lost
        waiter: asyncio.Future[list[_Reply]] = self._loop.create_future()
        self._waiter = waiter
        self._expected = expected
        timer = self._loop.call_later(timeout, _expire, waiter, timeout)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def request(self, data: bytes, expected: int, timeout: float) -> list[_Reply]:
        """Writes `data` (nothing for the greeting) and returns the next `expected` replies,
        fewer when one is a 421. Raises _Closed when the session ends first, TimeoutError."""
        if data:
            self.write(data)
        return await self.receive(expected, timeout)

    async def command(self, line: bytes, timeout: float) -> _Reply:
        [reply] = (await self.request(line + b"\r\n", 1, timeout))[:1]
        return reply

    def abort(self, reason: BaseException | None = None) -> None:
        if self._lost is None:
            self._lost = reason or _Closed("the session was closed")
        if self.transport is not None:
            self.transport.abort()


def _expire(waiter: asyncio.Future[list[_Reply]], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no reply within {timeout:g} s"))


def _first_refusal(replies: list[_Reply], expected: list[frozenset[int]]) -> int | None:
    """Index of the first reply that is not what its command expects, or None."""
    for index, (code, _) in enumerate(replies):
        if code not in expected[index]:
            return index
    return None


class _Connection:
    """One SMTP session to a relay, reopened when lost; one transaction at a time."""

    def __init__(self, relay: SmtpRelay, options: _Options, local_hostname: str) -> None:
        self._relay = relay
        self._options = options
        self._local_hostname = local_hostname
        self._session: _Session | None = None
        self._last_used = 0.0
        # Until when opportunistic STARTTLS is not tried again after it failed.
        self._plain_until = 0.0
        # The next message, when its commands were written after this one's content, and the
        # session they went on.
        self._ahead: tuple[_Prepared, _Session] | None = None

    async def deliver(
        self, message: _Prepared, following: Callable[[], _Prepared | None] | None = None
    ) -> SendOutcome:
        """The outcome of one transaction; raises _RelayDown when no session can be opened.

        With PIPELINING, once the relay has said 354 to this message's DATA, `following` is
        asked for the next message of this connection: its MAIL FROM, RCPT TO and DATA go in
        the same write as this message's content (RFC 2920: the end of the data may be
        followed by the next transaction's commands), and the caller delivers it next.
        """
        timeout = self._options.command_timeout
        ahead, self._ahead = self._ahead, None
        for attempt in range(2):
            recipients = message.recipients
            expected = [_OK] + [_RCPT_OK] * len(recipients) + [_DATA_OK]
            stage = "MAIL FROM"
            session = self._session
            # Its commands went out with the message before, on the session still open: only
            # their replies are awaited.
            written = (
                attempt == 0 and ahead is not None and ahead[0] is message and ahead[1] is session
            )
            if written and session is not None:
                fresh = False
            else:
                fresh, session = await self._open()
            self._last_used = time.monotonic()
            pipelining = "PIPELINING" in session.extensions
            try:
                if written:
                    replies = await session.receive(len(expected), timeout)
                elif pipelining:
                    session.write(_envelope(message, session))
                    replies = await session.receive(len(expected), timeout)
                else:
                    replies = []
                    for command in _commands(message, session):
                        replies += await session.request(command, 1, timeout)
                        if replies[-1][0] not in expected[len(replies) - 1]:
                            break
                refused = _first_refusal(replies, expected)
                if refused is None and len(replies) < len(expected):
                    raise _Closed("the relay closed the connection")
                if refused is not None:
                    code, text = replies[refused]
                    stage = _stage(refused, len(recipients))
                    if code == 421:
                        # The relay is closing this session (idle, too many messages, shutting
                        # down); before DATA it has taken nothing.
                        self.discard()
                        if refused == 0 and not fresh and attempt == 0:
                            continue
                    elif replies[-1][0] == 354 and len(replies) == len(expected):
                        # DATA accepted although a recipient was refused (RFC 2920 3.1): an
                        # empty message ends the transaction, which the relay then refuses.
                        stage = "DATA"
                        await session.request(b".\r\n", 1, timeout)
                        stage = _stage(refused, len(recipients))
                    else:
                        await self._reset(session)
                    return _refusal(message.message_id, stage, code, text)
                stage = "DATA"
                data = _data(message.raw)
                following_message = following() if pipelining and following else None
                if following_message is not None:
                    data += _envelope(following_message, session)
                    self._ahead = (following_message, session)
                session.write(data)
                [(code, text)] = (await session.receive(1, timeout))[:1]
            except (OSError, TimeoutError) as exc:
                self.discard()
                # A reused session the relay dropped while idle fails on its first command,
                # before the relay has taken anything: a fresh one can carry the same message.
                if stage == "MAIL FROM" and not fresh and attempt == 0:
                    continue
                # Lost after the message was written, it may have been delivered: retrying
                # risks a duplicate, which the caller's retry policy decides on.
                return SendFailed(
                    message.message_id,
                    "connection_error",
                    f"{stage}: {_describe(exc)}",
                    retryable=True,
                )
            except BaseException:
                # Cancelled (or worse) mid-transaction: the session's state is unknown.
                self.discard()
                raise
            if code == 250:
                return Accepted(message.message_id, _provider_id(text))
            if code == 421:
                self.discard()
            elif self._ahead is None:
                await self._reset(session)
            # Else the end of the data ended the refused transaction (RFC 5321 4.1.1.4), and
            # the next one's commands are on their way: no RSET may come between.
            return _refusal(message.message_id, stage, code, text)
        raise AssertionError("unreachable: the second attempt always returns")

    async def _open(self) -> tuple[bool, _Session]:
        """(whether the session is new, the session)."""
        session = self._session
        if session is not None:
            idle = time.monotonic() - self._last_used
            if session.usable and idle < self._options.idle_timeout:
                return False, session
            self.discard()
        relay = self._relay
        loop = asyncio.get_running_loop()
        session = _Session(loop)
        try:
            try:
                await self._handshake(session)
            except _TlsFailed as exc:
                # Opportunistic TLS falls back to what it would have been without the offer,
                # for a while, rather than leaving the relay unusable (RFC 7435).
                session.abort()
                self._plain_until = time.monotonic() + PLAIN_FALLBACK_SECONDS
                log.warning(
                    "STARTTLS with %s failed, sending in plain text: %s", relay.hostname, exc
                )
                session = _Session(loop)
                await self._handshake(session)
        except _Refused as exc:
            session.abort()
            raise _RelayDown(
                f"smtp_{exc.code}", f"opening a session: {exc.code} {exc.text}"
            ) from exc
        except ssl.SSLError as exc:
            session.abort()
            raise _RelayDown("tls_error", f"TLS with {relay.hostname} failed: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            session.abort()
            raise _RelayDown(
                "connection_error",
                f"cannot reach {relay.hostname}:{relay.port}: {_describe(exc)}",
            ) from exc
        except _Unsupported as exc:
            session.abort()
            raise _RelayDown("smtp_error", f"opening a session: {exc}") from exc
        except BaseException:
            session.abort()
            raise
        self._session = session
        return True, session

    async def _handshake(self, session: _Session) -> None:
        """Connects, reads the greeting, EHLO (or HELO), STARTTLS and AUTH as the URL says."""
        relay, options = self._relay, self._options
        loop = asyncio.get_running_loop()
        context = options.tls_context or (
            ssl.create_default_context() if relay.use_tls or relay.start_tls else None
        )
        timeout = options.command_timeout
        async with asyncio.timeout(options.connect_timeout):
            await loop.create_connection(
                lambda: session,
                relay.hostname,
                relay.port,
                ssl=context if relay.use_tls else None,
                server_hostname=relay.hostname if relay.use_tls else None,
            )
            await self._expect(session, b"", 220, timeout)
        await self._hello(session)
        if relay.start_tls:
            if "STARTTLS" not in session.extensions:
                raise _Unsupported(
                    f"{relay.hostname} does not offer STARTTLS, which the URL requires"
                )
            assert context is not None
            await self._start_tls(session, context, relay.hostname)
        elif (
            relay.opportunistic_tls
            and "STARTTLS" in session.extensions
            and time.monotonic() >= self._plain_until
        ):
            try:
                await self._start_tls(session, _UNVERIFIED, None)
            except (_Refused, ssl.SSLError, OSError, TimeoutError) as exc:
                raise _TlsFailed(_describe(exc)) from exc
        if relay.username is not None:
            await self._authenticate(session, relay.username, relay.password or "")

    async def _start_tls(
        self, session: _Session, context: ssl.SSLContext, hostname: str | None
    ) -> None:
        """STARTTLS, the handshake, and EHLO again (RFC 3207: what was said before is void)."""
        options = self._options
        await self._expect(session, b"STARTTLS\r\n", 220, options.command_timeout)
        assert session.transport is not None
        async with asyncio.timeout(options.connect_timeout):
            transport = await asyncio.get_running_loop().start_tls(
                session.transport, session, context, server_hostname=hostname
            )
        if transport is None:
            raise _Closed("the connection closed during the TLS handshake")
        session.transport = transport
        await self._hello(session)

    async def _hello(self, session: _Session) -> None:
        timeout = self._options.command_timeout
        hostname = _hostname(self._local_hostname)
        [(code, text)] = (await session.request(b"EHLO %s\r\n" % hostname, 1, timeout))[:1]
        if code == 250:
            extensions: dict[str, str] = {}
            for line in text.split("\n")[1:]:
                keyword, _, parameters = line.strip().partition(" ")
                extensions[keyword.upper()] = parameters
            session.extensions = extensions
            return
        if code == 421:
            raise _Refused(code, text)
        await self._expect(session, b"HELO %s\r\n" % hostname, 250, timeout)
        session.extensions = {}

    async def _authenticate(self, session: _Session, username: str, password: str) -> None:
        timeout = self._options.command_timeout
        mechanisms = session.extensions.get("AUTH", "").upper().split()
        user, secret = username.encode("utf-8"), password.encode("utf-8")
        if "PLAIN" in mechanisms:
            token = base64.b64encode(b"\0" + user + b"\0" + secret)
            await self._expect(session, b"AUTH PLAIN " + token + b"\r\n", 235, timeout)
        elif "LOGIN" in mechanisms:
            await self._expect(session, b"AUTH LOGIN\r\n", 334, timeout)
            await self._expect(session, base64.b64encode(user) + b"\r\n", 334, timeout)
            await self._expect(session, base64.b64encode(secret) + b"\r\n", 235, timeout)
        else:
            raise _Unsupported(
                f"{self._relay.hostname} offers no AUTH mechanism this client speaks (PLAIN, LOGIN)"
            )

    @staticmethod
    async def _expect(session: _Session, data: bytes, wanted: int, timeout: float) -> None:
        [(code, text)] = (await session.request(data, 1, timeout))[:1]
        if code != wanted:
            raise _Refused(code, text)

    async def _reset(self, session: _Session) -> None:
        """Clears a refused transaction so the session can carry the next message."""
        try:
            code, _ = await session.command(b"RSET", self._options.command_timeout)
        except (OSError, TimeoutError):
            code = 0
        if code != 250:
            self.discard()

    def discard(self) -> None:
        """Drops the session without a goodbye; the next message opens a new one.

        A TLS transport's close() exchanges close_notify with the peer over several turns of
        the event loop; a loop that ends meanwhile leaks the socket. For a session being thrown
        away there is nothing left to say, so the transport is aborted.
        """
        session, self._session = self._session, None
        if session is not None:
            session.abort()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            if session.usable:
                await session.command(b"QUIT", QUIT_TIMEOUT)
        except (OSError, TimeoutError):
            pass
        finally:
            session.abort()


def _commands(message: _Prepared, session: _Session) -> list[bytes]:
    """MAIL FROM, RCPT TO per recipient and DATA, each with its line ending."""
    size = b" SIZE=%d" % len(message.raw) if "SIZE" in session.extensions else b""
    commands = [b"MAIL FROM:<%s>%s\r\n" % (message.sender, size)]
    commands += [b"RCPT TO:<%s>\r\n" % recipient for recipient in message.recipients]
    commands.append(b"DATA\r\n")
    return commands


def _envelope(message: _Prepared, session: _Session) -> bytes:
    return b"".join(_commands(message, session))


def _stage(index: int, recipients: int) -> str:
    """The command of the index-th reply to _commands."""
    return "MAIL FROM" if index == 0 else "DATA" if index > recipients else "RCPT TO"


def _refusal(message_id: str, stage: str, code: int, text: str) -> SendFailed:
    permanent = 500 <= code <= 599 and code not in _SESSION_REFUSALS
    return SendFailed(
        message_id, f"smtp_{code}", f"{stage}: {code} {text}", retryable=not permanent
    )


def _hostname(name: str) -> bytes:
    if name.isascii():
        return name.encode("ascii")
    try:
        return name.encode("idna")
    except UnicodeError:
        return b"localhost"


def _data(raw: bytes) -> bytes:
    """The message as it goes after DATA's 354: dot-stuffed (RFC 5321 4.5.2), ending with the
    lone dot. `raw` comes from build_message, whose line breaks are all CRLF (which
    tests/unit/test_mime.py checks of every message it builds): looking for others cost more
    than the rest of this."""
    if raw.startswith(b"."):
        raw = b"." + raw
    raw = raw.replace(b"\r\n.", b"\r\n..")
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw + b".\r\n"


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
    html = _text(content.get("html"))
    raw = build_message(
        message_id=message.message_id,
        from_address=from_address,
        from_name=_text(settings.get("from_name")),
        to=message.to,
        reply_to=_text(settings.get("reply_to")),
        subject=_text(content.get("subject")) or "",
        html=inline_css(html)
        if html and settings.get("inline_css", True) and not message.css_inlined
        else html,
        text=_text(content.get("text")),
        headers=dict(merged.values()),
    )
    if settings.get("dkim_private_key"):
        raw = dkim.sign(raw, _dkim_key(settings))
    sender, recipients = envelope(from_address=from_address, to=message.to)
    return raw, sender.encode("ascii"), [recipient.encode("ascii") for recipient in recipients]


# Parsed DKIM keys by configuration (domain, selector, PEM): loading an RSA key checks it, which
# costs milliseconds. Bounded by the configurations in use; cleared if that ever grows large.
_DKIM_KEYS: dict[tuple[str, str, str], dkim.DkimKey] = {}
_MAX_DKIM_KEYS = 1000


def _dkim_key(settings: Mapping[str, Any]) -> dkim.DkimKey:
    domain, selector = settings.get("dkim_domain"), settings.get("dkim_selector")
    pem = settings.get("dkim_private_key")
    if not (isinstance(domain, str) and isinstance(selector, str) and isinstance(pem, str)):
        raise MessageBuildError(
            "dkim_error", "DKIM needs dkim_domain, dkim_selector and dkim_private_key"
        )
    key = _DKIM_KEYS.get((domain, selector, pem))
    if key is None:
        try:
            key = dkim.DkimKey(
                dkim.check_dns_name(domain),
                dkim.check_dns_name(selector),
                dkim.load_private_key(pem),
            )
        except ValueError as exc:
            raise MessageBuildError("dkim_error", f"the DKIM key is not usable: {exc}") from None
        if len(_DKIM_KEYS) >= _MAX_DKIM_KEYS:
            _DKIM_KEYS.clear()
        _DKIM_KEYS[(domain, selector, pem)] = key
    return key


def _positive(value: Any, kind: type[int] | type[float]) -> Any:
    """A configuration's pool size or rate when it is a positive number, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return kind(value)
    return None


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
