"""kill -9 in the middle of a send: every accepted message still arrives, duplicates bounded."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import smtp_server
from tests.e2e.test_delivery import live_email_campaign, trigger_in_chunks
from tests.e2e.test_serve import KEY, start_server, stop_server

pytestmark = pytest.mark.e2e
MESSAGES = 2000
BATCH = 100  # TIDINGS_DELIVERY_BATCH_SIZE: the documented bound on duplicates per crash


class CountingSink:
    """Counts deliveries per recipient; slowed a little so a kill lands mid-flight."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received[rcpt] += 1
        return "250 OK"

    def total(self) -> int:
        with self.lock:
            return sum(self.received.values())


@pytest.fixture
def sink() -> Iterator[tuple[CountingSink, int]]:
    handler = CountingSink()
    with smtp_server(handler) as port:
        yield handler, port


def test_kill_9_mid_send_loses_nothing(tmp_path: Path, sink: tuple[CountingSink, int]):
    inbox, port = sink
    env = {
        "TIDINGS_BOOTSTRAP_API_KEY": KEY,
        "TIDINGS_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "TIDINGS_DELIVERY_BATCH_SIZE": str(BATCH),
        "TIDINGS_DELIVERY_LEASE_SECONDS": "2",
    }
    server = start_server(tmp_path, **env)
    addresses = [f"user{i}@example.com" for i in range(MESSAGES)]
    try:
        with server.client() as client:
            campaign = live_email_campaign(client)
            trigger_in_chunks(client, campaign["id"], addresses)
        deadline = time.monotonic() + 60
        while inbox.total() < MESSAGES // 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert inbox.total() < MESSAGES, "everything arrived before the kill: nothing tested"
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        at_kill = inbox.total()
    finally:
        if server.process.poll() is None:
            server.process.kill()

    restarted = start_server(tmp_path, **env)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if all(inbox.received[address] for address in addresses):
                break
            time.sleep(0.2)
        time.sleep(1)  # let stragglers of the last batch arrive before counting duplicates
    finally:
        stop_server(restarted)
    missing = [address for address in addresses if not inbox.received[address]]
    duplicates = sum(count - 1 for count in inbox.received.values() if count > 1)
    print(f"kill -9 after {at_kill} deliveries: missing {len(missing)}, duplicates {duplicates}")
    assert missing == []
    assert duplicates <= BATCH
