"""`tidings serve` as a real process: first start, a campaign over HTTP, the worker, the CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import free_port

pytestmark = pytest.mark.e2e
KEY = "e2e-bootstrap-key-0123456789abcdef"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    env: dict[str, str]
    log_path: Path

    def client(self, key: str = KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tidings", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )


def start_server(data_dir: Path, command: str = "serve", **extra_env: str) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "TIDINGS_DATA_DIR": str(data_dir),
        "TIDINGS_PORT": str(port),
        "TIDINGS_WORKER_POLL_SECONDS": "0.2",
        "TIDINGS_LOG_LEVEL": "info",
        **extra_env,
    }
    if "TIDINGS_DATABASE_URL" not in extra_env:
        env.pop("TIDINGS_DATABASE_URL", None)
    # A file, not a pipe: a full pipe buffer would block the server.
    log_path = data_dir / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tidings", command], env=env, stdout=log, stderr=log
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"tidings serve exited: {log_path.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return Server(process, base_url, env, log_path)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("tidings serve did not answer within 30 s")


# uvicorn re-raises SIGTERM after its graceful shutdown, so the exit is "killed by SIGTERM".
CLEAN_EXITS = (0, -signal.SIGTERM)


def stop_server(server: Server) -> str:
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)
    return server.log_path.read_text()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path, TIDINGS_BOOTSTRAP_API_KEY=KEY)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            stop_server(running)


def test_first_start_prints_an_admin_key_that_works(tmp_path: Path):
    running = start_server(tmp_path)
    try:
        with httpx.Client(base_url=running.base_url) as anonymous:
            assert anonymous.get("/v1/campaigns").status_code == 401
            assert "Tidings" in anonymous.get("/").text
            # `tidings serve` runs its worker: every readiness check passes.
            ready = anonymous.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {
                "database": "ok",
                "migrations": "ok",
                "worker": "ok",
            }
    finally:
        output = stop_server(running)
    assert running.process.returncode in CLEAN_EXITS, output
    match = re.search(r"(tdg_[A-Za-z0-9_\-]{20,})", output)
    assert match, output
    again = start_server(tmp_path)
    try:
        with again.client(match.group(1)) as client:
            assert client.get("/v1/workspace").json()["name"] == "default"
    finally:
        stop_server(again)


def test_a_campaign_from_authoring_to_scheduled_start_over_http(server: Server):
    with server.client() as client:
        configuration = client.post(
            "/v1/channel-configurations",
            json={
                "name": "News",
                "channel": "email",
                "category": "marketing",
                "email": {"from_address": "news@example.com"},
            },
        ).json()
        start_at = datetime.now(UTC) + timedelta(seconds=2)
        campaign = client.post(
            "/v1/campaigns",
            json={
                "name": "Launch",
                "category": "marketing",
                "channel": "email",
                "channel_configuration_id": configuration["id"],
                "content": {
                    "subject": "Hello {{ profile.firstName }}",
                    "html": "<p>{{ context.offer }}</p><a href='{{ unsubscribe_url }}'>stop</a>",
                },
                "schedule": {"start_at": start_at.isoformat()},
            },
        ).json()
        assert client.get(f"/v1/campaigns/{campaign['id']}/review").json()["ready"] is True
        activated = client.post(f"/v1/campaigns/{campaign['id']}/activate").json()
        assert activated["status"] == "scheduled"

        # The in-process worker moves it to live once start_at has passed.
        deadline = time.monotonic() + 15
        status = "scheduled"
        while status == "scheduled" and time.monotonic() < deadline:
            time.sleep(0.2)
            status = client.get(f"/v1/campaigns/{campaign['id']}").json()["status"]
        assert status == "live"

        preview = client.post(
            f"/v1/campaigns/{campaign['id']}/preview",
            json={"profile": {"firstName": "Lin"}, "context": {"offer": "20% off"}},
        ).json()
        assert preview["content"]["subject"] == "Hello Lin"
        assert "<p>20% off</p>" in preview["content"]["html"]


def test_cli_keys_work_against_the_running_server(server: Server):
    created = server.cli("keys", "create", "--name", "reporting", "--scope", "campaigns:read")
    secret = created.stdout.strip().splitlines()[-1]
    with server.client(secret) as client:
        assert client.get("/v1/campaigns").status_code == 200
        assert client.post("/v1/campaigns", json={}).status_code == 403
    listed = server.cli("keys", "list")
    assert "reporting" in listed.stdout
    key_id = created.stdout.split()[1]
    server.cli("keys", "revoke", key_id)
    time.sleep(5.5)  # the server caches authentications for up to 5 s
    with server.client(secret) as client:
        assert client.get("/v1/campaigns").status_code == 401


def test_sigterm_stops_gracefully(server: Server):
    output = stop_server(server)
    assert server.process.returncode in CLEAN_EXITS, output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output
