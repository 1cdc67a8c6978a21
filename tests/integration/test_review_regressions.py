"""Failure paths found in review: a cancelled request, cancel racing a fan-out page, AJO
input that the native schema refuses."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Tenant
from tests.integration.test_ajo_api import ajo_headers, unitary_body
from tests.integration.test_audience_executions import audience, marketing_campaign, profile
from tests.integration.test_executions import live_campaign
from tidings.clock import utcnow
from tidings.db.group_commit import GroupCommitter
from tidings.executions.models import executions

pytestmark = pytest.mark.integration


def test_the_writer_survives_a_caller_that_stopped_waiting(tenant: Tenant):
    started, release = threading.Event(), threading.Event()

    def apply(conn: sa.Connection, jobs: Any) -> list[Any]:
        started.set()
        release.wait(5)
        return list(jobs)

    committer: GroupCommitter[str, str] = GroupCommitter(tenant.runtime.db, apply, name="t")
    try:
        first = committer.submit("first")
        assert started.wait(5)
        first.cancel()  # what asyncio.wrap_future did when a request was cancelled
        release.set()
        second = committer.submit("second")
        assert second.result(timeout=5) == "second"
    finally:
        release.set()
        committer.close()


def test_cancel_waits_for_a_fan_out_page_and_then_refuses(tenant: Tenant):
    profile(tenant, "email", "reader@example.com")
    audience_id = audience(tenant, ("email", "reader@example.com"))
    campaign = marketing_campaign(tenant, audience_id)
    later = (utcnow().replace(microsecond=0)).isoformat()
    execution_id = tenant.client.post(
        "/v1/executions", json={"campaign_id": campaign["id"], "execute_at": later}
    ).json()["execution_id"]
    db = tenant.runtime.db
    page_open = threading.Event()

    def fan_out_page() -> None:
        # What a fan-out page does: hold the execution row while it queues messages.
        with db.write() as conn:
            conn.execute(
                sa.select(executions.c.id).where(executions.c.id == execution_id).with_for_update()
            )
            conn.execute(
                executions.update()
                .where(executions.c.id == execution_id)
                .values(status="fanning_out")
            )
            page_open.set()
            time.sleep(0.5)

    with ThreadPoolExecutor(1) as pool:
        page = pool.submit(fan_out_page)
        assert page_open.wait(5)
        refused = tenant.client.delete(f"/v1/executions/{execution_id}")
        page.result()
    assert refused.status_code == 409, refused.text
    with db.read() as conn:
        status = conn.execute(
            sa.select(executions.c.status).where(executions.c.id == execution_id)
        ).scalar_one()
    assert status == "fanning_out"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # AJO's namespace is free text; Tidings' identity namespaces are not.
        ({"namespace": "Email Address!"}, "recipients.0.namespace"),
    ],
)
def test_ajo_input_the_native_schema_refuses_is_a_400(tenant: Tenant, body: Any, field: str):
    campaign = live_campaign(tenant)
    request = unitary_body(campaign["id"])
    request["recipients"][0].update(body)
    response = tenant.client.post(
        "/ajo/im/executions/unitary", json=request, headers=ajo_headers(tenant)
    )
    assert response.status_code == 400, response.text
    assert field in response.json()["report"]["additionalContext"]


def test_ajo_deeply_nested_json_is_a_400(tenant: Tenant):
    response = tenant.client.post(
        "/ajo/im/executions/unitary",
        content=b"[" * 100_000,
        headers={**ajo_headers(tenant), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["report"]["additionalContext"]["body"] == "is not valid JSON"
