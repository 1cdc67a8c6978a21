"""A template that blows up on one recipient's data kills its worker under a memory limit; after
a few restarts that message fails as worker_crashed and the other recipients are sent."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import smtp_server
from tests.e2e.test_crash import CountingSink
from tests.e2e.test_serve import KEY, Server, start_server, stop_server

pytestmark = pytest.mark.e2e

# The worker's address space: room for Tidings, not for the bomb's gigabytes of text.
WORKER_MEMORY_KB = 1024 * 1024
BOMB = (
    '{% set ns = namespace(s="x") %}{% for i in range(context.n) %}'
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"
)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                "bash",
                "-c",
                f'ulimit -v {WORKER_MEMORY_KB} && exec "$0" -m tidings worker',
                sys.executable,
            ],
            env={**env, "MALLOC_ARENA_MAX": "2"},
            stdout=out,
            stderr=out,
        )


def test_a_data_dependent_bomb_fails_as_worker_crashed_after_restarts(tmp_path: Path):
    sink = CountingSink()
    with smtp_server(sink) as smtp_port:
        env = {
            "TIDINGS_BOOTSTRAP_API_KEY": KEY,
            "TIDINGS_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "TIDINGS_DELIVERY_LEASE_SECONDS": "1",
            "TIDINGS_DELIVERY_MAX_LEASE_EXPIRIES": "2",
            "TIDINGS_WORKER_POLL_SECONDS": "0.1",
            # minijinja 3.1 charges fuel by the size of the text built, which ends this bomb
            # in a rendering error; fuel this generous stands for a template that escapes it.
            "TIDINGS_TEMPLATE_FUEL": str(10**15),
        }
        api: Server = start_server(tmp_path, command="api", **env)
        log = tmp_path / "worker.log"
        worker = start_worker({**api.env, **env}, log)
        restarts = 0
        try:
            with api.client() as client:
                execution = trigger_bomb(client)
                deadline = time.monotonic() + 90
                states: dict[str, Any] = {}
                while time.monotonic() < deadline:
                    # A supervisor's part: start the worker again when it dies.
                    if worker.poll() is not None:
                        restarts += 1
                        worker = start_worker({**api.env, **env}, log)
                    states = message_states(client, execution)
                    if states.get("poison@example.com", {}).get("state") == "failed":
                        break
                    time.sleep(0.2)
                poison = states["poison@example.com"]
                assert (poison["state"], poison["reason"]) == ("failed", "worker_crashed")
                assert restarts >= 3, log.read_text()[-2000:]
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and sink.total() < 2:
                    time.sleep(0.2)
                assert sorted(sink.received) == ["a@example.com", "b@example.com"]
                report = client.get(f"/v1/executions/{execution}/report").json()
                assert report["failed_by_reason"] == {"worker_crashed": 1}
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            stop_server(api)


def trigger_bomb(client: httpx.Client) -> str:
    configuration = client.post(
        "/v1/channel-configurations",
        json={
            "name": "Shop",
            "channel": "email",
            "category": "transactional",
            "email": {"from_address": "shop@example.com"},
        },
    ).json()
    campaign = client.post(
        "/v1/campaigns",
        json={
            "name": "Bomb on data",
            "category": "transactional",
            "channel": "email",
            "channel_configuration_id": configuration["id"],
            "content": {"subject": "Hi", "html": f"<p>{BOMB}</p>"},
            "audience": {"identity_namespace": "email", "create_new_profiles": True},
        },
    )
    assert campaign.status_code == 201, campaign.text
    activated = client.post(f"/v1/campaigns/{campaign.json()['id']}/activate")
    assert activated.status_code == 200, activated.text
    response = client.post(
        "/v1/executions",
        json={
            "campaign_id": campaign.json()["id"],
            "context": {"n": 3},
            "recipients": [
                {"identity": {"namespace": "email", "id": "a@example.com"}},
                {
                    "identity": {"namespace": "email", "id": "poison@example.com"},
                    "context": {"n": 40},
                },
                {"identity": {"namespace": "email", "id": "b@example.com"}},
            ],
        },
    )
    assert response.status_code == 202, response.text
    return str(response.json()["execution_id"])


def message_states(client: httpx.Client, execution_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/executions/{execution_id}/messages")
    assert response.status_code == 200, response.text
    return {item["recipient"]["id"]: item for item in response.json()["items"]}
