"""Reports over a real database: every number after a mix of outcomes, the buckets adding up
to what was targeted, the counters agreeing with the messages themselves; CSV and search."""

from __future__ import annotations

import csv
import io
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import BACKENDS, Tenant, _new_tenant
from tests.integration.test_audience_executions import audience, fan_out, marketing_campaign
from tests.integration.test_business_rules import rule_set
from tests.integration.test_delivery import (
    RecordingAdapter,
    deliverer_for,
    drain,
    permanent,
    states,
    transient,
)
from tests.integration.test_delivery_rules import marketing, set_consent, suppress
from tests.integration.test_executions import recipient
from tests.integration.test_migrations import _alembic, _fresh_runtime
from tidings.delivery import queue
from tidings.events import EventKind, MessageEvent
from tidings.executions.models import messages
from tidings.feedback import service as feedback
from tidings.feedback.events import FeedbackEvent, FeedbackKind, FeedbackSource
from tidings.reports import ledger
from tidings.reports import service as reports
from tidings.reports.models import report_counters
from tidings.tracking import service as tracking
from tidings.unsubscribe import service as unsubscribe
from tidings.unsubscribe.tokens import UnsubscribeToken
from tidings.vocabulary import Channel
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration

IN_CONSENT = ("a", "b", "c", "d", "e", "listed", "capped", "later", "never")


def address(name: str) -> str:
    return f"{name}@example.com"


def trigger(tenant: Tenant, campaign: dict[str, Any], *names: str, **extra: Any) -> str:
    response = tenant.client.post(
        "/v1/executions",
        json={
            "campaign_id": campaign["id"],
            "recipients": [recipient(address(name)) for name in names],
            **extra,
        },
    )
    assert response.status_code == 202, response.text
    return str(response.json()["execution_id"])


def feedback_on(tenant: Tenant, message_id: str, kind: FeedbackKind) -> None:
    event = FeedbackEvent(
        kind=kind,
        source=FeedbackSource.SES,
        event_id=f"{kind.value}-{message_id}",
        message_ref=message_id,
    )
    applied = feedback.apply_events(tenant.runtime.db, [event], soft_bounce_threshold=3)
    assert applied[0].outcome == feedback.Outcome.APPLIED


@dataclass
class Mix:
    campaign: dict[str, Any]
    first: str  # the execution with most of the outcomes
    ids: dict[str, str]  # recipient name -> message id of the first execution


@pytest.fixture
def mix(tenant: Tenant) -> Mix:
    """A marketing campaign whose messages end every way they can (see the test below)."""
    rule_set(
        tenant, default=True, frequency_caps=[{"channels": ["email"], "limit": 1, "period": "day"}]
    )
    for name in IN_CONSENT:
        set_consent(tenant, address(name), "in")
    set_consent(tenant, address("out"), "out")
    suppress(tenant, address("listed"))
    campaign = marketing(tenant)
    adapter = RecordingAdapter()
    adapter.fail(address("d"), permanent())
    adapter.fail(address("e"), transient())
    deliverer = deliverer_for(tenant.runtime, adapter)
    first = trigger(tenant, campaign, "a", "b", "c", "d", "e", "out", "listed", "capped")
    drain(deliverer)
    trigger(tenant, campaign, "capped")  # over the cap of one a day
    drain(deliverer)
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    trigger(tenant, campaign, "later", execute_at=later)  # still pending
    cancelled = trigger(tenant, campaign, "never", execute_at=later)
    assert tenant.client.delete(f"/v1/executions/{cancelled}").status_code == 200
    ids = {row["recipient_id"].split("@")[0]: row["id"] for row in states(tenant, first).values()}
    feedback_on(tenant, ids["a"], FeedbackKind.DELIVERED)
    feedback_on(tenant, ids["b"], FeedbackKind.HARD_BOUNCE)
    feedback_on(tenant, ids["c"], FeedbackKind.SOFT_BOUNCE)
    feedback_on(tenant, ids["capped"], FeedbackKind.DELIVERED)
    feedback_on(tenant, ids["capped"], FeedbackKind.HARD_BOUNCE)  # a late bounce
    feedback_on(tenant, ids["a"], FeedbackKind.COMPLAINT)
    db, workspace = tenant.runtime.db, tenant.workspace_id
    for _ in range(2):
        assert tracking.record(db, tracking.EventKind.OPEN, workspace, ids["a"])
    for link in (0, 0, 1):
        url = f"https://shop.example/{link}"
        assert tracking.record(
            db, tracking.EventKind.CLICK, workspace, ids["a"], link_index=link, url=url
        )
    token = UnsubscribeToken(workspace, ids["e"], Channel.EMAIL)
    for _ in range(2):  # the second changes nothing and is not counted
        unsubscribe.unsubscribe(db, token, unsubscribe.SOURCE_LINK)
    return Mix(campaign, first, ids)


def ground_truth(tenant: Tenant, **where: str) -> Counter[tuple[str, str | None]]:
    """(state, reason) of the messages, counted from their rows."""
    with tenant.runtime.db.read() as conn:
        query = sa.select(messages.c.state, messages.c.reason, sa.func.count()).where(
            messages.c.workspace_id == tenant.workspace_id,
            messages.c.is_proof.is_(sa.false()),
            *(messages.c[name] == value for name, value in where.items()),
        )
        rows = conn.execute(query.group_by(messages.c.state, messages.c.reason)).all()
    return Counter({(state, reason): count for state, reason, count in rows})


def buckets_from(truth: Counter[tuple[str, str | None]]) -> dict[str, int]:
    by_state: Counter[str] = Counter()
    for (state, _), count in truth.items():
        by_state[state] += count
    return {
        "pending": by_state["queued"] + by_state["sending"] + by_state["deferred"],
        "excluded": by_state["excluded"],
        "failed": by_state["failed"],
        "cancelled": by_state["cancelled"],
        "sent": by_state["sent"],
        "delivered": by_state["delivered"],
        "bounced": by_state["bounced"],
    }


def reasons_from(truth: Counter[tuple[str, str | None]], state: str) -> dict[str, int]:
    return {reason or "": count for (s, reason), count in truth.items() if s == state}


def test_a_mix_of_outcomes_is_reported_number_by_number_and_adds_up(tenant: Tenant, mix: Mix):
    response = tenant.client_with(Scope.REPORTS_READ).get(
        f"/v1/campaigns/{mix.campaign['id']}/report"
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["targeted"] == 11
    assert report["buckets"] == {
        "pending": 1,
        "excluded": 3,
        "failed": 1,
        "cancelled": 1,
        "sent": 2,  # c (soft bounced, still sent) and e (retried, then sent)
        "delivered": 1,  # a
        "bounced": 2,  # b, and capped's late bounce
        "total": 11,
    }
    buckets = {k: v for k, v in report["buckets"].items() if k != "total"}
    assert sum(buckets.values()) == report["buckets"]["total"] == report["targeted"]
    assert report["excluded_by_reason"] == {
        "frequency_capped": 1,
        "no_consent": 1,
        "suppressed_address": 1,
    }
    assert report["failed_by_reason"] == {"smtp_550": 1}
    assert report["cancelled_by_reason"] == {"execution_cancelled": 1}
    assert report["ever_sent"] == 5
    assert report["bounced"] == {"hard": 2, "soft": 1, "late": 1}
    assert report["opened"] == {"unique": 1, "total": 2}
    assert report["clicked"] == {
        "unique": 1,
        "total": 3,
        "links": [
            {"index": 0, "url": "https://shop.example/0", "unique": 1, "total": 2},
            {"index": 1, "url": "https://shop.example/1", "unique": 1, "total": 1},
        ],
    }
    assert (report["unsubscribed"], report["complained"], report["retried"]) == (1, 1, 1)
    # The counters agree with the messages' own rows.
    truth = ground_truth(tenant, campaign_id=mix.campaign["id"])
    assert buckets == buckets_from(truth)
    assert report["excluded_by_reason"] == reasons_from(truth, "excluded")
    assert report["failed_by_reason"] == reasons_from(truth, "failed")
    # One version, the same numbers; the series holds every event, per minute.
    (version,) = report["versions"]
    assert version["version_id"] == mix.campaign["version"]["id"]
    assert {k: v for k, v in version.items() if k != "version_id"} == {
        k: v for k, v in report.items() if k not in ("campaign_id", "versions", "series")
    }
    series = Counter[str]()
    for point in report["series"]:
        assert point["period"] == "minute"
        series.update(point["counts"])
    assert (series["targeted"], series["sent"], series["opened"], series["clicked"]) == (
        11,
        5,
        2,
        3,
    )


def test_the_unitary_execution_report_reads_its_messages(tenant: Tenant, mix: Mix):
    response = tenant.client.get(f"/v1/executions/{mix.first}/report")
    assert response.status_code == 200, response.text
    report = response.json()
    truth = ground_truth(tenant, execution_id=mix.first)
    assert report["kind"] == "unitary"
    assert report["targeted"] == sum(truth.values()) == 8
    assert {k: v for k, v in report["buckets"].items() if k != "total"} == buckets_from(truth)
    assert report["buckets"]["total"] == 8
    assert report["excluded_by_reason"] == {"no_consent": 1, "suppressed_address": 1}
    assert report["bounced"] == {"hard": 2, "soft": 1, "late": 1}
    assert (report["retried"], report["complained"], report["unsubscribed"]) == (1, 1, 1)
    assert report["opened"] == {"unique": 1, "total": 2}
    assert [
        (link["index"], link["unique"], link["total"]) for link in report["clicked"]["links"]
    ] == [
        (0, 1, 2),
        (1, 1, 1),
    ]


def test_an_audience_execution_has_counters_of_its_own(tenant: Tenant):
    for name in ("p", "q", "r"):
        set_consent(tenant, address(name), "in")
    audience_id = audience(tenant, *(("email", address(name)) for name in "pqr"))
    campaign = marketing_campaign(tenant, audience_id)
    execution = tenant.client.post("/v1/executions", json={"campaign_id": campaign["id"]})
    assert execution.status_code == 202, execution.text
    execution_id = execution.json()["execution_id"]
    fan_out(tenant, execution_id)
    adapter = RecordingAdapter()
    adapter.fail(address("r"), permanent("smtp_551"))
    drain(deliverer_for(tenant.runtime, adapter))
    report = tenant.client.get(f"/v1/executions/{execution_id}/report").json()
    assert report["kind"] == "audience"
    truth = ground_truth(tenant, execution_id=execution_id)
    assert {k: v for k, v in report["buckets"].items() if k != "total"} == buckets_from(truth)
    assert (report["targeted"], report["buckets"]["sent"], report["failed_by_reason"]) == (
        3,
        2,
        {"smtp_551": 1},
    )
    with tenant.runtime.db.read() as conn:
        own = conn.execute(
            sa.select(sa.func.count()).where(report_counters.c.execution_id == execution_id)
        ).scalar_one()
    assert own > 0


def test_the_csv_export_holds_the_same_numbers(tenant: Tenant, mix: Mix):
    report = tenant.client.get(f"/v1/campaigns/{mix.campaign['id']}/report").json()
    for url, headers in (
        (f"/v1/campaigns/{mix.campaign['id']}/report.csv", {}),
        (f"/v1/campaigns/{mix.campaign['id']}/report", {"Accept": "text/csv"}),
    ):
        response = tenant.client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert tuple(rows[0]) == reports.CSV_COLUMNS
        totals = {
            (row["metric"], row["detail"]): int(row["count"])
            for row in rows
            if row["period"] == "total" and row["version_id"] == ""
        }
        assert totals[("targeted", "")] == report["targeted"]
        assert totals[("bucket_total", "")] == report["buckets"]["total"]
        assert totals[("bucket_pending", "")] == report["buckets"]["pending"]
        assert totals[("excluded", "no_consent")] == report["excluded_by_reason"]["no_consent"]
        assert totals[("link_clicked_total", "0")] == 2
        assert totals[("bounced", "late")] == 1
        series = sum(
            int(row["count"])
            for row in rows
            if row["period"] == "minute" and row["metric"] == "targeted"
        )
        assert series == report["targeted"]
    execution_csv = tenant.client.get(f"/v1/executions/{mix.first}/report.csv")
    assert execution_csv.status_code == 200
    assert "targeted" in {row["metric"] for row in csv.DictReader(io.StringIO(execution_csv.text))}


def test_messages_are_found_by_recipient_request_execution_and_state(tenant: Tenant, mix: Mix):
    client = tenant.client_with(Scope.REPORTS_READ)
    found = client.get("/v1/messages", params={"recipient": address("capped")}).json()
    assert len(found["items"]) == 2
    assert {item["state"] for item in found["items"]} == {"bounced", "excluded"}
    only_excluded = client.get(
        "/v1/messages", params={"recipient": address("capped"), "state": "excluded"}
    ).json()
    assert [item["reason"] for item in only_excluded["items"]] == ["frequency_capped"]
    by_execution = client.get(
        "/v1/messages", params={"execution_id": mix.first, "state": "sent", "limit": 1}
    ).json()
    assert len(by_execution["items"]) == 1 and by_execution["next_cursor"]
    rest = client.get(
        "/v1/messages",
        params={"execution_id": mix.first, "state": "sent", "cursor": by_execution["next_cursor"]},
    ).json()
    assert {i["recipient"]["id"] for i in by_execution["items"] + rest["items"]} == {
        address("c"),
        address("e"),
    }
    assert rest["next_cursor"] is None
    keyed = tenant.client.post(
        "/v1/executions",
        json={
            "campaign_id": mix.campaign["id"],
            "recipients": [recipient(address("a"))],
            "request_id": "order-77",
        },
    ).json()
    by_request = client.get("/v1/messages", params={"request_id": "order-77"}).json()
    assert [item["execution_id"] for item in by_request["items"]] == [keyed["execution_id"]]
    other_campaign = client.get(
        "/v1/messages", params={"request_id": "order-77", "campaign_id": "nope"}
    ).json()
    assert other_campaign["items"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "recipient"),
        ({"recipient": "x", "state": "lost"}, "state"),
        ({"recipient": "x", "limit": 0}, "limit"),
    ],
)
def test_bad_search_filters_name_the_field(tenant: Tenant, params: dict[str, Any], field: str):
    response = tenant.client.get("/v1/messages", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in response.text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2026-11-23T17:00:00"}, "since"),
        ({"since": "2026-11-23T17:00:00Z", "until": "2026-11-23T16:00:00Z"}, "until"),
        ({"until": "yesterday"}, "until"),
    ],
)
def test_bad_report_ranges_name_the_field(tenant: Tenant, params: dict[str, Any], field: str):
    campaign = marketing(tenant)
    response = tenant.client.get(f"/v1/campaigns/{campaign['id']}/report", params=params)
    assert response.status_code == 422, response.text
    assert field in response.text


def test_the_series_can_be_bounded_in_time(tenant: Tenant, mix: Mix):
    url = f"/v1/campaigns/{mix.campaign['id']}/report"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert tenant.client.get(url, params={"since": future}).json()["series"] == []
    bounded = tenant.client.get(url, params={"since": past}).json()
    assert sum(point["counts"].get("targeted", 0) for point in bounded["series"]) == 11
    assert bounded["targeted"] == 11


def test_reports_need_their_scope_and_a_known_id(tenant: Tenant, other_tenant: Tenant):
    campaign = marketing(tenant)
    reader = tenant.client_with(Scope.CAMPAIGNS_READ)
    assert reader.get(f"/v1/campaigns/{campaign['id']}/report").status_code == 403
    assert reader.get("/v1/messages", params={"recipient": "x"}).status_code == 403
    for url in (
        "/v1/campaigns/nope/report",
        "/v1/executions/nope/report",
        f"/v1/campaigns/{campaign['id']}/report.csv".replace(campaign["id"], "nope"),
    ):
        response = tenant.client.get(url)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
    # Another workspace's campaign is not found either.
    assert other_tenant.client.get(f"/v1/campaigns/{campaign['id']}/report").status_code == 404


def test_minute_counters_fold_into_days_and_the_report_stays_the_same(tenant: Tenant, mix: Mix):
    url = f"/v1/campaigns/{mix.campaign['id']}/report"
    before = tenant.client.get(url).json()
    folded = reports.compact(tenant.runtime.db, datetime.now(UTC) + timedelta(days=3))
    assert folded > 0
    after = tenant.client.get(url).json()
    assert {k: v for k, v in after.items() if k != "series"} == {
        k: v for k, v in before.items() if k != "series"
    }
    assert {point["period"] for point in after["series"]} == {"day"}
    with tenant.runtime.db.read() as conn:
        periods = conn.execute(
            sa.select(report_counters.c.period)
            .where(report_counters.c.campaign_id == mix.campaign["id"])
            .distinct()
        ).scalars()
        assert set(periods) == {"d"}


def _event(
    workspace: str, campaign: str, version: str, execution: str, kind: EventKind, **extra: Any
) -> MessageEvent:
    return MessageEvent(
        kind=kind,
        message_id="m",
        workspace_id=workspace,
        campaign_id=campaign,
        version_id=version,
        execution_id=execution,
        channel="email",
        occurred_at=datetime.now(UTC),
        **extra,
    )


def test_concurrent_counting_neither_deadlocks_nor_loses_counts(tenant: Tenant):
    # On SQLite the writers take turns; on PostgreSQL they interleave on the same rows.
    db = tenant.runtime.db
    campaign = marketing(tenant)
    version = campaign["version"]["id"]
    reasons = [f"reason_{n}" for n in range(8)]
    threads_count, rounds = 4, 25
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for round_ in range(rounds):
                # Each batch moves the same keys in a different order: the ledger sorts them.
                order = reasons[seed:] + reasons[:seed] if round_ % 2 else reasons[::-1]
                events = [
                    _event(
                        tenant.workspace_id,
                        campaign["id"],
                        version,
                        f"x-{seed}",
                        EventKind.EXCLUDED,
                        reason=reason,
                        audience=False,
                    )
                    for reason in order
                ]
                with db.write() as conn:
                    ledger.count_events(conn, events)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(seed,)) for seed in range(threads_count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert errors == []
    report = reports.campaign_report(db, tenant.workspace_id, campaign["id"])
    assert report.excluded_by_reason == {r: threads_count * rounds for r in reasons}


def test_a_record_announces_only_what_it_wrote(tenant: Tenant):
    campaign = marketing(tenant)
    set_consent(tenant, address("lease"), "in")
    execution = trigger(tenant, campaign, "lease")
    db = tenant.runtime.db
    claimed = queue.claim(db, datetime.now(UTC), 10, timedelta(minutes=5))
    (message,) = [m for m in claimed if m.campaign_id == campaign["id"]]
    # Its lease expires and it goes back to the queue before this worker records it.
    with db.write() as conn:
        queue.recover_expired_leases(conn, datetime.now(UTC) + timedelta(hours=1))
    outcomes = queue.Outcomes(sent=[(message.id, "p-1")])
    queue.record(db, outcomes, datetime.now(UTC))
    assert states(tenant, execution)[address("lease")]["state"] == "queued"
    report = reports.campaign_report(db, tenant.workspace_id, campaign["id"])
    assert (report.ever_sent, report.buckets.pending, report.buckets.total) == (0, 1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_upgrade_counts_the_messages_already_there(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
):
    for rt in _fresh_runtime(backend, request, tmp_path):
        for tenant in _new_tenant(rt):
            set_consent(tenant, address("a"), "in")
            set_consent(tenant, address("out"), "out")
            campaign = marketing(tenant)
            adapter = RecordingAdapter()
            adapter.fail(address("b"), permanent())
            set_consent(tenant, address("b"), "in")
            execution = trigger(tenant, campaign, "a", "b", "out")
            drain(deliverer_for(rt, adapter))
            message_id = states(tenant, execution)[address("a")]["id"]
            for link in (0, 0):
                tracking.record(
                    rt.db,
                    tracking.EventKind.CLICK,
                    tenant.workspace_id,
                    message_id,
                    link_index=link,
                    url="https://shop.example/0",
                )
            url = f"/v1/campaigns/{campaign['id']}/report"
            before = tenant.client.get(url).json()
            _alembic(rt, "downgrade", "0012")
            _alembic(rt, "upgrade", "head")
            after = tenant.client.get(url).json()
            assert after["targeted"] == 3
            assert {k: v for k, v in after.items() if k != "series"} == {
                k: v for k, v in before.items() if k != "series"
            }
            assert [point["period"] for point in after["series"]] == ["day"]
