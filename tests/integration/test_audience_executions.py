"""Audience executions: accepted now or for later, fanned out page by page, cancellable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Tenant, problem_fields
from tests.integration.test_ajo_api import ajo_headers
from tests.integration.test_executions import live_campaign, recipient
from tidings.clock import utcnow
from tidings.errors import Unavailable
from tidings.executions import fanout
from tidings.executions.models import executions, messages

pytestmark = pytest.mark.integration


def profile(tenant: Tenant, namespace: str, value: str, **attributes: Any) -> None:
    response = tenant.client.put(
        f"/v1/profiles/{namespace}/{value}", json={"attributes": attributes}
    )
    assert response.status_code in (200, 201), response.text


def audience(tenant: Tenant, *members: tuple[str, str]) -> str:
    response = tenant.client.post(
        "/v1/audiences",
        json={
            "name": f"members-{utcnow().timestamp()}",
            "members": [{"namespace": ns, "id": value} for ns, value in members],
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["rejected"] == []
    audience_id: str = response.json()["id"]
    return audience_id


MARKETING_CONTENT = {
    "subject": "Sale {{ context.order.id }}",
    "html": '<p>Hi {{ profile.firstName }}</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
}


def marketing_campaign(tenant: Tenant, audience_id: str | None, **extra: Any) -> dict[str, Any]:
    return live_campaign(
        tenant,
        category="marketing",
        content=MARKETING_CONTENT,
        audience={"identity_namespace": "email", "audience_id": audience_id},
        **extra,
    )


def fan_out(
    tenant: Tenant, execution_id: str, at: datetime | None = None, page: int = 1000
) -> None:
    """Runs the fan-out until this execution has no more pages (other tests' executions in
    the shared database may be fanned out along the way)."""
    for _ in range(100):
        fanout.advance(tenant.runtime.db, at or utcnow(), page_size=page, budget=1)
        if execution_row(tenant, execution_id)["status"] not in ("scheduled", "fanning_out"):
            return
    raise AssertionError("the fan-out did not finish")


def execution_row(tenant: Tenant, execution_id: str) -> dict[str, Any]:
    with tenant.runtime.db.read() as conn:
        return dict(
            conn.execute(executions.select().where(executions.c.id == execution_id))
            .mappings()
            .one()
        )


def message_rows(tenant: Tenant, execution_id: str) -> list[dict[str, Any]]:
    with tenant.runtime.db.read() as conn:
        rows = conn.execute(messages.select().where(messages.c.execution_id == execution_id))
        return [dict(row) for row in rows.mappings()]


@pytest.fixture
def members(tenant: Tenant) -> str:
    profile(tenant, "email", "ada@example.com", firstName="Ada")
    profile(tenant, "email", "grace@example.com", firstName="Grace")
    # Known only by phone: queued all the same, and excluded for want of an address.
    profile(tenant, "phone", "+14155550123", firstName="Linus")
    return audience(
        tenant,
        ("email", "ada@example.com"),
        ("email", "grace@example.com"),
        ("phone", "+14155550123"),
    )


def test_an_audience_execution_queues_one_message_per_member(tenant: Tenant, members: str):
    campaign = marketing_campaign(tenant, members)
    response = tenant.client.post(
        "/v1/executions",
        json={"campaign_id": campaign["id"], "context": {"order": {"id": "SALE"}}},
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "scheduled"
    assert accepted["accepted"] == 0
    execution_id = accepted["execution_id"]
    assert tenant.client.get(f"/v1/executions/{execution_id}").json()["status"] == "scheduled"

    fan_out(tenant, execution_id, page=2)

    rows = message_rows(tenant, execution_id)
    assert len(rows) == 3
    assert {row["state"] for row in rows} == {"queued"}
    assert {row["context"]["order"]["id"] for row in rows} == {"SALE"}
    by_recipient = {row["recipient_id"]: row for row in rows}
    assert by_recipient["ada@example.com"]["address"] == "ada@example.com"
    phone_only = [row for row in rows if row["recipient_namespace"] == "profile"]
    assert len(phone_only) == 1 and phone_only[0]["address"] is None
    view = tenant.client.get(f"/v1/executions/{execution_id}").json()
    assert view["kind"] == "audience"
    assert view["audience_id"] == members
    assert view["recipients"] == 3
    assert view["status"] == "running"
    assert view["fired_at"] is not None and view["finished_at"] is not None


def test_the_fan_out_resumes_page_by_page_without_repeating_anyone(tenant: Tenant):
    addresses = [f"member{index}@example.com" for index in range(7)]
    for address in addresses:
        profile(tenant, "email", address)
    audience_id = audience(tenant, *(("email", address) for address in addresses))
    campaign = marketing_campaign(tenant, audience_id)
    execution_id = tenant.client.post(
        "/v1/executions", json={"campaign_id": campaign["id"]}
    ).json()["execution_id"]

    seen_counts = []
    for _ in range(20):
        fanout.advance(tenant.runtime.db, utcnow(), page_size=3, budget=1)
        row = execution_row(tenant, execution_id)
        seen_counts.append(row["recipient_count"])
        if row["status"] == "accepted":
            break
    # Pages of 3, each its own transaction, with the cursor moving alongside.
    assert [count for count in seen_counts if count][:3] == [3, 6, 7]
    rows = message_rows(tenant, execution_id)
    assert sorted(row["recipient_id"] for row in rows) == sorted(addresses)


def test_a_scheduled_execution_waits_and_can_be_cancelled(tenant: Tenant, members: str):
    campaign = marketing_campaign(tenant, members)
    later = utcnow() + timedelta(hours=1)
    body = {"campaign_id": campaign["id"], "execute_at": later.isoformat()}
    execution_id = tenant.client.post("/v1/executions", json=body).json()["execution_id"]

    fanout.advance(tenant.runtime.db, utcnow(), budget=50)
    assert message_rows(tenant, execution_id) == []
    assert execution_row(tenant, execution_id)["status"] == "scheduled"

    cancelled = tenant.client.delete(f"/v1/executions/{execution_id}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    # Cancelling again answers the same; its time coming changes nothing.
    assert tenant.client.delete(f"/v1/executions/{execution_id}").json()["status"] == "cancelled"
    fanout.advance(tenant.runtime.db, later + timedelta(minutes=1), budget=50)
    assert message_rows(tenant, execution_id) == []


def test_a_scheduled_execution_fires_when_its_time_comes(tenant: Tenant, members: str):
    campaign = marketing_campaign(tenant, members)
    later = utcnow() + timedelta(hours=1)
    body = {"campaign_id": campaign["id"], "execute_at": later.isoformat()}
    execution_id = tenant.client.post("/v1/executions", json=body).json()["execution_id"]
    fan_out(tenant, execution_id, at=later + timedelta(seconds=1))
    assert len(message_rows(tenant, execution_id)) == 3
    refused = tenant.client.delete(f"/v1/executions/{execution_id}")
    assert refused.status_code == 409, refused.text


def test_a_campaign_stopped_before_the_execution_fires_fails_it(tenant: Tenant, members: str):
    campaign = marketing_campaign(tenant, members)
    later = utcnow() + timedelta(minutes=5)
    body = {"campaign_id": campaign["id"], "execute_at": later.isoformat()}
    execution_id = tenant.client.post("/v1/executions", json=body).json()["execution_id"]
    assert tenant.client.post(f"/v1/campaigns/{campaign['id']}/stop").status_code == 200
    fan_out(tenant, execution_id, at=later + timedelta(seconds=1))
    view = tenant.client.get(f"/v1/executions/{execution_id}").json()
    assert view["status"] == "failed"
    assert "not live" in view["failure"]
    assert message_rows(tenant, execution_id) == []


def failing_pages(
    monkeypatch: pytest.MonkeyPatch, execution_id: str, error: Exception, from_page: int = 1
) -> None:
    """Makes every page of the execution from the `from_page`-th (1-based) raise `error`."""
    original = fanout._message_rows
    pages = {"seen": 0}

    def message_rows_or_error(
        conn: Any, execution: Any, profile_ids: Any, now: datetime
    ) -> list[dict[str, Any]]:
        if execution["id"] == execution_id:
            pages["seen"] += 1
            if pages["seen"] >= from_page:
                raise error
        return original(conn, execution, profile_ids, now)

    monkeypatch.setattr(fanout, "_message_rows", message_rows_or_error)


def test_a_page_failing_on_its_own_error_fails_its_execution_and_no_other(
    tenant: Tenant, other_tenant: Tenant, members: str, monkeypatch: pytest.MonkeyPatch
):
    campaign = marketing_campaign(tenant, members)
    broken = tenant.client.post("/v1/executions", json={"campaign_id": campaign["id"]}).json()
    profile(other_tenant, "email", "eve@example.com", firstName="Eve")
    other = marketing_campaign(other_tenant, audience(other_tenant, ("email", "eve@example.com")))
    fine = other_tenant.client.post("/v1/executions", json={"campaign_id": other["id"]}).json()
    failing_pages(monkeypatch, broken["execution_id"], RuntimeError("a bug"), from_page=2)

    # Once failed, the broken execution no longer holds up those due after it.
    fan_out(tenant, broken["execution_id"], page=2)
    fan_out(other_tenant, fine["execution_id"], page=2)

    row = execution_row(tenant, broken["execution_id"])
    assert row["status"] == "failed"
    assert row["failure"] == ("queueing the messages failed on an unexpected error (RuntimeError)")
    assert row["finished_at"] is not None
    # The first page was queued in its own transaction and stays; the second rolled back.
    assert row["recipient_count"] == 2
    assert len(message_rows(tenant, broken["execution_id"])) == 2
    assert execution_row(other_tenant, fine["execution_id"])["status"] == "accepted"
    assert len(message_rows(other_tenant, fine["execution_id"])) == 1


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("the database is unavailable; retry later"),
        # Raised in the page's transaction: translated to Unavailable on the way out.
        sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
    ],
    ids=["unavailable", "operational"],
)
def test_a_database_outage_stops_the_pass_and_fails_nothing(
    tenant: Tenant, members: str, monkeypatch: pytest.MonkeyPatch, error: Exception
):
    campaign = marketing_campaign(tenant, members)
    execution_id = tenant.client.post(
        "/v1/executions", json={"campaign_id": campaign["id"]}
    ).json()["execution_id"]
    with monkeypatch.context() as patched:
        failing_pages(patched, execution_id, error)
        with pytest.raises(Unavailable):
            for _ in range(50):
                fanout.advance(tenant.runtime.db, utcnow(), budget=1)
        row = execution_row(tenant, execution_id)
        assert (row["status"], row["failure"]) == ("scheduled", None)
    # Retried once the database is back.
    fan_out(tenant, execution_id)
    assert execution_row(tenant, execution_id)["status"] == "accepted"
    assert len(message_rows(tenant, execution_id)) == 3


def test_a_unitary_execution_for_later_can_be_cancelled_until_it_fires(tenant: Tenant):
    campaign = live_campaign(tenant)
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    scheduled = tenant.client.post(
        "/v1/executions",
        json={
            "campaign_id": campaign["id"],
            "execute_at": later,
            "recipients": [recipient("x@example.com"), recipient("y@example.com")],
        },
    ).json()["execution_id"]
    cancelled = tenant.client.delete(f"/v1/executions/{scheduled}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["counts"] == {"cancelled": 2}
    assert {row["state"] for row in message_rows(tenant, scheduled)} == {"cancelled"}

    now = tenant.client.post(
        "/v1/executions",
        json={"campaign_id": campaign["id"], "recipients": [recipient("z@example.com")]},
    ).json()["execution_id"]
    refused = tenant.client.delete(f"/v1/executions/{now}")
    assert refused.status_code == 409, refused.text
    assert tenant.client.delete("/v1/executions/nope").status_code == 404


@pytest.mark.parametrize(
    ("setup", "field"),
    [
        ("transactional", "recipients"),
        ("no_audience", "audience_id"),
        ("unknown_audience", "audience_id"),
        ("audience_and_recipients", "audience_id"),
        ("after_the_end", "execute_at"),
    ],
)
def test_audience_executions_are_checked_before_the_202(
    tenant: Tenant, members: str, setup: str, field: str
):
    body: dict[str, Any] = {}
    if setup == "transactional":
        campaign = live_campaign(tenant)
    elif setup == "no_audience":
        campaign = marketing_campaign(tenant, None)
    elif setup == "after_the_end":
        end = utcnow() + timedelta(days=1)
        campaign = marketing_campaign(tenant, members, schedule={"end_at": end.isoformat()})
        body["execute_at"] = (end + timedelta(hours=1)).isoformat()
    else:
        campaign = marketing_campaign(tenant, members)
        if setup == "unknown_audience":
            body["audience_id"] = "0190aaaa-0000-7000-8000-000000000000"
        else:
            body["audience_id"] = members
            body["recipients"] = [recipient("ada@example.com")]
    response = tenant.client.post("/v1/executions", json={"campaign_id": campaign["id"], **body})
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)


def test_another_workspaces_audience_is_unknown(tenant: Tenant, other_tenant: Tenant):
    profile(other_tenant, "email", "their@example.com")
    theirs = audience(other_tenant, ("email", "their@example.com"))
    campaign = marketing_campaign(tenant, None)
    response = tenant.client.post(
        "/v1/executions", json={"campaign_id": campaign["id"], "audience_id": theirs}
    )
    assert response.status_code == 422
    assert "audience_id" in problem_fields(response)


def test_ajo_audience_schedule_can_be_read_and_deleted(tenant: Tenant, members: str):
    campaign = marketing_campaign(tenant, None)
    later = (utcnow() + timedelta(hours=3)).replace(microsecond=0)
    response = tenant.client.post(
        "/ajo/im/executions/audience",
        json={
            "requestId": "audience-req-1",
            "campaignId": campaign["id"],
            "audience": {"id": members},
            "context": {"order": {"id": "WEEKLY"}},
            "schedule": {"executeAt": later.isoformat().replace("+00:00", "Z")},
        },
        headers=ajo_headers(tenant),
    )
    assert response.status_code == 202, response.text
    scheduled = response.json()
    assert scheduled["scheduleStatus"] == "Scheduled"
    assert scheduled["audience"] == {"id": members}
    schedule_id = scheduled["scheduleId"]

    read = tenant.client.get(
        f"/ajo/im/executions/schedules/{schedule_id}", headers=ajo_headers(tenant)
    )
    assert read.status_code == 200, read.text
    assert read.json()["scheduleStatus"] == "Scheduled"
    assert read.json()["executionDetails"]["status"] == "InProgress"
    assert read.json()["campaignId"] == campaign["id"]

    deleted = tenant.client.delete(
        f"/ajo/im/executions/schedules/{schedule_id}", headers=ajo_headers(tenant)
    )
    assert deleted.status_code == 200 and deleted.json() == {}
    gone = tenant.client.get(
        f"/ajo/im/executions/schedules/{schedule_id}", headers=ajo_headers(tenant)
    )
    assert gone.status_code == 404
    assert gone.json()["status"] == 404


def test_ajo_audience_execution_now_reports_its_targets(tenant: Tenant, members: str):
    campaign = marketing_campaign(tenant, members)
    response = tenant.client.post(
        "/ajo/im/executions/audience",
        json={"campaignId": campaign["id"], "context": {"order": {"id": "NOW"}}},
        headers=ajo_headers(tenant),
    )
    assert response.status_code == 202, response.text
    execution_id = response.json()["executionId"]
    fan_out(tenant, execution_id)
    status = tenant.client.get(
        f"/ajo/im/executions/audience/{execution_id}", headers=ajo_headers(tenant)
    )
    assert status.status_code == 200, status.text
    assert status.json()["targetedProfileCount"] == 3
    assert status.json()["audienceId"] == members
    assert status.json()["status"] == "InProgress"
    # A unitary execution is not an audience execution, nor a schedule.
    unitary = live_campaign(tenant)
    unitary_id = tenant.client.post(
        "/v1/executions",
        json={"campaign_id": unitary["id"], "recipients": [recipient("q@example.com")]},
    ).json()["execution_id"]
    for path in (f"audience/{unitary_id}", f"schedules/{unitary_id}"):
        assert (
            tenant.client.get(f"/ajo/im/executions/{path}", headers=ajo_headers(tenant)).status_code
            == 404
        )
