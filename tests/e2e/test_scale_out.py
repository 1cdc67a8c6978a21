"""Scale-out on PostgreSQL: one API process and three worker processes deliver each message once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_crash import CountingSink
from tests.e2e.test_delivery import live_email_campaign, trigger_in_chunks
from tests.e2e.test_serve import KEY, Server, start_server, stop_server
from tests.support.postgres import PostgresCluster, free_port

pytestmark = pytest.mark.e2e
MESSAGES = 600


def test_three_workers_share_the_queue_without_double_sends(
    tmp_path: Path, postgres_cluster: PostgresCluster
):
    from aiosmtpd.controller import Controller

    sink = CountingSink()
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    database_url = postgres_cluster.create_database(f"scale_{os.getpid()}_{time.monotonic_ns()}")
    env = {
        "TIDINGS_DATABASE_URL": database_url,
        "TIDINGS_BOOTSTRAP_API_KEY": KEY,
        "TIDINGS_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "TIDINGS_DELIVERY_BATCH_SIZE": "25",
        "TIDINGS_WORKER_POLL_SECONDS": "0.2",
    }
    api: Server = start_server(tmp_path, command="api", **env)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        worker_env = {**api.env, **env}
        for index in range(3):
            # The child keeps its own descriptor; the parent's copy closes at once.
            with (tmp_path / f"worker-{index}.log").open("wb") as log:
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "tidings", "worker"],
                        env=worker_env,
                        stdout=log,
                        stderr=log,
                    )
                )
        addresses = [f"scale{i}@example.com" for i in range(MESSAGES)]
        with api.client() as client:
            campaign = live_email_campaign(client)
            trigger_in_chunks(client, campaign["id"], addresses, order_id="S")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and sink.total() < MESSAGES:
            time.sleep(0.2)
        time.sleep(1)
        assert sorted(sink.received) == sorted(addresses)
        assert max(sink.received.values()) == 1
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
        stop_server(api)
        controller.stop()
    assert all(worker.returncode == 0 for worker in workers), [
        (tmp_path / f"worker-{i}.log").read_text() for i in range(3)
    ]
