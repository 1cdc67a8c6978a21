"""Business rules on a real database: the rule-set API, caps and quiet hours at delivery, the
rules matrix for marketing and transactional campaigns, and caps exact under concurrent
workers (property-based)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Tenant, problem_fields
from tests.integration.helpers import create_configuration
from tests.integration.test_delivery import (
    RecordingAdapter,
    deliverer_for,
    drain,
    permanent,
    states,
    trigger,
)
from tests.integration.test_delivery_rules import marketing, outcomes, set_consent, suppress
from tests.integration.test_executions import live_campaign, recipient
from tests.unit.test_business_rules import message as model_message
from tidings.delivery import queue
from tidings.executions.models import messages
from tidings.rules.counters import MemoryCounters, counters_for
from tidings.rules.enforcement import enforce
from tidings.rules.models import frequency_counters
from tidings.rules.policy import period_bounds, workspace_rules
from tidings.rules.schemas import Period
from tidings.vocabulary import Channel

pytestmark = pytest.mark.integration


def rule_set(tenant: Tenant, **body: Any) -> dict[str, Any]:
    response = tenant.client.post("/v1/rule-sets", json={"name": "Rules", **body})
    assert response.status_code == 201, response.text
    return response.json()


def attach(tenant: Tenant, campaign: dict[str, Any], *rule_sets: dict[str, Any]) -> None:
    response = tenant.client.put(
        f"/v1/campaigns/{campaign['id']}/rule-sets",
        json={"rule_set_ids": [r["id"] for r in rule_sets]},
    )
    assert response.status_code == 200, response.text


def quiet_now() -> dict[str, Any]:
    """Quiet hours every day from an hour ago to an hour from now (UTC)."""
    now = datetime.now(UTC)
    return {
        "timezone": "UTC",
        "windows": [
            {
                "start": (now - timedelta(hours=1)).strftime("%H:%M"),
                "end": (now + timedelta(hours=1)).strftime("%H:%M"),
            }
        ],
    }


# ---------------------------------------------------------------- the API


def test_rule_sets_are_created_read_changed_and_deleted(tenant: Tenant):
    client = tenant.client
    created = rule_set(
        tenant,
        name="Marketing pressure",
        default=True,
        frequency_caps=[{"channels": ["sms", "email"], "limit": 3, "period": "week", "every": 2}],
        quiet_hours={"timezone": "Europe/Paris", "dates": ["2026-12-25"], "action": "discard"},
    )
    assert created["default"] is True
    assert created["frequency_caps"] == [
        {"channels": ["email", "sms"], "limit": 3, "period": "week", "every": 2}
    ]
    assert created["quiet_hours"]["windows"] == []
    assert client.get(f"/v1/rule-sets/{created['id']}").json() == created
    changed = client.patch(f"/v1/rule-sets/{created['id']}", json={"quiet_hours": None})
    assert changed.status_code == 200
    assert changed.json()["quiet_hours"] is None
    assert changed.json()["frequency_caps"] == created["frequency_caps"]
    assert [r["name"] for r in client.get("/v1/rule-sets").json()["items"]] == [
        "Marketing pressure"
    ]
    duplicate = client.post("/v1/rule-sets", json={"name": "Marketing pressure"})
    assert duplicate.status_code == 409
    assert client.delete(f"/v1/rule-sets/{created['id']}").status_code == 204
    assert client.get(f"/v1/rule-sets/{created['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"frequency_caps": [{"limit": 0, "period": "day"}]}, "frequency_caps.0.limit"),
        ({"frequency_caps": [{"limit": 2, "period": "year"}]}, "frequency_caps.0.period"),
        ({"quiet_hours": {"timezone": "Paris", "dates": ["2026-12-25"]}}, "quiet_hours"),
        ({"quiet_hours": {"windows": [{"start": "7am", "end": "9am"}]}}, "quiet_hours"),
    ],
)
def test_invalid_rule_sets_name_the_field(tenant: Tenant, body: dict[str, Any], field: str):
    response = tenant.client.post("/v1/rule-sets", json={"name": "Bad", **body})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert any(name.startswith(field) for name in problem_fields(response)), response.json()


def test_campaigns_name_rule_sets_of_their_workspace_and_marketing_only(
    tenant: Tenant, other_tenant: Tenant
):
    mine = rule_set(tenant, frequency_caps=[{"limit": 1, "period": "day"}])
    theirs = rule_set(other_tenant)
    campaign = marketing(tenant)
    refused = tenant.client.put(
        f"/v1/campaigns/{campaign['id']}/rule-sets",
        json={"rule_set_ids": [mine["id"], theirs["id"]]},
    )
    assert refused.status_code == 422
    assert problem_fields(refused) == ["rule_set_ids[1]"]
    attach(tenant, campaign, mine)
    assert tenant.client.get(f"/v1/campaigns/{campaign['id']}/rule-sets").json() == {
        "campaign_id": campaign["id"],
        "rule_set_ids": [mine["id"]],
    }
    assert tenant.client.get(f"/v1/campaigns/{campaign['id']}").json()["rule_set_ids"] == [
        mine["id"]
    ]
    copy = tenant.client.post(f"/v1/campaigns/{campaign['id']}/duplicate")
    assert copy.json()["rule_set_ids"] == [mine["id"]]
    in_use = tenant.client.delete(f"/v1/rule-sets/{mine['id']}")
    assert in_use.status_code == 409
    transactional = live_campaign(tenant)
    refused = tenant.client.put(
        f"/v1/campaigns/{transactional['id']}/rule-sets", json={"rule_set_ids": [mine["id"]]}
    )
    assert refused.status_code == 422
    assert "marketing" in refused.json()["errors"][0]["message"]
    other = other_tenant.client.get(f"/v1/campaigns/{campaign['id']}/rule-sets")
    assert other.status_code == 404


def test_the_workspace_time_zone_is_a_setting(tenant: Tenant):
    response = tenant.client.patch("/v1/workspace", json={"timezone": "America/New_York"})
    assert response.status_code == 200
    assert response.json()["timezone"] == "America/New_York"
    refused = tenant.client.patch("/v1/workspace", json={"timezone": "Atlantis/Capital"})
    assert refused.status_code == 422
    assert problem_fields(refused) == ["timezone"]


# ---------------------------------------------------------------- at delivery


def test_a_frequency_cap_stops_marketing_past_it_and_counts_only_what_was_sent(tenant: Tenant):
    rule_set(
        tenant, default=True, frequency_caps=[{"channels": ["email"], "limit": 2, "period": "day"}]
    )
    set_consent(tenant, "ada@example.com", "in")
    campaign = marketing(tenant)
    adapter = RecordingAdapter()
    deliverer = deliverer_for(tenant.runtime, adapter)
    runs = []
    for _ in range(3):
        runs.append(trigger(tenant, campaign, recipient("ada@example.com")))
        drain(deliverer)
    assert [outcomes(tenant, run)["ada@example.com"] for run in runs] == [
        ("sent", None),
        ("sent", None),
        ("excluded", "frequency_capped"),
    ]
    capped = states(tenant, runs[2])["ada@example.com"]
    assert capped["last_error"] == "at most 2 per email/1day"
    # Transactional messages are neither capped nor counted.
    receipt = trigger(tenant, live_campaign(tenant), recipient("ada@example.com"))
    drain(deliverer)
    assert outcomes(tenant, receipt)["ada@example.com"] == ("sent", None)
    with tenant.runtime.db.read() as conn:
        counted = conn.execute(
            sa.select(frequency_counters.c.sent).where(
                frequency_counters.c.workspace_id == tenant.workspace_id
            )
        ).scalars()
        assert list(counted) == [2]


def test_a_failed_send_gives_its_count_back(tenant: Tenant):
    rule_set(tenant, default=True, frequency_caps=[{"limit": 1, "period": "hour"}])
    set_consent(tenant, "ada@example.com", "in")
    campaign = marketing(tenant)
    adapter = RecordingAdapter()
    adapter.fail("ada@example.com", permanent())
    first = trigger(tenant, campaign, recipient("ada@example.com"))
    drain(deliverer_for(tenant.runtime, adapter))
    assert outcomes(tenant, first)["ada@example.com"][0] == "failed"
    second = trigger(tenant, campaign, recipient("ada@example.com"))
    drain(deliverer_for(tenant.runtime, RecordingAdapter()))
    assert outcomes(tenant, second)["ada@example.com"] == ("sent", None)


def test_quiet_hours_queue_until_they_end_then_send(tenant: Tenant):
    rules = rule_set(tenant, quiet_hours=quiet_now())
    campaign = marketing(tenant)
    attach(tenant, campaign, rules)
    set_consent(tenant, "ada@example.com", "in")
    adapter = RecordingAdapter()
    execution = trigger(tenant, campaign, recipient("ada@example.com"))
    drain(deliverer_for(tenant.runtime, adapter))
    held = states(tenant, execution)["ada@example.com"]
    assert (held["state"], held["reason"], held["attempts"]) == ("deferred", "quiet_hours", 0)
    assert held["due_at"] > datetime.now(UTC) + timedelta(minutes=50)
    assert adapter.sent == []
    # The window is over (here: the rule set changes, and the message comes due).
    tenant.client.patch(f"/v1/rule-sets/{rules['id']}", json={"quiet_hours": None})
    with tenant.runtime.db.write() as conn:
        conn.execute(
            messages.update().where(messages.c.id == held["id"]).values(due_at=datetime.now(UTC))
        )
    drain(deliverer_for(tenant.runtime, adapter))
    assert outcomes(tenant, execution)["ada@example.com"] == ("sent", None)


def test_marketing_is_stopped_by_every_rule_and_transactional_goes_through(tenant: Tenant):
    """The issue's scenario: consent out, a suppressed address, a suppressed domain, past the
    cap, inside quiet hours. Transactional ignores consent, caps and quiet hours; the
    suppression list stops it too, except spam complaints on a configuration that allows them:
    a hard bounce stops everything."""
    rule_set(
        tenant,
        default=True,
        frequency_caps=[{"limit": 1, "period": "day"}],
    )
    quiet = rule_set(tenant, name="Nights", quiet_hours=quiet_now())
    for address in ("out@example.com",):
        set_consent(tenant, address, "out")
    for address in (
        "complained@example.com",
        "ada@complained.example",
        "capped@example.com",
        "night@example.com",
        "bounced@example.com",
    ):
        set_consent(tenant, address, "in")
    suppress(tenant, "complained@example.com", "spam_complaint")
    suppress(tenant, "complained.example", "spam_complaint")
    suppress(tenant, "bounced@example.com", "hard_bounce")
    adapter = RecordingAdapter()
    deliverer = deliverer_for(tenant.runtime, adapter)
    # Past its cap: one marketing message was sent to it today already.
    drain_first = trigger(tenant, marketing(tenant), recipient("capped@example.com"))
    drain(deliverer)
    assert outcomes(tenant, drain_first)["capped@example.com"] == ("sent", None)

    everyone = [
        recipient(address)
        for address in (
            "out@example.com",
            "complained@example.com",
            "ada@complained.example",
            "capped@example.com",
            "bounced@example.com",
        )
    ]
    sale = trigger(tenant, marketing(tenant), *everyone)
    night_campaign = marketing(tenant)
    attach(tenant, night_campaign, quiet)
    night = trigger(tenant, night_campaign, recipient("night@example.com"))
    drain(deliverer)
    assert outcomes(tenant, sale) == {
        "out@example.com": ("excluded", "no_consent"),
        "complained@example.com": ("excluded", "suppressed_address"),
        "ada@complained.example": ("excluded", "suppressed_domain"),
        "capped@example.com": ("excluded", "frequency_capped"),
        "bounced@example.com": ("excluded", "suppressed_address"),
    }
    assert outcomes(tenant, night) == {"night@example.com": ("deferred", "quiet_hours")}

    configuration = create_configuration(
        tenant.client, category="transactional", allow_complaint_suppressed=True
    )
    receipt = live_campaign(tenant, channel_configuration_id=configuration["id"])
    sent = trigger(tenant, receipt, *everyone, recipient("night@example.com"))
    drain(deliverer)
    assert outcomes(tenant, sent) == {
        "out@example.com": ("sent", None),
        "complained@example.com": ("sent", None),
        "ada@complained.example": ("sent", None),
        "capped@example.com": ("sent", None),
        "night@example.com": ("sent", None),
        "bounced@example.com": ("excluded", "suppressed_address"),
    }


# ---------------------------------------------------------------- exact under concurrency

# A Monday long past: claims at these times take only this test's messages.
ORIGIN = datetime(2001, 1, 1, tzinfo=UTC)
CAP = st.fixed_dictionaries(
    {
        "limit": st.integers(min_value=1, max_value=4),
        "period": st.sampled_from(["hour", "day", "week"]),
        "every": st.integers(min_value=1, max_value=3),
    }
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    caps=st.lists(CAP, min_size=1, max_size=3),
    # Each message: which of two recipients, and how many hours after the origin it comes due.
    arrivals=st.lists(
        st.tuples(st.integers(min_value=0, max_value=1), st.integers(min_value=0, max_value=60)),
        min_size=1,
        max_size=24,
    ),
    workers=st.integers(min_value=2, max_value=4),
    batch=st.integers(min_value=1, max_value=3),
)
def test_concurrent_workers_never_pass_a_cap(
    tenant: Tenant,
    caps: list[dict[str, Any]],
    arrivals: list[tuple[int, int]],
    workers: int,
    batch: int,
):
    """Workers claim side by side at each hour while messages come due; per recipient and
    period, what they send equals what one worker alone would send, which never passes a
    cap."""
    db = tenant.runtime.db
    run = uuid.uuid4().hex
    rules = rule_set(tenant, name=run, frequency_caps=caps)
    campaign = marketing(tenant)
    attach(tenant, campaign, rules)
    people = [f"p{n}-{run}@example.com" for n in range(2)]
    for person in people:
        set_consent(tenant, person, "in")
    executions = [trigger(tenant, campaign, recipient(people[who])) for who, _ in arrivals]
    due = {}
    for execution, (who, hours) in zip(executions, arrivals, strict=True):
        (row,) = states(tenant, execution).values()
        due[row["id"]] = (who, ORIGIN + timedelta(hours=hours))
    with db.write() as conn:
        for message_id, (_, at) in due.items():
            conn.execute(messages.update().where(messages.c.id == message_id).values(due_at=at))

    sent: dict[str, datetime] = {}
    lock = threading.Lock()
    lease = timedelta(minutes=5)

    def work(now: datetime, start: threading.Barrier) -> None:
        start.wait()
        while True:
            claimed = queue.claim(db, now, batch, lease)
            if not claimed:
                return
            outcomes = queue.Outcomes()
            for message in claimed:
                if message.id not in due:
                    # Another test's leftover, due before 2001: not ours to judge.
                    outcomes.sent.append((message.id, None))
                elif message.verdict is None:
                    outcomes.sent.append((message.id, None))
                    with lock:
                        sent[message.id] = now
                else:
                    outcomes.excluded.append((message.id, "frequency_capped", None))
            queue.record(db, outcomes, now)

    for hour in sorted({hours for _, hours in arrivals}):
        now = ORIGIN + timedelta(hours=hour, minutes=1)
        start = threading.Barrier(workers)
        threads = [threading.Thread(target=work, args=(now, start)) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # One worker alone, with the in-memory counters, in order of arrival.
    model = MemoryCounters()
    expected: Counter[tuple[int, int]] = Counter()
    book = {
        "w": workspace_rules(
            None,
            [
                {
                    "id": "r",
                    "workspace_id": "w",
                    "is_default": True,
                    "frequency_caps": caps,
                    "quiet_hours": None,
                }
            ],
        )
    }
    for number, (who, hours) in enumerate(sorted(arrivals, key=lambda a: a[1])):
        now = ORIGIN + timedelta(hours=hours, minutes=1)
        (decided,) = enforce(
            [model_message(number, profile_id=str(who))], book, model, now, "allow"
        )
        if decided.verdict is None:
            expected[(who, hours)] += 1
    actual: Counter[tuple[int, int]] = Counter(
        (due[message_id][0], int((at - ORIGIN).total_seconds() // 3600))
        for message_id, at in sent.items()
    )
    assert actual == expected
    for cap in caps:
        for who in range(2):
            per_period = Counter(
                period_bounds(Period(cap["period"]), cap["every"], ORIGIN + timedelta(hours=h))[0]
                for (person, h), count in actual.items()
                if person == who
                for _ in range(count)
            )
            assert max(per_period.values(), default=0) <= cap["limit"]


def test_counts_follow_a_merge_and_go_with_an_erasure(tenant: Tenant):
    rule_set(tenant, default=True, frequency_caps=[{"limit": 1, "period": "day"}])
    for address in ("ada@example.com", "ada.work@example.com"):
        set_consent(tenant, address, "in")
    campaign = marketing(tenant)
    deliverer = deliverer_for(tenant.runtime, RecordingAdapter())
    first = trigger(tenant, campaign, recipient("ada.work@example.com"))
    drain(deliverer)
    assert outcomes(tenant, first)["ada.work@example.com"] == ("sent", None)
    merged = tenant.client.post(
        "/v1/profiles/merge",
        json={
            "into": {"namespace": "email", "id": "ada@example.com"},
            "from": {"namespace": "email", "id": "ada.work@example.com"},
        },
    )
    assert merged.status_code == 200, merged.text
    # The same person: the message sent to the merged profile counts towards the cap.
    second = trigger(tenant, campaign, recipient("ada@example.com"))
    drain(deliverer)
    assert outcomes(tenant, second)["ada@example.com"] == ("excluded", "frequency_capped")

    def counter_rows() -> list[str]:
        with tenant.runtime.db.read() as conn:
            return list(
                conn.execute(
                    sa.select(frequency_counters.c.recipient).where(
                        frequency_counters.c.workspace_id == tenant.workspace_id
                    )
                ).scalars()
            )

    assert counter_rows() == [merged.json()["id"]]
    assert tenant.client.delete("/v1/profiles/email/ada@example.com").status_code == 204
    assert counter_rows() == []


def test_claims_counting_one_profile_on_two_channels_in_opposite_orders_do_not_deadlock(
    tenant: Tenant,
):
    """Two claims hold the same profile's email and SMS messages in opposite orders, each
    pausing between counts: counters are taken in one global order, so neither waits on the
    other in a cycle (on PostgreSQL this deadlocked when each message took its own)."""
    caps = [
        {"channels": ["email"], "limit": 5, "period": "day"},
        {"channels": ["sms"], "limit": 5, "period": "day"},
    ]
    workspace = tenant.workspace_id
    rules = {
        workspace: workspace_rules(
            None,
            [
                {
                    "id": "r",
                    "workspace_id": workspace,
                    "is_default": True,
                    "frequency_caps": caps,
                    "quiet_hours": None,
                }
            ],
        )
    }
    now = ORIGIN + timedelta(days=1)
    email = {"channel": Channel.EMAIL, "address": "a@example.com"}
    sms = {"channel": Channel.SMS, "address": "+33612345678"}

    def batch(*kinds: dict[str, Any]) -> list[Any]:
        return [
            model_message(n, workspace_id=workspace, profile_id="p1", **kind)
            for n, kind in enumerate(kinds)
        ]

    class Slow:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def add(self, key: Any) -> int:
            count: int = self.inner.add(key)
            time.sleep(0.3)
            return count

    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(messages: list[Any]) -> None:
        start.wait()
        try:
            with tenant.runtime.db.write() as conn:
                enforce(messages, rules, Slow(counters_for(conn)), now, "allow")
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(batch(email, sms),)),
        threading.Thread(target=work, args=(batch(sms, email),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with tenant.runtime.db.read() as conn:
        counted = dict(
            conn.execute(
                sa.select(frequency_counters.c.cap_key, frequency_counters.c.sent).where(
                    frequency_counters.c.workspace_id == workspace,
                    frequency_counters.c.recipient == "p1",
                )
            ).all()
        )
    assert counted == {"email/1day": 2, "sms/1day": 2}
