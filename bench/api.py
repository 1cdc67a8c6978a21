"""In-process HTTP throughput of the authoring API on SQLite, each route against GET /healthz."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench import fixtures
from bench.harness import Case, Operation, Plan, Result, measure, result
from tidings.app import create_app
from tidings.bootstrap import prepare
from tidings.config import Settings
from tidings.runtime import Runtime

NAME = "api"
API_KEY = "bench-key-0123456789"
HEALTHZ = "GET /healthz"
CREATE = "POST /v1/campaigns"
REVIEW = "GET /v1/campaigns/{id}/review"
PREVIEW = "POST /v1/campaigns/{id}/preview"
PUT_NEW = "PUT /v1/profiles/email/{addr} (new)"
PUT_EXISTING = "PUT /v1/profiles/email/{addr} (existing)"

PROFILE_BODY: dict[str, Any] = {
    "attributes": fixtures.PROFILE,
    "consent": {"email": "in"},
    "timezone": "Europe/London",
    "locale": "en-GB",
}


def _expect(response: Any, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise AssertionError(
            f"{response.request.method} {response.request.url.path}: expected {status}, "
            f"got {response.status_code}: {response.text[:500]}"
        )
    body: dict[str, Any] = response.json() if response.content else {}
    return body


def _campaign_body(configuration_id: str, number: int) -> dict[str, Any]:
    return {
        "name": f"Order shipped #{number}",
        "description": "Sent when an order leaves the warehouse",
        "tags": ["orders", "lifecycle"],
        "category": "marketing",
        "channel": "email",
        "channel_configuration_id": configuration_id,
        "content": fixtures.CONTENT,
        "audience": {"identity_namespace": "email"},
        "schedule": {"rate_per_second": 200},
    }


class Driver:
    """Sends requests to the app in process, one at a time, on an event loop of its own."""

    def __init__(self, runner: asyncio.Runner, client: httpx.AsyncClient) -> None:
        self.runner = runner
        self.client = client

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.runner.run(self.client.request(method, path, json=body))

    def repeat(self, request: Callable[[], Awaitable[None]]) -> Operation:
        async def many(count: int) -> None:
            for _ in range(count):
                await request()

        def operation(count: int) -> None:
            self.runner.run(many(count))

        return operation


def _cases(driver: Driver) -> list[Case]:
    """Creates what the routes need, checks each answers as expected once, returns the cases."""
    client = driver.client
    configuration = _expect(
        driver.call(
            "POST",
            "/v1/channel-configurations",
            {
                "name": "Newsletter",
                "channel": "email",
                "category": "marketing",
                "email": {"from_address": "news@example.com", "from_name": "Example Store"},
            },
        ),
        201,
    )
    configuration_id = configuration["id"]
    # A stored profile with the attributes the content reads, so review knows those paths.
    _expect(driver.call("PUT", "/v1/profiles/email/ada@example.com", PROFILE_BODY), 201)
    body = _campaign_body(configuration_id, 0)
    campaign_id = _expect(driver.call("POST", "/v1/campaigns", body), 201)["id"]
    review = _expect(driver.call("GET", f"/v1/campaigns/{campaign_id}/review"), 200)
    if not review["ready"]:
        raise AssertionError(f"the benchmark campaign does not pass review: {review}")
    preview_body = {"profile": fixtures.PROFILE, "context": fixtures.CONTEXT}
    preview_path = f"/v1/campaigns/{campaign_id}/preview"
    preview = _expect(driver.call("POST", preview_path, preview_body), 200)
    if "Analytical Engine Mug" not in preview["content"]["html"]:
        raise AssertionError("the preview did not render the order items")

    numbers = itertools.count(1)
    addresses = itertools.count(1)

    async def healthz() -> None:
        _expect(await client.get("/healthz"), 200)

    async def create() -> None:
        body = _campaign_body(configuration_id, next(numbers))
        _expect(await client.post("/v1/campaigns", json=body), 201)

    async def review_route() -> None:
        _expect(await client.get(f"/v1/campaigns/{campaign_id}/review"), 200)

    async def preview_route() -> None:
        _expect(await client.post(preview_path, json=preview_body), 200)

    async def put_new() -> None:
        address = f"reader{next(addresses)}@example.com"
        _expect(await client.put(f"/v1/profiles/email/{address}", json=PROFILE_BODY), 201)

    async def put_existing() -> None:
        _expect(await client.put("/v1/profiles/email/ada@example.com", json=PROFILE_BODY), 200)

    return [
        Case(HEALTHZ, driver.repeat(healthz)),
        Case(CREATE, driver.repeat(create)),
        Case(REVIEW, driver.repeat(review_route)),
        Case(PREVIEW, driver.repeat(preview_route)),
        Case(PUT_NEW, driver.repeat(put_new)),
        Case(PUT_EXISTING, driver.repeat(put_existing)),
    ]


NOTES = {
    HEALTHZ: "reference: no auth, no database; the in-process client's own cost is in every figure",
    CREATE: "full email campaign with the 3.7 KB content; one write transaction",
    REVIEW: "content check with the runtime's shared, warm compile cache",
    PREVIEW: "renders the 3.7 KB email for an inline profile and order context",
    PUT_NEW: "a new address each time: insert profile, identity, attribute paths",
    PUT_EXISTING: "the same address each time: update path",
}


def run(plan: Plan) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as directory:
        settings = Settings(data_dir=Path(directory), database_url="", bootstrap_api_key=API_KEY)
        runtime = Runtime.from_settings(settings)
        try:
            prepare(runtime, run_migrations=True)
            # The app's lifespan only starts the delivery worker, which is not wanted here.
            transport = httpx.ASGITransport(app=create_app(runtime))
            headers = {"Authorization": f"Bearer {API_KEY}"}
            with asyncio.Runner() as runner:
                client = httpx.AsyncClient(
                    transport=transport, base_url="http://tidings.test", headers=headers
                )
                try:
                    timings = measure(_cases(Driver(runner, client)), plan)
                finally:
                    runner.run(client.aclose())
        finally:
            runtime.close()
    reference = result(
        HEALTHZ,
        timings.throughput(HEALTHZ),
        "req/s",
        timings.operations_per_round[HEALTHZ],
        note=NOTES[HEALTHZ],
    )
    results = [reference]
    for name in (CREATE, REVIEW, PREVIEW, PUT_NEW, PUT_EXISTING):
        results.append(
            result(
                name,
                timings.throughput(name),
                "req/s",
                timings.operations_per_round[name],
                reference=reference,
                note=NOTES[name],
            )
        )
    return results
