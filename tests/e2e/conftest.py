"""Fixtures of the end-to-end tests: a real SMTP server that keeps what it receives, and a
`tidings serve` process sending to it."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import Browser, sync_playwright

from tests.e2e.test_serve import KEY, Server, start_server, stop_server
from tests.support.postgres import free_port


class Mailbox:
    """An aiosmtpd handler that keeps every message it is given, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.messages.append(parsed)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 20) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.messages)} of {count} messages arrived")


@contextmanager
def smtp_server(handler: Any) -> Iterator[int]:
    """An aiosmtpd server with `handler` on a free loopback port; yields the port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    handler = Mailbox()
    with smtp_server(handler) as port:
        yield handler, port


@pytest.fixture
def mailing_server(tmp_path: Path, mailbox: tuple[Mailbox, int]) -> Iterator[Server]:
    _, port = mailbox
    server = start_server(
        tmp_path,
        TIDINGS_BOOTSTRAP_API_KEY=KEY,
        TIDINGS_SMTP_URL=f"smtp://127.0.0.1:{port}",
    )
    try:
        yield server
    finally:
        if server.process.poll() is None:
            stop_server(server)


# Debian's Chromium, headless, and kept off the network (its background requests would be
# refused here, many at a time).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Chromium driven by Playwright (never a browser Playwright downloads)."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
