"""Profile imports as jobs: progress in the database, readable from another process (here, a
second Database and app on the same database), interrupted when their process dies, and
kept apart per workspace."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.integration.console_members import Members, create_members
from tests.integration.test_console_auth import sign_in
from tidings.app import create_app
from tidings.clock import utcnow
from tidings.profiles import import_jobs, imports
from tidings.profiles.import_jobs import JobState
from tidings.profiles.models import import_jobs as import_jobs_table
from tidings.profiles.schemas import ImportFormat
from tidings.runtime import Runtime
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration
CSV = "text/csv"


@pytest.fixture
def second_process(tenant: Tenant) -> Iterator[Runtime]:
    """Another runtime on the same database: what another API process would have."""
    other = Runtime.from_settings(tenant.runtime.settings)
    yield other
    other.close()


def _rows(count: int, domain: str = "example.com") -> str:
    return "".join(f"user{n}@{domain},City {n}\n" for n in range(count))


def test_each_committed_batch_is_visible_to_another_process(
    tenant: Tenant, second_process: Runtime
):
    db, workspace = tenant.runtime.db, tenant.workspace_id
    body = ("email,address.city\n" + _rows(250, "batches.example")).encode()
    job_id = import_jobs.create(
        db,
        workspace,
        source="cli",
        fmt=ImportFormat.CSV,
        bytes_total=len(body),
        state=JobState.RUNNING,
    )
    tracker = import_jobs.Tracker(db, job_id)
    seen: list[tuple[str, int, int, int]] = []

    def after_batch(report: imports.ImportReport) -> None:
        # Read after the batch committed, through another engine: what any process sees.
        job = import_jobs.get(second_process.db, workspace, job_id)
        seen.append((job["state"], job["rows_created"], job["lines"], report.created))

    pieces = (body[start : start + 1000] for start in range(0, len(body), 1000))
    report = imports.import_profiles(
        db,
        workspace,
        tracker.chunks(pieces),
        ImportFormat.CSV,
        batch_rows=100,
        on_batch=after_batch,
        on_commit=tracker.on_commit,
    )
    assert [(state, created) for state, created, _, _ in seen] == [
        ("running", 100),
        ("running", 200),
        ("running", 250),
    ]
    assert all(created == reported for _, created, _, reported in seen)
    assert seen[-1][2] == 251  # the header and every row
    import_jobs.succeed(db, job_id, report, tracker.bytes_read)
    done = import_jobs.get(second_process.db, workspace, job_id)
    assert done["state"] == "succeeded" and done["bytes_read"] == len(body)
    assert done["finished_at"] is not None and import_jobs.percent(done) == 100


def test_a_job_its_process_abandoned_reads_interrupted_and_keeps_its_rows(
    tenant: Tenant, second_process: Runtime
):
    db, workspace = tenant.runtime.db, tenant.workspace_id
    job_id = import_jobs.create(db, workspace, source="console", fmt=ImportFormat.CSV)
    import_jobs.start(db, job_id)
    tracker = import_jobs.Tracker(db, job_id)
    body = "email\n" + "".join(f"kept{n}@abandoned.example\n" for n in range(30))

    def dies(report: imports.ImportReport) -> None:
        raise SystemExit("the process ends after its first batch")

    with pytest.raises(SystemExit):
        imports.import_profiles(
            db,
            workspace,
            tracker.chunks([body]),
            ImportFormat.CSV,
            batch_rows=10,
            on_batch=dies,
            on_commit=tracker.on_commit,
        )
    fresh = import_jobs.get(second_process.db, workspace, job_id, timedelta(minutes=5))
    assert fresh["state"] == "running" and fresh["rows_created"] == 10

    with db.write() as conn:  # nothing written for ten minutes
        conn.execute(
            sa.update(import_jobs_table)
            .where(import_jobs_table.c.id == job_id)
            .values(updated_at=utcnow() - timedelta(minutes=10))
        )
    listed = import_jobs.recent(second_process.db, workspace, stale_after=timedelta(minutes=5))
    [job] = [row for row in listed if row["id"] == job_id]
    assert job["state"] == "interrupted" and job["rows_created"] == 10
    assert job["error"] and job["finished_at"] is not None
    # What the batch committed stays.
    assert tenant.client.get("/v1/profiles/email/kept9@abandoned.example").status_code == 200
    assert tenant.client.get("/v1/profiles/email/kept10@abandoned.example").status_code == 404
    api = tenant.client.get(f"/v1/profile-imports/{job_id}").json()
    assert api["state"] == "interrupted" and api["created"] == 10

    # A process that was only slow writes again: the job is running once more.
    import_jobs.heartbeat(db, job_id, 5)
    again = import_jobs.get(db, workspace, job_id)
    assert again["state"] == "running" and again["error"] is None
    assert again["finished_at"] is None


def test_a_job_read_interrupted_that_starts_or_ends_is_clean_again(tenant: Tenant):
    db, workspace = tenant.runtime.db, tenant.workspace_id
    stale = utcnow() - timedelta(minutes=10)
    queued = import_jobs.create(db, workspace, source="console", fmt=ImportFormat.CSV)
    running = import_jobs.create(
        db, workspace, source="cli", fmt=ImportFormat.CSV, state=JobState.RUNNING
    )
    with db.write() as conn:
        conn.execute(
            sa.update(import_jobs_table)
            .where(import_jobs_table.c.id.in_([queued, running]))
            .values(updated_at=stale)
        )
    listed = import_jobs.recent(db, workspace, stale_after=timedelta(minutes=5))
    assert {row["id"]: row["state"] for row in listed if row["id"] in (queued, running)} == {
        queued: "interrupted",
        running: "interrupted",
    }

    # The queued job's thread starts late; the running one ends with no batch left to commit.
    import_jobs.start(db, queued)
    import_jobs.succeed(db, running, imports.ImportReport(), bytes_read=0)

    started = import_jobs.get(db, workspace, queued)
    assert started["state"] == "running"
    assert started["error"] is None and started["finished_at"] is None
    ended = import_jobs.get(db, workspace, running)
    assert ended["state"] == "succeeded" and ended["error"] is None


def test_an_api_import_is_a_job_with_a_sample_of_its_rejected_rows(tenant: Tenant):
    bad = "".join(f"not-an-address-{n},City\n" for n in range(150))
    body = "email,address.city\n" + _rows(40, "sample.example") + bad
    response = tenant.client.post(
        "/v1/profiles/imports", content=body.encode(), headers={"Content-Type": CSV}
    )
    assert response.status_code == 200, response.text
    report = response.json()
    job = tenant.client.get(f"/v1/profile-imports/{report['import_id']}").json()
    assert job["state"] == "succeeded" and job["source"] == "api"
    assert job["created"] == 40 and job["rejected_total"] == 150
    assert job["bytes_total"] == job["bytes_read"] == len(body.encode())
    assert len(job["rejected"]) == import_jobs.SAMPLED
    assert [row["line"] for row in job["rejected"]] == list(range(42, 42 + import_jobs.SAMPLED))
    assert "email" in job["rejected"][0]["reason"]
    assert job["created_by"] is not None
    listed = tenant.client.get("/v1/profile-imports", params={"limit": 1}).json()
    assert [item["id"] for item in listed["items"]] == [report["import_id"]]


def test_a_failed_api_import_records_its_error(tenant: Tenant):
    response = tenant.client.post(
        "/v1/profiles/imports",
        content=b"email,email\na@x.example,b@x.example\n",
        headers={"Content-Type": CSV},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["errors"][0]["field"] == "header"
    # The answer names its job, whose record keeps the error.
    job = tenant.client.get(f"/v1/profile-imports/{problem['import_id']}").json()
    assert job["state"] == "failed" and "header" in job["error"]
    assert job["errors"][0]["field"] == "header"
    [listed] = tenant.client.get("/v1/profile-imports", params={"limit": 1}).json()["items"]
    assert listed["id"] == problem["import_id"]


def test_imports_of_one_workspace_are_invisible_to_another(
    tenant: Tenant, other_tenant: Tenant, members: Members
):
    response = tenant.client.post(
        "/v1/profiles/imports",
        content=b"email\nmine@tenancy.example\n",
        headers={"Content-Type": CSV},
    )
    job_id = response.json()["import_id"]
    assert other_tenant.client.get(f"/v1/profile-imports/{job_id}").status_code == 404
    listed = other_tenant.client.get("/v1/profile-imports").json()["items"]
    assert job_id not in {item["id"] for item in listed}
    reader = tenant.client_with(Scope.CAMPAIGNS_READ)
    assert reader.get(f"/v1/profile-imports/{job_id}").status_code == 403
    # Nor through the console of the other workspace.
    browser = TestClient(
        other_tenant.client.app, base_url="https://testserver", follow_redirects=False
    )
    outsider = create_members(other_tenant)
    sign_in(browser, outsider.viewer)
    assert browser.get(f"/profiles/imports/{job_id}").status_code == 404
    assert browser.get(f"/profiles/imports/{job_id}/status").status_code == 404
    own = TestClient(tenant.client.app, base_url="https://testserver", follow_redirects=False)
    sign_in(own, members.viewer)
    assert own.get(f"/profiles/imports/{job_id}/status").json()["state"] == "succeeded"


def test_the_console_polls_an_import_from_another_process(
    tenant: Tenant, members: Members, second_process: Runtime
):
    first = TestClient(tenant.client.app, base_url="https://testserver", follow_redirects=False)
    token = sign_in(first, members.editor)
    body = "email,address.city\n" + _rows(700, "console.example") + "oops,Nowhere\n"
    started = first.post(
        "/profiles/imports",
        data={"csrf_token": token, "format": ""},
        files={"file": ("people.csv", body.encode(), CSV)},
    )
    assert started.status_code == 303, started.text
    page_url = started.headers["location"]
    # The same session, read through another app on its own engine.
    other = TestClient(
        create_app(second_process), base_url="https://testserver", follow_redirects=False
    )
    other.cookies.update(first.cookies)
    status: dict[str, object] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = other.get(page_url + "/status").json()
        if status["state"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert status["state"] == "succeeded", status
    report = status["report"]
    assert isinstance(report, dict)
    assert (report["lines"], report["created"], report["rejected_total"]) == (702, 700, 1)
    assert [row["line"] for row in report["rejected"]] == [702]
    assert "email" in report["rejected"][0]["reason"]
    listing = other.get("/profiles")
    assert "Recent imports" in listing.text and page_url in listing.text
    assert "people.csv" in other.get("/profiles/imports").text
