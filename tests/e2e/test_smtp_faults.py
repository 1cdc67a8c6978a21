"""SMTP faults end to end: 451 replies and a relay that goes away, then recovers; a 550 fails."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.e2e.test_delivery import live_email_campaign, trigger_in_chunks
from tests.e2e.test_serve import KEY, start_server, stop_server
from tests.support.postgres import free_port

pytestmark = pytest.mark.e2e
REFUSED = "refused@example.com"


class FaultySink:
    """Answers 451 while `busy` is set, 550 for REFUSED, and 250 otherwise."""

    def __init__(self) -> None:
        self.busy = threading.Event()
        self.received: Counter[str] = Counter()
        self.lock = threading.Lock()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.busy.is_set():
            return "451 4.3.0 try again later"
        if address == REFUSED:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received[rcpt] += 1
        return "250 OK"


def test_everything_arrives_after_the_faults_clear(tmp_path: Path):
    sink = FaultySink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    sink.busy.set()
    server = start_server(
        tmp_path,
        TIDINGS_BOOTSTRAP_API_KEY=KEY,
        TIDINGS_SMTP_URL=f"smtp://127.0.0.1:{port}",
        TIDINGS_RETRY_BASE_SECONDS="0.2",
        TIDINGS_RETRY_MAX_SECONDS="1",
        TIDINGS_MAX_ATTEMPTS="30",
    )
    # The 20th recipient of the first call is refused for good.
    addresses = [f"fault{i}@example.com" for i in range(40)]
    addresses[19] = REFUSED
    try:
        with server.client() as client:
            campaign = live_email_campaign(client)
            executions = trigger_in_chunks(client, campaign["id"], addresses, order_id="F")
            time.sleep(1.5)  # 451 for every message meanwhile
            controller.stop()  # then the relay is gone: connections refused
            sink.busy.clear()
            time.sleep(1.5)
            controller = Controller(sink, hostname="127.0.0.1", port=port)
            controller.start()

            wanted = [a for a in addresses if a != REFUSED]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(sink.received[a] for a in wanted):
                time.sleep(0.2)
            assert [a for a in wanted if not sink.received[a]] == []
            messages = client.get(f"/v1/executions/{executions[0]}/messages").json()["items"]
            refused = next(m for m in messages if m["recipient"]["id"] == REFUSED)
            assert refused["state"] == "failed"
            assert refused["reason"] == "smtp_550"
            assert "mailbox unavailable" in refused["last_error"]
            retried = [m for m in messages if m["recipient"]["id"] != REFUSED]
            assert all(m["state"] == "sent" for m in retried)
            assert max(m["attempts"] for m in retried) > 1
    finally:
        stop_server(server)
        controller.stop()
