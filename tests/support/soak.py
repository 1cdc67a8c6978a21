"""The soak harness: many messages through real Tidings processes while it kills them.

It starts `tidings serve` on SQLite, or N `tidings api` and M `tidings worker` processes on
PostgreSQL, and an SMTP relay (aiosmtpd, in a process of its own) that answers 421 or 451, or
drops the connection, for a set share of the messages it is offered. It triggers unitary calls
of 20 recipients, each recipient a message of its own whose address names it, so arrivals match
messages one to one. A call that gets no answer (its process was killed, the database was
away) is sent again with the same `request_id` until it gets one, so the harness knows exactly
what was accepted. Meanwhile it kill -9s a random process every few seconds and restarts it.

At the end it waits until every accepted message is in a terminal state and checks: every
accepted message is terminal, every `sent` one arrived, none was lost, and duplicates stay
within the documented bound: a message is sent twice only if it was claimed (`sending`) by a
worker that was killed, and a worker holds at most TIDINGS_DELIVERY_BATCH_SIZE such messages
(delivery/worker.py), so duplicates <= (kills of processes running a worker) x batch size.

`python -m tests.support.soak --help` runs it from the command line (`make soak`);
tests/e2e/test_soak.py runs a short version in `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

KEY = "soak-bootstrap-key-0123456789abcdef"
SECRET_KEY = "soak-secret-key-shared-by-every-process-0123456789"
HOST = "127.0.0.1"
RECIPIENTS_PER_CALL = 20
TERMINAL = ("sent", "delivered", "bounced", "excluded", "failed", "cancelled")
SENT = ("sent", "delivered", "bounced")
# A call is retried with its request_id until answered, for at most this long.
CALL_DEADLINE_SECONDS = 300.0
START_SECONDS = 180.0
# The killer stops this long after the last trigger was answered, whatever is left to send.
MAX_KILL_SECONDS_AFTER_TRIGGERS = 120.0
MAX_PROGRESS_WAIT_SECONDS = 60.0

Backend = Literal["sqlite", "postgresql"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --- the SMTP relay ---------------------------------------------------------------------------


class FaultySink:
    """An aiosmtpd handler: per recipient offered, with probability `fault_rate`, a 421 (and
    the session closed), a 451, or a dropped connection (at RCPT or after the message's data,
    before any reply); otherwise accepted and counted. A dropped message is never counted, so
    every count above one is a real second send."""

    def __init__(self, fault_rate: float, seed: int) -> None:
        self.fault_rate = fault_rate
        self.random = random.Random(seed)
        self.received: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.lock = threading.Lock()

    def _fault(self) -> str | None:
        if self.random.random() >= self.fault_rate:
            return None
        return self.random.choice(("421", "451", "drop_at_rcpt", "drop_after_data"))

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        fault = self._fault()
        if fault is not None:
            with self.lock:
                self.faults[fault] += 1
        if fault == "421":
            server.transport.close()
            return "421 4.3.2 service shutting down"
        if fault == "451":
            return "451 4.3.0 try again later"
        if fault == "drop_at_rcpt":
            server.transport.abort()
            return "250 OK"  # never reaches the client
        if fault == "drop_after_data":
            session.soak_drop = True  # see handle_DATA
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if getattr(session, "soak_drop", False):
            session.soak_drop = False
            server.transport.abort()
            return "250 OK"  # never reaches the client: the data is taken for not accepted
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received[rcpt.lower()] += 1
        return "250 OK"

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"received": dict(self.received), "faults": dict(self.faults)}


def serve_sink(port: int, fault_rate: float, seed: int, report: Path) -> None:
    """Runs a FaultySink until SIGTERM, then writes what it counted to `report` (JSON)."""
    from aiosmtpd.controller import Controller

    sink = FaultySink(fault_rate, seed)
    controller = Controller(sink, hostname=HOST, port=port)
    controller.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    while not stopped.wait(0.5):
        pass
    controller.stop()
    partial = report.with_suffix(".partial")
    partial.write_text(json.dumps(sink.snapshot()))
    partial.replace(report)


@dataclass
class SinkProcess:
    process: subprocess.Popen[bytes]
    port: int
    report: Path

    @classmethod
    def start(cls, work_dir: Path, fault_rate: float, seed: int) -> SinkProcess:
        port = free_port()
        report = work_dir / "sink.json"
        # The child keeps its own descriptor; ours closes at once.
        with (work_dir / "sink.log").open("wb") as log:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "tests.support.soak", "sink"),
                    *(str(port), str(fault_rate), str(seed), str(report)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the SMTP sink exited: {(work_dir / 'sink.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
                return cls(process, port, report)
            time.sleep(0.05)
        process.kill()
        raise RuntimeError("the SMTP sink did not listen")

    def stop(self) -> dict[str, Any]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        result: dict[str, Any] = json.loads(self.report.read_text())
        return result


# --- Tidings processes ------------------------------------------------------------------------


@dataclass
class Managed:
    """One Tidings process the harness starts, kills and restarts; `port` for HTTP ones."""

    name: str
    command: str
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    runs_worker: bool = False
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        env = dict(self.env)
        if self.port is not None:
            env["TIDINGS_PORT"] = str(self.port)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tidings", self.command], env=env, stdout=log, stderr=log
            )

    def wait_ready(self) -> None:
        """Until /healthz answers (HTTP processes); a worker is taken as ready once spawned."""
        assert self.process is not None
        if self.port is None:
            return
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://{HOST}:{self.port}/healthz", timeout=10).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /healthz in {START_SECONDS:.0f} s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status (None if it had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process is not None else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


def live_campaign(base_url: str, key: str = KEY) -> str:
    """Creates and activates a transactional email campaign over HTTP; returns its id."""
    with httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as client:
        configuration = client.post(
            "/v1/channel-configurations",
            json={
                "name": "Soak",
                "channel": "email",
                "category": "transactional",
                "email": {"from_address": "soak@example.com"},
            },
        )
        configuration.raise_for_status()
        campaign = client.post(
            "/v1/campaigns",
            json={
                "name": "Soak",
                "category": "transactional",
                "channel": "email",
                "channel_configuration_id": configuration.json()["id"],
                "content": {
                    "subject": "Order {{ context.order }}",
                    "html": "<p>Order {{ context.order }} for {{ profile.name }}</p>",
                },
                "audience": {"identity_namespace": "email", "create_new_profiles": True},
            },
        )
        campaign.raise_for_status()
        campaign_id: str = campaign.json()["id"]
        client.post(f"/v1/campaigns/{campaign_id}/activate").raise_for_status()
        return campaign_id


# --- configuration and results ----------------------------------------------------------------


@dataclass(frozen=True)
class SoakConfig:
    backend: Backend = "sqlite"
    messages: int = 2_000
    apis: int = 1  # PostgreSQL: `tidings api` processes (SQLite: one `tidings serve`)
    workers: int = 1  # PostgreSQL: `tidings worker` processes
    kill_interval: float = 5.0  # seconds between a restart and the next kill
    min_kills: int = 2  # kills go on after the triggers until there were this many
    # ... and until no more than this share of the accepted messages is still to be sent
    kill_until_pending: float = 0.05
    fault_rate: float = 0.05  # share of recipients offered to the relay that meet a fault
    rate: float = 0.0  # messages/s the triggers are paced at; 0: as fast as they are accepted
    concurrency: int = 4  # calls in flight
    batch_size: int = 100  # TIDINGS_DELIVERY_BATCH_SIZE
    # TIDINGS_DELIVERY_LEASE_SECONDS: short, so a killed worker's batch is sent again soon (a
    # live worker renews its lease while it sends, so a slow batch is not claimed twice)
    lease_seconds: float = 10.0
    drain_timeout: float = 600.0
    seed: int = 1
    database_url: str | None = None  # PostgreSQL (required there)


@dataclass
class SoakReport:
    config: SoakConfig
    accepted: int = 0
    calls: int = 0
    call_retries: int = 0
    unanswered_calls: int = 0
    stored: int = 0  # messages in the database for this run's recipients
    terminal: int = 0
    states: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    delivered: int = 0  # sent, and arrived at the relay
    lost: int = 0  # accepted, never arrived, and not failed/excluded with a reason
    sent_not_arrived: int = 0
    duplicated: int = 0  # arrivals beyond the first, over all messages
    duplicate_bound: int = 0
    extra_messages: int = 0  # more than one message for one recipient (idempotency broken)
    arrived_not_accepted: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    worker_kills: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    unclean_exits: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def summary(self) -> str:
        config = self.config
        shape = (
            "tidings serve (SQLite)"
            if config.backend == "sqlite"
            else f"{config.apis} api + {config.workers} worker processes (PostgreSQL)"
        )
        return (
            f"soak {shape}: accepted {self.accepted}, delivered {self.delivered}, "
            f"lost {self.lost}, duplicated {self.duplicated} (bound {self.duplicate_bound} = "
            f"{self.worker_kills} worker kills x batch {config.batch_size}), "
            f"terminal {self.terminal}, states {self.states}, kills {self.kills}, "
            f"SMTP faults {sum(self.faults.values())} {self.faults}, "
            f"call retries {self.call_retries}, elapsed {self.elapsed:.0f} s"
        )

    def problems(self) -> list[str]:
        """What broke a promise; empty when the run kept them all."""
        found = []
        if self.unanswered_calls:
            found.append(f"{self.unanswered_calls} calls never got an answer")
        if self.accepted != self.config.messages:
            found.append(f"accepted {self.accepted} of {self.config.messages}")
        if self.terminal != self.accepted:
            found.append(f"only {self.terminal} of {self.accepted} accepted messages terminal")
        if self.stored != self.accepted or self.extra_messages:
            found.append(f"{self.stored} messages stored for {self.accepted} accepted")
        if self.lost:
            found.append(f"{self.lost} messages lost ({self.sent_not_arrived} `sent` unarrived)")
        if self.duplicated > self.duplicate_bound:
            found.append(f"{self.duplicated} duplicates over the bound {self.duplicate_bound}")
        if self.arrived_not_accepted:
            found.append(f"{self.arrived_not_accepted} arrivals for no accepted message")
        if self.unclean_exits:
            found.append(f"unclean exits at the end: {self.unclean_exits}")
        return found


# --- the run ----------------------------------------------------------------------------------


class Soak:
    def __init__(self, config: SoakConfig, work_dir: Path) -> None:
        if config.backend == "postgresql" and not config.database_url:
            raise ValueError("a PostgreSQL soak needs database_url")
        self.config = config
        self.work_dir = work_dir
        self.run_id = f"{os.getpid()}x{time.monotonic_ns() % 1_000_000}"
        self.random = random.Random(config.seed)
        self.report = SoakReport(config=config)
        self.processes: list[Managed] = []
        self.accepted: set[str] = set()
        self.triggers_done = threading.Event()
        self.stop_killing = threading.Event()
        self.killer_error: BaseException | None = None

    def address(self, index: int) -> str:
        return f"soak-{self.run_id}-{index}@example.com"

    def _env(self, smtp_port: int) -> dict[str, str]:
        config = self.config
        env = {
            **os.environ,
            "TIDINGS_DATA_DIR": str(self.work_dir / "data"),
            "TIDINGS_HOST": HOST,
            "TIDINGS_BOOTSTRAP_API_KEY": KEY,
            "TIDINGS_SMTP_URL": f"smtp://{HOST}:{smtp_port}",
            "TIDINGS_DELIVERY_BATCH_SIZE": str(config.batch_size),
            "TIDINGS_DELIVERY_LEASE_SECONDS": str(config.lease_seconds),
            "TIDINGS_RETRY_BASE_SECONDS": "0.2",
            "TIDINGS_RETRY_MAX_SECONDS": "2",
            "TIDINGS_MAX_ATTEMPTS": "50",
            "TIDINGS_WORKER_POLL_SECONDS": "0.2",
            "TIDINGS_LOG_LEVEL": "warning",
            "TIDINGS_DEV_MAILBOX": "false",
            "TIDINGS_SECRET_KEY": SECRET_KEY,
        }
        env.pop("TIDINGS_DATABASE_URL", None)
        if config.backend == "postgresql":
            assert config.database_url is not None
            env["TIDINGS_DATABASE_URL"] = config.database_url
        return env

    def _fleet(self, smtp_port: int) -> list[Managed]:
        env = self._env(smtp_port)
        logs = self.work_dir
        if self.config.backend == "sqlite":
            return [
                Managed("serve", "serve", env, logs / "serve.log", free_port(), runs_worker=True)
            ]
        apis = [
            Managed(f"api-{i}", "api", env, logs / f"api-{i}.log", free_port())
            for i in range(self.config.apis)
        ]
        workers = [
            Managed(f"worker-{i}", "worker", env, logs / f"worker-{i}.log", runs_worker=True)
            for i in range(self.config.workers)
        ]
        return apis + workers

    @property
    def api_ports(self) -> list[int]:
        return [process.port for process in self.processes if process.port is not None]

    def run(self) -> SoakReport:
        started = time.monotonic()
        (self.work_dir / "data").mkdir(parents=True, exist_ok=True)
        sink = SinkProcess.start(self.work_dir, self.config.fault_rate, self.config.seed)
        sink_result: dict[str, Any] | None = None
        self.processes = self._fleet(sink.port)
        killer = threading.Thread(target=self._kill_now_and_then, name="soak-killer")
        try:
            # The first process migrates and creates the key; the others find both done.
            self.processes[0].start()
            for process in self.processes[1:]:
                process.spawn()
            for process in self.processes[1:]:
                process.wait_ready()
            campaign_id = live_campaign(f"http://{HOST}:{self.api_ports[0]}")
            killer.start()
            asyncio.run(self._trigger_all(campaign_id))
            self.triggers_done.set()
            killer.join()
            if self.killer_error is not None:
                raise RuntimeError("a restart failed") from self.killer_error
            self._wait_terminal()
            time.sleep(1.0)  # stragglers of a batch on the wire when the last state was read
        finally:
            self.stop_killing.set()
            if killer.is_alive():
                killer.join()
            for process in self.processes:
                status = process.stop()
                if status not in (0, -signal.SIGTERM):
                    self.report.unclean_exits.append(f"{process.name} ({status})")
                    print(
                        f"{process.name} exited with {status}:\n"
                        + process.log_path.read_text(errors="replace")[-3000:],
                        file=sys.stderr,
                    )
            sink_result = sink.stop()
        self._tally(sink_result)
        self.report.elapsed = time.monotonic() - started
        return self.report

    async def _trigger_all(self, campaign_id: str) -> None:
        config = self.config
        calls = -(-config.messages // RECIPIENTS_PER_CALL)
        self.report.calls = calls
        next_call = 0
        started = time.monotonic()
        clients = {
            port: httpx.AsyncClient(
                base_url=f"http://{HOST}:{port}",
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=15,
            )
            for port in self.api_ports
        }

        async def caller() -> None:
            nonlocal next_call
            while next_call < calls:
                index = next_call
                next_call += 1
                first = index * RECIPIENTS_PER_CALL
                last = min(first + RECIPIENTS_PER_CALL, config.messages)
                if config.rate > 0:
                    due = started + first / config.rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                await self._call(clients, campaign_id, index, list(range(first, last)))

        try:
            await asyncio.gather(*(caller() for _ in range(config.concurrency)))
        finally:
            for client in clients.values():
                await client.aclose()

    async def _call(
        self,
        clients: dict[int, httpx.AsyncClient],
        campaign_id: str,
        index: int,
        recipients: list[int],
    ) -> None:
        addresses = [self.address(n) for n in recipients]
        body = {
            "campaign_id": campaign_id,
            "request_id": f"soak-{self.run_id}-call-{index}",
            "context": {"order": str(index)},
            "recipients": [
                {"identity": {"namespace": "email", "id": address}, "profile": {"name": "A"}}
                for address in addresses
            ],
        }
        ports = list(clients)
        deadline = time.monotonic() + CALL_DEADLINE_SECONDS
        attempt = 0
        while time.monotonic() < deadline:
            # Each try goes to the next API process: a load balancer's view of one that died.
            client = clients[ports[(index + attempt) % len(ports)]]
            if attempt:
                self.report.call_retries += 1
                await asyncio.sleep(min(2.0, 0.1 * attempt))
            attempt += 1
            try:
                response = await client.post("/v1/executions", json=body)
            except httpx.TransportError:
                continue
            if response.status_code == 202:
                if response.json()["accepted"] != len(addresses):
                    raise AssertionError(f"call {index}: {response.text}")
                self.accepted.update(addresses)
                return
            # 409: the first try of this request_id is still being committed; 503: the
            # database is away; 429: too fast. Anything else is a defect.
            if response.status_code not in (409, 429, 503):
                raise AssertionError(f"call {index}: {response.status_code} {response.text}")
        self.report.unanswered_calls += 1

    def _kill_now_and_then(self) -> None:
        try:
            self._kill_loop()
        except BaseException as exc:  # a restart that failed: the run stops with it
            self.killer_error = exc
            self.triggers_done.set()

    def _kill_loop(self) -> None:
        triggers_done_at: float | None = None
        while not self.stop_killing.wait(self.config.kill_interval):
            if self.triggers_done.is_set() and triggers_done_at is None:
                triggers_done_at = time.monotonic()
            if triggers_done_at is not None and (
                time.monotonic() - triggers_done_at > MAX_KILL_SECONDS_AFTER_TRIGGERS
                or (
                    sum(self.report.kills.values()) >= self.config.min_kills
                    and self._pending() <= self.config.kill_until_pending * len(self.accepted)
                )
            ):
                return
            victim = self.random.choice(self.processes)
            victim.kill()
            self.report.kills[victim.name] = self.report.kills.get(victim.name, 0) + 1
            if victim.runs_worker:
                self.report.worker_kills += 1
            victim.start()
            self._wait_for_progress()

    def _wait_for_progress(self) -> None:
        """Until a message more is terminal (or none is left to be): on a loaded machine a
        process killed every few seconds could otherwise be killed again before its worker
        sends anything, and the run would make no progress at all."""
        deadline = time.monotonic() + MAX_PROGRESS_WAIT_SECONDS
        before = self._terminal()
        while not self.stop_killing.is_set() and time.monotonic() < deadline:
            if self._terminal() > before or (self.triggers_done.is_set() and self._pending() == 0):
                return
            time.sleep(0.2)

    # --- reading the outcome ---

    @contextlib.contextmanager
    def _database(self) -> Iterator[Any]:
        if self.config.backend == "sqlite":
            path = self.work_dir / "data" / "tidings.db"
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            try:
                yield connection
            finally:
                connection.close()
            return
        import psycopg

        assert self.config.database_url is not None
        url = self.config.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as connection:
            yield connection

    def _states(self) -> dict[str, int]:
        pattern = f"soak-{self.run_id}-%"
        mark = "?" if self.config.backend == "sqlite" else "%s"
        with self._database() as database:
            rows = database.execute(
                f"SELECT state, count(*) FROM messages WHERE recipient_id LIKE {mark} "
                "GROUP BY state",
                (pattern,),
            ).fetchall()
        return {state: count for state, count in rows}

    def _terminal(self) -> int:
        states = self._states()
        return sum(count for state, count in states.items() if state in TERMINAL)

    def _pending(self) -> int:
        """Accepted messages not yet in a terminal state (not yet stored ones included)."""
        return max(0, len(self.accepted) - self._terminal())

    def _wait_terminal(self) -> None:
        deadline = time.monotonic() + self.config.drain_timeout
        while time.monotonic() < deadline and self._pending() > 0:
            time.sleep(0.5)

    def _tally(self, sink: dict[str, Any]) -> None:
        report = self.report
        pattern = f"soak-{self.run_id}-%"
        mark = "?" if self.config.backend == "sqlite" else "%s"
        with self._database() as database:
            rows = database.execute(
                f"SELECT recipient_id, state, reason FROM messages WHERE recipient_id LIKE {mark}",
                (pattern,),
            ).fetchall()
        received: dict[str, int] = sink["received"]
        report.faults = sink["faults"]
        messages_of: Counter[str] = Counter()
        states: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for recipient, state, reason in rows:
            messages_of[recipient] += 1
            states[state] += 1
            if reason:
                reasons[f"{state}:{reason}"] += 1
            arrived = received.get(recipient.lower(), 0) > 0
            if recipient not in self.accepted:
                continue
            if state in TERMINAL:
                report.terminal += 1
            if state in SENT and arrived:
                report.delivered += 1
            elif state in SENT:
                report.sent_not_arrived += 1
            if not arrived and not (state in ("failed", "excluded") and reason):
                report.lost += 1
        report.lost += len(self.accepted - set(messages_of))  # accepted, never stored
        report.accepted = len(self.accepted)
        report.stored = len(rows)
        report.extra_messages = sum(count - 1 for count in messages_of.values())
        report.states = dict(states)
        report.reasons = dict(reasons)
        accepted_lower = {address.lower() for address in self.accepted}
        report.duplicated = sum(count - 1 for count in received.values() if count > 1)
        report.arrived_not_accepted = sum(1 for r in received if r not in accepted_lower)
        report.duplicate_bound = report.worker_kills * self.config.batch_size


def run_soak(config: SoakConfig, work_dir: Path | None = None) -> SoakReport:
    if work_dir is not None:
        return Soak(config, work_dir).run()
    with tempfile.TemporaryDirectory(prefix="tidings-soak-") as folder:
        return Soak(config, Path(folder)).run()


# --- command line (`make soak`) ---------------------------------------------------------------


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.soak",
        description="Messages through real Tidings processes killed with -9 now and then, into "
        "an SMTP relay that fails a share of them; checks nothing is lost.",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-interval", type=float, default=5.0)
    parser.add_argument("--min-kills", type=int, default=3)
    parser.add_argument(
        "--kill-until-pending",
        type=float,
        default=0.05,
        help="kills go on until no more than this share of accepted messages is unsent",
    )
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s; 0: unpaced")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lease-seconds", type=float, default=10.0)
    parser.add_argument("--drain-timeout", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", help="PostgreSQL; unset: a throwaway cluster")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--work-dir", type=Path, help="keep data and logs here (default: a temp)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    if argv[:1] == ["sink"]:
        port, fault_rate, seed, report = argv[1:5]
        serve_sink(int(port), float(fault_rate), int(seed), Path(report))
        return 0
    arguments = _arguments(argv)
    cluster = None
    database_url = arguments.database_url
    if arguments.backend == "postgresql" and not database_url:
        from tests.support.postgres import PostgresCluster

        cluster = PostgresCluster.start()
        database_url = cluster.create_database("soak")
    try:
        report = run_soak(
            SoakConfig(
                backend=arguments.backend,
                messages=arguments.messages,
                apis=arguments.apis,
                workers=arguments.workers,
                kill_interval=arguments.kill_interval,
                min_kills=arguments.min_kills,
                kill_until_pending=arguments.kill_until_pending,
                fault_rate=arguments.fault_rate,
                rate=arguments.rate,
                concurrency=arguments.concurrency,
                batch_size=arguments.batch_size,
                lease_seconds=arguments.lease_seconds,
                drain_timeout=arguments.drain_timeout,
                seed=arguments.seed,
                database_url=database_url,
            ),
            arguments.work_dir,
        )
    finally:
        if cluster is not None:
            cluster.stop()
    print(report.summary(), flush=True)
    if arguments.json is not None:
        document = asdict(report)
        document["problems"] = report.problems()
        arguments.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    problems = report.problems()
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
