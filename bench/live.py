"""A real `tidings serve` process, an SMTP sink and an HTTP load loop, for end-to-end benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import fixtures

STARTUP_SECONDS = 90

API_KEY = "bench-live-key-0123456789abcdef"
HOST = "127.0.0.1"
STOP_SECONDS = 15.0
IDLE_RECONNECT = 2.0
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {HOST}:{port} within 10 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it is still there after STOP_SECONDS."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def load_average() -> str:
    """The 1-minute load average, for the notes: this machine is shared."""
    return f"{os.getloadavg()[0]:.2f}"


def smtp_sink_available() -> bool:
    return shutil.which("smtp-sink") is not None and shutil.which("smtp-source") is not None


@contextlib.contextmanager
def postfix_sink(dump_dir: Path | None = None) -> Iterator[int]:
    """Postfix's smtp-sink on a free loopback port (yields the port); `dump_dir` keeps each
    message as a file, whose modification time is when the sink accepted it."""
    if not smtp_sink_available():
        raise RuntimeError(
            "Postfix's smtp-sink is missing: run /work/shared/scripts/smtp-ceiling once "
            "(it installs Debian's postfix package, with no mail service configured)"
        )
    port = free_port()
    command = ["smtp-sink"]
    if os.geteuid() == 0:
        # smtp-sink refuses to keep root privileges.
        command += ["-u", "nobody"]
    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)
        dump_dir.chmod(0o777)
        command += ["-d", f"{dump_dir}/m."]
    command += [f"{HOST}:{port}", "1000"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process, "smtp-sink")
        yield port
    finally:
        _stop(process)


@contextlib.contextmanager
def aiosmtpd_sink() -> Iterator[int]:
    """An aiosmtpd server in a thread of this process that accepts and drops every message."""
    from aiosmtpd.controller import Controller

    class Drop:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    port = free_port()
    controller = Controller(Drop(), hostname=HOST, port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def smtp_source(port: int, messages: int, size: int, sessions: int) -> float:
    """Seconds Postfix's smtp-source takes to send `messages` over persistent connections."""
    command = [
        "smtp-source",
        "-d",
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-f",
        "from@example.com",
        "-t",
        "to@example.com",
        f"{HOST}:{port}",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, timeout=120, capture_output=True)
    return time.perf_counter() - started


@dataclass
class Server:
    """One `python -m tidings serve` process with its own data folder and port."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @classmethod
    def start(
        cls, data_dir: Path, smtp_url: str, command: str = "serve", **extra_env: str
    ) -> Server:
        """`command` is `serve` (API and worker) or `api` (no worker)."""
        port = free_port()
        env = {
            **os.environ,
            "TIDINGS_DATA_DIR": str(data_dir),
            "TIDINGS_PORT": str(port),
            "TIDINGS_HOST": HOST,
            "TIDINGS_BOOTSTRAP_API_KEY": API_KEY,
            "TIDINGS_LOG_LEVEL": "warning",
            "TIDINGS_SMTP_URL": smtp_url,
            **extra_env,
        }
        env.pop("TIDINGS_DATABASE_URL", None)
        log_path = data_dir / "serve.log"
        # A file, not a pipe: a full pipe would block the server.
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tidings", command], env=env, stdout=log, stderr=log
            )
        server = cls(process, port, data_dir, log_path)
        try:
            server._wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _wait_ready(self) -> None:
        # A loaded machine (migrations, imports and the first start of the console) can take
        # tens of seconds.
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tidings serve exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"tidings serve did not answer /healthz within {STARTUP_SECONDS} s")

    def stop(self) -> None:
        _stop(self.process)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )

    def connections(self, count: int) -> list[Connection]:
        return [Connection(self.port) for _ in range(count)]

    def database(self) -> sqlite3.Connection:
        """A read-only connection to the server's SQLite file (WAL: it never blocks the writer)."""
        path = self.data_dir / "tidings.db"
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)


def _expect(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise AssertionError(
            f"{response.request.method} {response.request.url.path}: expected {status}, "
            f"got {response.status_code}: {response.text[:500]}"
        )
    body: dict[str, Any] = response.json()
    return body


def live_campaign(
    server: Server,
    smtp_url: str | None = None,
    category: str = "transactional",
    email_settings: dict[str, Any] | None = None,
    name: str | None = None,
) -> str:
    """A live email campaign (transactional unless told) with the 3.7 KB fixture email that
    creates the profiles of unknown recipients; returns its id. `email_settings` are added to
    its channel configuration's (DKIM, tracking...); `name` names that configuration, which
    must be unique in the workspace."""
    email: dict[str, Any] = {"from_address": "shop@example.com", "from_name": "Example Shop"}
    if smtp_url is not None:
        email["smtp_url"] = smtp_url
    email.update(email_settings or {})
    with server.client() as client:
        configuration = _expect(
            client.post(
                "/v1/channel-configurations",
                json={
                    "name": name or f"Orders {smtp_url or 'default relay'} {category}",
                    "channel": "email",
                    "category": category,
                    "email": email,
                },
            ),
            201,
        )
        campaign = _expect(
            client.post(
                "/v1/campaigns",
                json={
                    "name": "Order shipped",
                    "category": category,
                    "channel": "email",
                    "channel_configuration_id": configuration["id"],
                    "content": fixtures.CONTENT,
                    "audience": {"identity_namespace": "email", "create_new_profiles": True},
                },
            ),
            201,
        )
        activated = _expect(client.post(f"/v1/campaigns/{campaign['id']}/activate"), 200)
        if activated["status"] != "live":
            raise AssertionError(f"the benchmark campaign is {activated['status']}, not live")
        campaign_id: str = campaign["id"]
        return campaign_id


class Bodies:
    """JSON bodies of POST /v1/executions, each recipient a new address (a new profile), or,
    with `pool`, one of that many addresses in turn (known profiles once each was sent)."""

    def __init__(
        self, campaign_id: str, prefix: str, execute_at: str | None = None, pool: int | None = None
    ) -> None:
        head: dict[str, Any] = {"campaign_id": campaign_id, "context": fixtures.CONTEXT}
        if execute_at is not None:
            head["execute_at"] = execute_at
        # The recipients go last: '{..., "recipients":[' + items + ']}'.
        self._head = json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"recipients":['

        self._prefix = prefix.encode()
        self._next = 0
        self.pool = pool

    def recipient(self) -> tuple[bytes, str]:
        self._next += 1
        number = self._next % self.pool if self.pool else self._next
        address = b"%s%d@example.com" % (self._prefix, number)
        item = b'{"identity":{"namespace":"email","id":"%s"},"profile":{"firstName":"ada"}}' % (
            address
        )
        return item, address.decode()

    def body(self, recipients: int) -> tuple[bytes, list[str]]:
        items, addresses = zip(*(self.recipient() for _ in range(recipients)), strict=True)
        return self._head + b",".join(items) + b"]}", list(addresses)


class Connection:
    """One persistent HTTP/1.1 connection to the server, one request at a time.

    Not httpx: as a load generator on this 2-core machine, httpx.AsyncClient cost the client
    2.4 ms of CPU per request with 16 connections (10 ms in this venv, where a failed import
    of sniffio is retried on every request), so the client, not the server, set the pace.
    This costs a few tens of microseconds.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0
        self._head = (
            b"Host: %s:%d\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
            % (HOST.encode(), port, API_KEY.encode())
        )

    async def request(self, method: bytes, path: bytes, body: bytes = b"") -> tuple[int, bytes]:
        """(status, body) of one request, on a fresh connection when this one sat idle long
        enough for the server to close it (uvicorn's keep-alive timeout is 5 s)."""
        if self._writer is not None and time.monotonic() - self._last_used > IDLE_RECONNECT:
            await self.close()
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        assert self._reader is not None
        self._writer.write(
            b"%s %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
            % (method, path, self._head, len(body), body)
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = head.lower()
        if b"transfer-encoding: chunked" in headers:
            content = await self._chunked()
        else:
            length = headers.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]
            content = await self._reader.readexactly(int(length))
        self._last_used = time.monotonic()
        if b"connection: close" in headers:
            await self.close()
        return status, content

    async def _chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")  # the blank line after the last chunk
                return b"".join(parts)
            parts.append((await self._reader.readexactly(size + 2))[:-2])

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def event_loop_runner() -> asyncio.Runner:
    """An asyncio.Runner on uvloop when it is installed (a cheaper client), else the default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


@dataclass
class Load:
    """What one timed window of requests gave."""

    seconds: float
    ok: int
    latencies: list[float] = field(default_factory=list)  # seconds, every response
    failures: dict[int, int] = field(default_factory=dict)  # status -> count
    failure_sample: bytes = b""
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def record(self, status: int, expected: int, content: bytes) -> None:
        if status == expected:
            self.ok += 1
        else:
            self.failures[status] = self.failures.get(status, 0) + 1
            self.failure_sample = self.failure_sample or content[:500]


# (method, path, body) of the next request to send.
Request = Callable[[], tuple[bytes, bytes, bytes]]


async def closed_loop(
    connections: list[Connection],
    request: Request,
    expected: int,
    seconds: float,
    server: Server,
) -> Load:
    """One request in flight per connection until `seconds` have passed; each response's
    status is checked against `expected`; the window ends when the last one is back."""
    load = Load(seconds=0.0, ok=0)
    started = time.perf_counter()
    deadline = started + seconds
    server_cpu, client_cpu = server.cpu_seconds(), time.process_time()

    async def one_at_a_time(connection: Connection) -> None:
        while time.perf_counter() < deadline:
            method, path, body = request()
            sent = time.perf_counter()
            status, content = await connection.request(method, path, body)
            load.latencies.append(time.perf_counter() - sent)
            load.record(status, expected, content)

    await asyncio.gather(*(one_at_a_time(connection) for connection in connections))
    load.seconds = time.perf_counter() - started
    load.server_cpu = server.cpu_seconds() - server_cpu
    load.client_cpu = time.process_time() - client_cpu
    return load


def count_states(database: sqlite3.Connection) -> dict[str, int]:
    rows = database.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall()
    return {state: count for state, count in rows}
