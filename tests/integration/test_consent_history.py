"""Consent history: every writer of consent records each real change once, in its transaction;
the API pages through it; merges carry it over and erasures delete it."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import BACKENDS, Tenant, _new_tenant
from tests.integration.console_members import create_members
from tests.integration.test_console_auth import browser, sign_in
from tests.integration.test_delivery import RecordingAdapter, deliverer_for, drain, states, trigger
from tests.integration.test_executions import live_campaign, recipient
from tests.integration.test_migrations import _alembic, _fresh_runtime
from tests.integration.test_sms import INBOUND_URL, _inbound, _post_signed, sms_campaign
from tests.integration.test_unsubscribe import ADAPTER as UNSUBSCRIBE_ADAPTER
from tests.integration.test_unsubscribe import MARKETING_CONTENT, path_of, sent_to
from tidings.clock import utcnow
from tidings.executions.models import messages
from tidings.feedback import service as feedback
from tidings.feedback.events import FeedbackEvent, FeedbackKind, FeedbackSource
from tidings.operations.retention import Retention
from tidings.profiles import imports
from tidings.profiles.models import consent_events
from tidings.profiles.schemas import ImportFormat

pytestmark = pytest.mark.integration
ADAPTER = RecordingAdapter()


def address() -> str:
    return f"ada-{uuid.uuid4().hex[:10]}@example.com"


def history(tenant: Tenant, value: str, namespace: str = "email", **params: Any) -> list[Any]:
    """Every change, newest first, read page by page."""
    items: list[Any] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        answer = tenant.client.get(
            f"/v1/profiles/{namespace}/{value}/consent-history", params=query
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def changes(items: list[Any]) -> list[tuple[str, str | None, str, str]]:
    """(channel, from, to, source), oldest first."""
    return [
        (item["channel"], item["previous_status"], item["status"], item["source"])
        for item in reversed(items)
    ]


def rows_of(tenant: Tenant, profile_ids: list[str]) -> int:
    with tenant.runtime.db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(consent_events.c.profile_id.in_(profile_ids))
            ).scalar_one()
        )


def put(tenant: Tenant, value: str, method: str = "PATCH", **body: Any) -> dict[str, Any]:
    answer = tenant.client.request(method, f"/v1/profiles/email/{value}", json=body)
    assert answer.status_code in (200, 201), answer.text
    profile: dict[str, Any] = answer.json()
    return profile


# ---------------------------------------------------------------- the profile API


def test_api_changes_are_recorded_once_and_no_ops_not_at_all(tenant: Tenant):
    ada = address()
    put(tenant, ada, "PUT", consent={"email": "in"})
    put(tenant, ada, "PUT", consent={"email": "in"})  # the same status again
    put(tenant, ada, attributes={"plan": "pro"})  # no consent in the body
    put(tenant, ada, consent={"push": "unset"})  # unset was the status already
    put(tenant, ada, consent={"email": "out", "sms": "in"})
    put(tenant, ada, consent={"email": "out", "sms": "in"})

    items = history(tenant, ada)
    assert changes(items) == [
        ("email", "unset", "in", "api"),
        ("email", "in", "out", "api"),
        ("sms", "unset", "in", "api"),
    ]
    key_ids = {item["detail"] for item in items}
    assert len(key_ids) == 1 and key_ids.pop().startswith("api_key:")
    profile = tenant.client.get(f"/v1/profiles/email/{ada}").json()
    assert items[0]["occurred_at"] == profile["consent"]["sms"]["updated_at"]


def test_history_pages_newest_first_filters_by_channel_and_stays_in_its_workspace(
    tenant: Tenant, other_tenant: Tenant
):
    ada = address()
    for status in ("in", "out", "in", "out", "in"):
        put(tenant, ada, consent={"email": status})
    put(tenant, ada, consent={"sms": "out"})

    whole = tenant.client.get(f"/v1/profiles/email/{ada}/consent-history").json()
    assert whole["next_cursor"] is None and len(whole["items"]) == 6
    paged = history(tenant, ada, limit=2)
    assert paged == whole["items"]
    stamps = [item["occurred_at"] for item in paged]
    assert stamps == sorted(stamps, reverse=True)
    assert [item["id"] for item in paged] == sorted((i["id"] for i in paged), reverse=True)
    assert paged[0]["channel"] == "sms"

    emails = history(tenant, ada, channel="email", limit=4)
    assert [item["status"] for item in emails] == ["in", "out", "in", "out", "in"]
    assert history(tenant, ada, channel="push") == []

    wrong = tenant.client.get(f"/v1/profiles/email/{ada}/consent-history?channel=fax")
    assert wrong.status_code == 422
    assert wrong.headers["content-type"].startswith("application/problem+json")
    unknown = tenant.client.get(f"/v1/profiles/email/{address()}/consent-history")
    assert unknown.status_code == 404
    # Another workspace's key does not see the profile, by any identity.
    elsewhere = other_tenant.client.get(f"/v1/profiles/email/{ada}/consent-history")
    assert elsewhere.status_code == 404


# ---------------------------------------------------------------- imports


@contextmanager
def inserts_counted(tenant: Tenant) -> Iterator[list[str]]:
    """The INSERT statements into consent_events run meanwhile."""
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO CONSENT_EVENTS"):
            seen.append(statement)

    engine = tenant.runtime.db.engine
    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


def run_import(tenant: Tenant, text: str, batch_rows: int) -> imports.ImportReport:
    report = imports.import_profiles(
        tenant.runtime.db,
        tenant.workspace_id,
        [text.encode()],
        ImportFormat.CSV,
        batch_rows=batch_rows,
    )
    assert report.rejected == []
    return report


def test_an_import_records_changed_rows_only_with_one_insert_per_batch(tenant: Tenant):
    people = [address() for _ in range(7)]
    header = "email,consent:email,consent:sms\n"
    first = header + "".join(f"{p},in,\n" for p in people[:6]) + f"{people[6]},unset,\n"
    with inserts_counted(tenant) as inserts:
        report = run_import(tenant, first, batch_rows=3)
    assert report.created == 7
    # Batches of 3, 3 and 1 rows; the last changed no consent (unset is where it starts).
    assert len(inserts) == 2
    assert [changes(history(tenant, p)) for p in people] == [
        [("email", "unset", "in", "import")]
    ] * 6 + [[]]

    with inserts_counted(tenant) as inserts:
        again = run_import(tenant, first, batch_rows=3)
    assert again.unchanged == 7 and inserts == []

    # The same person twice in one batch: the second row sees what the first did.
    flipped = header + f"{people[0]},out,in\n{people[0]},in,\n{people[1]},in,out\n"
    with inserts_counted(tenant) as inserts:
        run_import(tenant, flipped, batch_rows=10)
    assert len(inserts) == 1
    assert changes(history(tenant, people[0])) == [
        ("email", "unset", "in", "import"),
        ("email", "in", "out", "import"),
        ("sms", "unset", "in", "import"),
        ("email", "out", "in", "import"),
    ]
    assert changes(history(tenant, people[1]))[1:] == [("sms", "unset", "out", "import")]


def test_an_import_jobs_changes_name_the_job(tenant: Tenant):
    person = address()
    response = tenant.client.post(
        "/v1/profiles/imports",
        content=f"email,consent:email\n{person},in\n".encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    job_id = response.json()["import_id"]
    [change] = history(tenant, person)
    assert (change["source"], change["detail"]) == ("import", f"import:{job_id}")
    # From the console too.
    client = browser(tenant)
    token = sign_in(client, create_members(tenant).editor)
    from_console = address()
    started = client.post(
        "/profiles/imports",
        data={"csrf_token": token, "format": ""},
        files={"file": ("people.csv", f"email,consent:email\n{from_console},out\n".encode())},
    )
    assert started.status_code == 303, started.text
    page = started.headers["location"]
    deadline = time.monotonic() + 30
    while client.get(page + "/status").json()["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    [change] = history(tenant, from_console)
    assert change["detail"] == f"import:{page.rsplit('/', 1)[1]}"
    # An import run without a job (a library call) writes no detail.
    other = address()
    run_import(tenant, f"email,consent:email\n{other},in\n", batch_rows=10)
    assert [item["detail"] for item in history(tenant, other)] == [None]


# ---------------------------------------------------------------- unsubscribe, feedback, SMS


def test_an_unsubscribe_link_records_one_change_naming_the_message(tenant: Tenant):
    ada = address()
    put(tenant, ada, "PUT", consent={"email": "in"})
    marketing = live_campaign(tenant, category="marketing", content=MARKETING_CONTENT)
    execution = trigger(tenant, marketing, recipient(ada))
    drain(deliverer_for(tenant.runtime, UNSUBSCRIBE_ADAPTER))
    sent = sent_to(tenant, execution, ada)
    path = path_of(sent)
    for _ in range(2):  # clicked twice
        assert tenant.client.post(path).status_code == 200

    items = history(tenant, ada)
    assert changes(items) == [
        ("email", "unset", "in", "api"),
        ("email", "in", "out", "unsubscribe_link"),
    ]
    assert items[0]["detail"] == f"message:{sent.message_id}"


def sent_message(tenant: Tenant, to: str) -> dict[str, Any]:
    execution = trigger(tenant, live_campaign(tenant), recipient(to))
    drain(deliverer_for(tenant.runtime, ADAPTER))
    row = states(tenant, execution)[to]
    assert row["state"] == "sent", row
    return row


def feedback_event(kind: FeedbackKind, source: FeedbackSource, row: dict[str, Any]) -> Any:
    return FeedbackEvent(
        kind=kind,
        source=source,
        event_id=f"event-{uuid.uuid4()}",
        recipient=row["address"],
        message_ref=row["id"],
    )


def test_complaints_and_provider_unsubscribes_record_one_change_each(tenant: Tenant):
    ada, bob = address(), address()
    put(tenant, ada, "PUT", consent={"email": "in"})
    put(tenant, bob, "PUT", consent={"email": "in"})
    complained, unsubscribed = sent_message(tenant, ada), sent_message(tenant, bob)
    threshold = tenant.runtime.settings.soft_bounce_threshold
    for _ in range(2):  # two distinct events, the second a no-op
        feedback.apply_events(
            tenant.runtime.db,
            [
                feedback_event(FeedbackKind.COMPLAINT, FeedbackSource.SES, complained),
                feedback_event(FeedbackKind.UNSUBSCRIBE, FeedbackSource.SENDGRID, unsubscribed),
            ],
            soft_bounce_threshold=threshold,
        )

    ada_items, bob_items = history(tenant, ada), history(tenant, bob)
    assert changes(ada_items)[1:] == [("email", "in", "out", "complaint")]
    assert ada_items[0]["detail"] == f"message:{complained['id']}"
    assert changes(bob_items)[1:] == [("email", "in", "out", "sendgrid_unsubscribe")]
    assert bob_items[0]["detail"] == f"message:{unsubscribed['id']}"


def test_sms_keywords_record_one_change_each_naming_the_inbound_message(tenant: Tenant):
    phone = f"+1415555{uuid.uuid4().int % 10000:04d}"
    created = tenant.client.put(f"/v1/profiles/phone/{phone}", json={"attributes": {}})
    assert created.status_code == 201, created.text
    sms_campaign(tenant)  # the Twilio configuration the keywords verify with
    stop = _inbound(phone, "STOP")
    for form in (stop, _inbound(phone, "stop"), _inbound(phone, "START")):
        assert _post_signed(tenant, INBOUND_URL, form).status_code == 200

    items = history(tenant, phone, namespace="phone")
    assert changes(items) == [
        ("sms", "unset", "out", "sms_keyword"),
        ("sms", "out", "in", "sms_keyword"),
    ]
    assert items[1]["detail"] == f"twilio:{dict(stop)['MessageSid']}"


# ---------------------------------------------------------------- merges and erasure


def merge(tenant: Tenant, into: str, source: str) -> dict[str, Any]:
    answer = tenant.client.post(
        "/v1/profiles/merge",
        json={
            "into": {"namespace": "email", "id": into},
            "from": {"namespace": "email", "id": source},
        },
    )
    assert answer.status_code == 200, answer.text
    merged: dict[str, Any] = answer.json()
    return merged


def test_a_merge_brings_the_history_along_and_records_what_it_changed(tenant: Tenant):
    ada, bob = address(), address()
    put(tenant, ada, "PUT", consent={"email": "in"})
    bob_id = put(tenant, bob, "PUT", consent={"email": "out", "sms": "in"})["id"]
    merged = merge(tenant, ada, bob)

    items = history(tenant, ada)
    assert changes(items) == [
        ("email", "unset", "in", "api"),
        ("email", "unset", "out", "api"),
        ("sms", "unset", "in", "api"),
        # Bob's email change is the more recent: it wins, as does his sms consent.
        ("email", "in", "out", "merge"),
        ("sms", "unset", "in", "merge"),
    ]
    assert {item["detail"] for item in items[:2]} == {f"profile:{bob_id}"}
    # Bob's own changes say where they were recorded; the merge's and Ada's are Ada's.
    assert [item["merged_from"] for item in reversed(items)] == [None, bob_id, bob_id, None, None]
    assert rows_of(tenant, [bob_id]) == 0
    assert merged["consent"]["email"]["status"] == "out"

    # A merge that changes no channel records nothing.
    carol = address()
    put(tenant, carol, "PUT", consent={"email": "out"})
    merge(tenant, ada, carol)
    assert len(history(tenant, ada)) == len(items) + 1  # carol's own change came along


def test_after_a_chain_of_merges_each_change_names_the_profile_it_was_recorded_on(
    tenant: Tenant,
):
    ada, bob, carol = address(), address(), address()
    ada_id = put(tenant, ada, "PUT", consent={"email": "in"})["id"]
    bob_id = put(tenant, bob, "PUT", consent={"sms": "in"})["id"]
    carol_id = put(tenant, carol, "PUT", consent={"push": "out"})["id"]
    merge(tenant, bob, carol)  # carol's change moves to bob...
    merge(tenant, ada, bob)  # ...then with bob's to ada: it still names carol

    recorded_on = [
        (item["channel"], item["source"], item["merged_from"], item["detail"])
        for item in reversed(history(tenant, ada))
    ]
    key = recorded_on[0][3]  # the admin key's id
    assert key is not None and key.startswith("api_key:")
    assert recorded_on == [
        ("email", "api", None, key),
        ("sms", "api", bob_id, key),
        ("push", "api", carol_id, key),
        # The first merge's entry was recorded on bob; the second's on ada itself.
        ("push", "merge", bob_id, f"profile:{carol_id}"),
        ("sms", "merge", None, f"profile:{bob_id}"),
        ("push", "merge", None, f"profile:{bob_id}"),
    ]
    with tenant.runtime.db.read() as conn:
        holders = conn.execute(
            sa.select(consent_events.c.profile_id).where(
                consent_events.c.workspace_id == tenant.workspace_id,
                consent_events.c.merged_from.is_not(None),
            )
        ).scalars()
        assert set(holders) == {ada_id}

    client = browser(tenant)
    sign_in(client, create_members(tenant).viewer)
    page = client.get("/profiles/show", params={"namespace": "email", "id": ada})
    assert page.status_code == 200
    shown = text(page.text.split('id="consent-history-title"', 1)[1])
    assert "push unset → out api api_key:" in shown
    assert f"recorded on merged profile {carol_id}" in shown
    assert shown.count("recorded on merged profile") == 3


def test_an_erasure_deletes_the_history_of_the_person_only(tenant: Tenant):
    ada, bob, carol = address(), address(), address()
    ada_id = put(tenant, ada, "PUT", consent={"email": "in"})["id"]
    bob_id = put(tenant, bob, "PUT", consent={"sms": "in"})["id"]
    carol_id = put(tenant, carol, "PUT", consent={"email": "in"})["id"]
    merge(tenant, ada, bob)
    assert rows_of(tenant, [ada_id]) == 3

    assert tenant.client.delete(f"/v1/profiles/email/{ada}").status_code == 204
    assert rows_of(tenant, [ada_id, bob_id]) == 0
    assert rows_of(tenant, [carol_id]) == 1
    gone = tenant.client.get(f"/v1/profiles/email/{ada}/consent-history")
    assert gone.status_code == 404


# ---------------------------------------------------------------- the console


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_a_console_change_is_recorded_with_its_user_and_shown_on_the_profile_page(
    tenant: Tenant,
):
    ada = address()
    put(tenant, ada, "PUT", consent={"email": "in"})
    editor = create_members(tenant).editor
    client = browser(tenant)
    token = sign_in(client, editor)
    form = {"csrf_token": token, "namespace": "email", "id": ada, "channel": "email"}
    for _ in range(2):  # the second changes nothing
        answer = client.post("/profiles/consent", data={**form, "status": "out"})
        assert answer.status_code == 200, answer.text

    items = history(tenant, ada)
    assert changes(items) == [("email", "unset", "in", "api"), ("email", "in", "out", "console")]
    assert items[0]["detail"] == f"user:{editor}"
    page = client.get("/profiles/show", params={"namespace": "email", "id": ada})
    assert page.status_code == 200
    shown = text(page.text.split('id="consent-history-title"', 1)[1])
    assert "email in → out console" in shown
    assert "email unset → in api" in shown
    assert shown.index("in → out") < shown.index("unset → in")  # newest first


# ---------------------------------------------------------------- the upgrade


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_upgrade_starts_each_history_with_the_consent_stored(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
):
    fresh = _fresh_runtime(backend, request, tmp_path)
    rt = next(fresh)
    try:
        tenant = next(_new_tenant(rt))
        ada, bob = address(), address()
        put(tenant, ada, "PUT", consent={"email": "in"})
        put(tenant, ada, consent={"sms": "out"})
        put(tenant, ada, consent={"email": "out"})
        put(tenant, bob, "PUT", attributes={"plan": "pro"})
        stored = tenant.client.get(f"/v1/profiles/email/{ada}").json()["consent"]

        _alembic(rt, "downgrade", "0015")
        with rt.db.engine.connect() as conn:
            assert "consent_events" not in sa.inspect(conn).get_table_names()
        _alembic(rt, "upgrade", "head")

        items = history(tenant, ada)
        # One row per channel stored, the latest state only, newest first as before.
        assert [
            (item["channel"], item["previous_status"], item["status"], item["source"])
            for item in items
        ] == [("email", None, "out", "api"), ("sms", None, "out", "api")]
        for item in items:
            assert item["occurred_at"] == stored[item["channel"]]["updated_at"]
            assert item["detail"] is None
        assert history(tenant, bob) == []
        # Later changes come after the history's start.
        put(tenant, ada, consent={"email": "in"})
        assert changes(history(tenant, ada))[-1] == ("email", "out", "in", "api")
    finally:
        fresh.close()


def test_retention_keeps_the_history_however_old(tenant: Tenant):
    ada = address()
    put(tenant, ada, "PUT", consent={"email": "in"})
    message = sent_message(tenant, ada)
    old = utcnow() - timedelta(days=4000)
    with tenant.runtime.db.write() as conn:
        conn.execute(
            messages.update()
            .where(messages.c.id == message["id"])
            .values(due_at=old, updated_at=old, created_at=old)
        )
        conn.execute(
            consent_events.update()
            .where(consent_events.c.workspace_id == tenant.workspace_id)
            .values(occurred_at=old)
        )
    report = Retention(tenant.runtime.db, days=30).run(utcnow())
    assert report.messages >= 1  # it ran, and cleared the old message
    assert changes(history(tenant, ada)) == [("email", "unset", "in", "api")]
