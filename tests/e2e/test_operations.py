"""Operations of real processes: JSON logs with request ids and no addresses, /metrics of each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_serve import CLEAN_EXITS, KEY, start_server, stop_server
from tests.support.postgres import free_port

pytestmark = pytest.mark.e2e


def test_serve_logs_json_lines_with_request_ids_and_no_addresses(tmp_path: Path):
    server = start_server(tmp_path, TIDINGS_BOOTSTRAP_API_KEY=KEY, TIDINGS_ACCESS_LOG="true")
    try:
        with server.client() as client:
            missing = client.get(
                "/v1/profiles/email/ada.lovelace@example.com",
                headers={"X-Request-Id": "e2e-request-1"},
            )
            made = client.get("/healthz")
            metrics = client.get("/metrics")
    finally:
        output = stop_server(server)
    assert missing.status_code == 404
    assert missing.headers["x-request-id"] == "e2e-request-1"
    assert made.headers["x-request-id"]
    assert metrics.status_code == 200
    assert "tidings_queue_depth" in metrics.text
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert all({"event", "level", "timestamp"} <= set(line) for line in lines)
    requests = {line.get("request_id"): line for line in lines if line["event"] == "request"}
    assert requests["e2e-request-1"]["path"] == "/v1/profiles/email/[email]"
    assert requests["e2e-request-1"]["status"] == 404
    assert requests[made.headers["x-request-id"]]["path"] == "/healthz"
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    assert "ada.lovelace" not in output


def test_a_worker_serves_its_metrics_on_its_own_port(tmp_path: Path):
    env = {
        **os.environ,
        "TIDINGS_DATA_DIR": str(tmp_path),
        "TIDINGS_METRICS_PORT": str(free_port()),
        "TIDINGS_WORKER_POLL_SECONDS": "0.2",
    }
    env.pop("TIDINGS_DATABASE_URL", None)
    subprocess.run(
        [sys.executable, "-m", "tidings", "migrate"], env=env, check=True, capture_output=True
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tidings", "worker"], env=env, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{env['TIDINGS_METRICS_PORT']}/metrics"
    body = ""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not body:
            assert worker.poll() is None, log_path.read_text()
            try:
                body = httpx.get(url, timeout=2).text
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert 'tidings_queue_depth{state="queued"} 0.0' in body
    assert "tidings_delivery_latency_seconds" in body
    # Stopped as soon as it answered, maybe before its loop took over SIGTERM.
    assert worker.returncode in CLEAN_EXITS, log_path.read_text()
