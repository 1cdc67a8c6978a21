"""PostgreSQL restarted under load: 503 with Retry-After while it is away, then nothing lost."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import smtp_server
from tests.e2e.test_crash import CountingSink
from tests.e2e.test_delivery import live_email_campaign
from tests.support.postgres import PostgresCluster
from tests.support.soak import Managed, free_port

pytestmark = pytest.mark.e2e
KEY = "outage-bootstrap-key-0123456789abcdef"
PER_CALL = 5
BATCH = 50  # TIDINGS_DELIVERY_BATCH_SIZE: what an outage may leave in flight, to be resent


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    # Its own cluster: the session's serves the other tests and must not go down with this one.
    cluster = PostgresCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


class Caller:
    """Triggers calls of PER_CALL new recipients one after another, each with its own
    request_id, and keeps every answer."""

    def __init__(self, base_url: str, campaign_id: str) -> None:
        self.client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
        )
        self.campaign_id = campaign_id
        self.accepted: set[str] = set()
        self.refused: dict[int, httpx.Response] = {}  # call index -> its 503
        self.other: list[httpx.Response] = []
        self.calls = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="outage-caller")

    def body(self, index: int) -> dict[str, object]:
        return {
            "campaign_id": self.campaign_id,
            "request_id": f"outage-{index}",
            "context": {"order": {"id": str(index), "items": []}},
            "recipients": [
                {"identity": {"namespace": "email", "id": f"outage-{index}-{n}@example.com"}}
                for n in range(PER_CALL)
            ],
        }

    def send(self, index: int) -> httpx.Response:
        response = self.client.post("/v1/executions", json=self.body(index))
        if response.status_code == 202:
            self.accepted.update(f"outage-{index}-{n}@example.com" for n in range(PER_CALL))
        elif response.status_code == 503:
            self.refused[index] = response
        else:
            self.other.append(response)
        return response

    def _run(self) -> None:
        while not self.stop.is_set():
            self.send(self.calls)
            self.calls += 1
            time.sleep(0.05)

    def accepted_since(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.accepted) >= count:
                return True
            time.sleep(0.05)
        return False


def test_postgresql_restart_under_load(tmp_path: Path, own_cluster: PostgresCluster):
    sink = CountingSink()
    with smtp_server(sink) as smtp_port:
        env = {
            "TIDINGS_DATA_DIR": str(tmp_path),
            "TIDINGS_HOST": "127.0.0.1",
            "TIDINGS_DATABASE_URL": own_cluster.create_database("outage"),
            "TIDINGS_BOOTSTRAP_API_KEY": KEY,
            "TIDINGS_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "TIDINGS_DELIVERY_BATCH_SIZE": str(BATCH),
            "TIDINGS_DELIVERY_LEASE_SECONDS": "5",
            "TIDINGS_WORKER_POLL_SECONDS": "0.2",
            "TIDINGS_RETRY_BASE_SECONDS": "0.2",
            "TIDINGS_RETRY_MAX_SECONDS": "1",
            "TIDINGS_LOG_LEVEL": "warning",
        }
        base_env = {**os.environ, **env}
        api = Managed("api", "api", base_env, tmp_path / "api.log", free_port())
        worker = Managed("worker", "worker", base_env, tmp_path / "worker.log", runs_worker=True)
        api.start()
        worker.start()
        base_url = f"http://127.0.0.1:{api.port}"
        caller: Caller | None = None
        try:
            with httpx.Client(
                base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
            ) as client:
                campaign = live_email_campaign(client)
            caller = Caller(base_url, campaign["id"])
            caller.thread.start()
            try:
                assert caller.accepted_since(10 * PER_CALL, timeout=60)
                own_cluster.stop_server()
                # Past the API's 5-second cache of keys: authentication needs the database too.
                deadline = time.monotonic() + 8
                readiness: list[httpx.Response] = []
                while time.monotonic() < deadline:
                    readiness.append(httpx.get(f"{base_url}/readyz", timeout=30))
                    time.sleep(0.5)
                refused_while_down = dict(caller.refused)
                accepted_while_down = set(caller.accepted)
                time.sleep(0.5)
                assert set(caller.accepted) == accepted_while_down, "a 202 with no database"
                own_cluster.start_server()
                assert caller.accepted_since(len(accepted_while_down) + 10 * PER_CALL, 60)
            finally:
                caller.stop.set()
                caller.thread.join(timeout=60)

            assert caller.other == [], [(r.status_code, r.text) for r in caller.other]
            assert refused_while_down, "no call was refused while the database was down"
            for response in refused_while_down.values():
                assert response.headers["content-type"] == "application/problem+json"
                assert int(response.headers["retry-after"]) >= 1
                assert response.json()["status"] == 503
                assert "database" in response.json()["detail"]
            assert all(r.status_code == 503 for r in readiness), [r.text for r in readiness]
            assert readiness[-1].json()["checks"]["database"] == "failing"
            assert httpx.get(f"{base_url}/readyz", timeout=30).status_code == 200

            # What was refused, sent again with its request_id, is accepted now.
            for index in refused_while_down:
                assert caller.send(index).status_code == 202

            expected = caller.accepted
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all(sink.received[a] for a in expected):
                time.sleep(0.2)
            time.sleep(1)
        finally:
            # On every path: a socket left to the garbage collector is an unraisable warning,
            # which fails whichever test happens to be running when it is collected.
            if caller is not None:
                caller.client.close()
            worker_exit = worker.stop()
            api_exit = api.stop()
        missing = sorted(a for a in expected if not sink.received[a])
        assert missing == [], f"{len(missing)} of {len(expected)} accepted messages never arrived"
        assert set(sink.received) == expected  # nothing arrived that was not accepted
        duplicates = sum(count - 1 for count in sink.received.values())
        # Only what a worker had claimed when the database went away can be sent twice.
        assert duplicates <= BATCH
        assert worker_exit == 0, (tmp_path / "worker.log").read_text()[-3000:]
        assert api_exit in (0, -15), (tmp_path / "api.log").read_text()[-3000:]
