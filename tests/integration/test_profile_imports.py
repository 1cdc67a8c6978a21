"""Bulk import of profiles: CSV and JSON Lines, streamed, upsert by identity, rejected rows."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.conftest import Tenant, problem_fields
from tidings.profiles import imports
from tidings.profiles.commands import app as profiles_app
from tidings.profiles.models import profile_identities, profiles
from tidings.profiles.schemas import ImportFormat
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration

CSV = "text/csv"
JSONL = "application/x-ndjson"


def post_import(
    tenant: Tenant, body: str | bytes | Iterator[bytes], content_type: str = CSV, **params: str
) -> dict:
    response = tenant.client.post(
        "/v1/profiles/imports",
        content=body,
        headers={"Content-Type": content_type},
        params=params,
    )
    assert response.status_code == 200, response.text
    report = response.json()
    # The import's job, read back with GET /v1/profile-imports/{id} (test_import_jobs).
    assert report.pop("import_id")
    return report


def streamed(text: str, size: int = 7) -> Iterator[bytes]:
    """The body in small pieces (no Content-Length): rows and quoted fields split anywhere."""
    data = text.encode()
    for start in range(0, len(data), size):
        yield data[start : start + size]


def profile(tenant: Tenant, namespace: str, value: str) -> dict:
    response = tenant.client.get(f"/v1/profiles/{namespace}/{value}")
    assert response.status_code == 200, response.text
    return response.json()


def counts(tenant: Tenant) -> tuple[int, int]:
    with tenant.runtime.db.read() as conn:
        found = conn.execute(
            sa.select(sa.func.count()).where(profiles.c.workspace_id == tenant.workspace_id)
        ).scalar_one()
        identities = conn.execute(
            sa.select(sa.func.count()).where(
                profile_identities.c.workspace_id == tenant.workspace_id
            )
        ).scalar_one()
    return found, identities


def test_csv_import_creates_profiles_with_nested_attributes_and_consent(tenant: Tenant):
    text = (
        "email,phone,identity:crmId,firstName,address.city,address.geo.zip,consent:email,"
        "consent:sms,timezone,locale\n"
        'Ada@Example.COM,+44 (0)7700 900123,C-1,Ada,London,"N1, 9GU",in,out,Europe/London,'
        "en-GB\n"
        'grace@example.com,,,"Grace ""Amazing"" Hopper",,,,,,\n'
    )
    report = post_import(tenant, streamed(text))
    assert report == {
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "rejected": [],
        "rejected_total": 0,
        "lines": 3,
    }
    ada = profile(tenant, "crmId", "C-1")
    assert {(i["namespace"], i["id"]) for i in ada["identities"]} == {
        ("email", "ada@example.com"),
        ("phone", "+447700900123"),
        ("crmId", "C-1"),
    }
    assert ada["attributes"] == {
        "firstName": "Ada",
        "address": {"city": "London", "geo": {"zip": "N1, 9GU"}},
    }
    assert ada["timezone"] == "Europe/London"
    assert ada["locale"] == "en-GB"
    for channel, status in (("email", "in"), ("sms", "out")):
        consent = ada["consent"][channel]
        assert consent["status"] == status
        assert consent["source"] == "import"
        assert datetime.fromisoformat(consent["updated_at"].replace("Z", "+00:00"))
    assert ada["consent"]["push"]["status"] == "unset"
    grace = profile(tenant, "email", "grace@example.com")
    # Empty cells are "not given": no attribute, no consent change, no time zone.
    assert grace["attributes"] == {"firstName": 'Grace "Amazing" Hopper'}
    assert grace["consent"]["email"] == {"status": "unset", "updated_at": None, "source": None}
    assert grace["timezone"] is None


def test_csv_import_merges_into_existing_profiles_like_patch(tenant: Tenant):
    tenant.client.put(
        "/v1/profiles/email/ada@example.com",
        json={
            "attributes": {"firstName": "Ada", "plan": "pro", "address": {"city": "Paris"}},
            "consent": {"email": "in"},
            "timezone": "Europe/Paris",
        },
    )
    text = (
        "email,identity:crmId,plan,address.zip,consent:email,timezone\n"
        "ada@example.com,C-9,free,75001,,\n"
    )
    report = post_import(tenant, text)
    assert (report["created"], report["updated"]) == (0, 1)
    ada = profile(tenant, "crmId", "C-9")
    # Top-level keys replace (as PATCH): `address` is the file's object; others stay.
    assert ada["attributes"] == {"firstName": "Ada", "plan": "free", "address": {"zip": "75001"}}
    assert ada["consent"]["email"]["source"] == "api"
    assert ada["timezone"] == "Europe/Paris"


def test_jsonl_import_creates_and_merges(tenant: Tenant):
    tenant.client.put(
        "/v1/profiles/email/bob@example.com",
        json={"attributes": {"a": 1, "b": 2}, "consent": {"email": "in"}, "locale": "en-US"},
    )
    rows = [
        {
            "identities": [{"namespace": "email", "id": "Bob@Example.com"}],
            "attributes": {"a": None, "b": 3, "nested": {"list": [1, 2]}},
            "consent": {"sms": "in", "email": "out"},
        },
        {
            "identities": [{"namespace": "crmId", "id": "N-1"}],
            "attributes": {"score": 1.5, "vip": True},
            "timezone": "America/New_York",
        },
    ]
    text = "\n".join(json.dumps(row) for row in rows) + "\n"
    report = post_import(tenant, text, JSONL)
    assert (report["created"], report["updated"], report["rejected_total"]) == (1, 1, 0)
    bob = profile(tenant, "email", "bob@example.com")
    assert bob["attributes"] == {"b": 3, "nested": {"list": [1, 2]}}
    assert bob["locale"] == "en-US"
    assert bob["consent"]["email"]["status"] == "out"
    assert bob["consent"]["email"]["source"] == "import"
    assert bob["consent"]["sms"]["source"] == "import"
    created = profile(tenant, "crmId", "N-1")
    assert created["attributes"] == {"score": 1.5, "vip": True}
    assert created["timezone"] == "America/New_York"


def test_rows_of_one_file_build_on_each_other(tenant: Tenant):
    text = (
        "email,identity:crmId,name,tier\n"
        "eve@example.com,,Eve,\n"
        "eve@example.com,E-1,,gold\n"
        ",E-1,Eve A.,\n"
    )
    report = post_import(tenant, text)
    assert (report["created"], report["updated"]) == (1, 2)
    eve = profile(tenant, "crmId", "E-1")
    assert eve["attributes"] == {"name": "Eve A.", "tier": "gold"}
    assert counts(tenant) == (1, 2)


def test_rejected_csv_rows_carry_their_line_and_reason(tenant: Tenant):
    tenant.client.put("/v1/profiles/email/one@example.com", json={})
    tenant.client.put("/v1/profiles/email/two@example.com", json={})
    text = (
        "email,phone,note,consent:email,locale\n"  # 1
        'ok@example.com,,"a note\non two lines",in,\n'  # 2-3
        "not-an-email,,,,\n"  # 4
        "\n"  # 5: blank, skipped
        "x@example.com,0612345678,,,\n"  # 6
        "y@example.com,,,maybe,\n"  # 7
        "z@example.com,,\n"  # 8
        'w@example.com,,"bad"quote,,\n'  # 9
        ",,no identity,,\n"  # 10
        "v@example.com,,,,not a locale\n"  # 11
        "last@example.com,,,,fr-FR"  # 12, no final newline
    )
    report = post_import(tenant, streamed(text, 5))
    reasons = {rejection["line"]: rejection["reason"] for rejection in report["rejected"]}
    assert sorted(reasons) == [4, 6, 7, 8, 9, 10, 11]
    assert reasons[4].startswith("email: is not a valid email address")
    assert reasons[6] == "phone: must be an E.164 phone number such as +14155550100"
    assert reasons[7] == "consent:email: must be in, out or unset"
    assert reasons[8] == "has 3 cells where the header has 5"
    assert reasons[9].startswith("is not valid CSV")
    assert reasons[10] == "names no identity"
    assert reasons[11] == "locale: is not a language tag such as fr-FR"
    assert report["rejected_total"] == 7
    assert (report["created"], report["lines"]) == (2, 12)
    assert profile(tenant, "email", "ok@example.com")["attributes"] == {
        "note": "a note\non two lines"
    }
    assert profile(tenant, "email", "last@example.com")["locale"] == "fr-FR"


def test_rejected_jsonl_rows_carry_their_line_and_reason(tenant: Tenant):
    tenant.client.put("/v1/profiles/email/one@example.com", json={})
    tenant.client.put("/v1/profiles/email/two@example.com", json={})
    deep: dict = {}
    cursor = deep
    for _ in range(12):
        cursor["x"] = {}
        cursor = cursor["x"]
    lines = [
        '{"identities": [{"namespace": "email", "id": "fine@example.com"}]}',  # 1
        "{not json",  # 2
        '{"identities": [{"namespace": "email", "id": "a@example.com"}], "consent": '
        '{"email": "yes"}}',  # 3
        json.dumps(
            {"identities": [{"namespace": "email", "id": "b@example.com"}], "attributes": deep}
        ),
        '{"attributes": {"a": 1}}',  # 5
        "",  # 6: blank
        '{"identities": [{"namespace": "email", "id": "one@example.com"}, '
        '{"namespace": "email", "id": "two@example.com"}]}',  # 7
        '{"identities": [{"namespace": "email", "id": "c@example.com"}], "extra": 1}',  # 8
        '{"identities": [{"namespace": "phone", "id": "12"}], "timezone": "Mars/Base"}',  # 9
        "[1, 2]",  # 10
    ]
    report = post_import(tenant, "\n".join(lines) + "\n", JSONL)
    reasons = {rejection["line"]: rejection["reason"] for rejection in report["rejected"]}
    assert reasons == {
        2: "is not valid JSON",
        3: "consent.email: Input should be 'in', 'out' or 'unset'",
        4: "attributes: nest deeper than 10 levels",
        5: "names no identity",
        7: "these identities belong to different profiles; merge them first",
        8: "extra: Extra inputs are not permitted",
        9: "identities.0.id: must be an E.164 phone number such as +14155550100; "
        "timezone: is not an IANA time zone such as Europe/Paris",
        10: "Input should be an object",
    }
    assert (report["created"], report["lines"]) == (1, 10)


def test_a_row_over_the_size_limit_is_rejected_alone(tenant: Tenant):
    big = "x" * (imports.MAX_ROW_BYTES + 10)
    csv_text = f"email,note\nbig@example.com,{big}\nsmall@example.com,ok\n"
    report = post_import(tenant, streamed(csv_text, 4096))
    assert report["rejected"] == [
        {"line": 2, "reason": f"is larger than {imports.MAX_ROW_BYTES} bytes"}
    ]
    assert report["created"] == 1
    # The same in JSON Lines: the next line imports.
    jsonl = (
        json.dumps({"identities": [{"namespace": "crm", "id": "1"}], "attributes": {"n": big}})
        + "\n"
        + json.dumps({"identities": [{"namespace": "crm", "id": "2"}]})
    )
    report = post_import(tenant, streamed(jsonl, 1000), JSONL)
    assert [r["line"] for r in report["rejected"]] == [1]
    assert (report["created"], report["lines"]) == (1, 2)


def test_reimport_is_idempotent(tenant: Tenant):
    text = "email,identity:crmId,name,consent:email\n" + "".join(
        f"user{i}@example.com,C{i},User {i},in\n" for i in range(1200)
    )
    first = post_import(tenant, text)
    assert (first["created"], first["updated"], first["unchanged"]) == (1200, 0, 0)
    consent_before = profile(tenant, "crmId", "C7")["consent"]["email"]
    second = post_import(tenant, text)
    assert (second["created"], second["updated"], second["unchanged"]) == (0, 0, 1200)
    assert counts(tenant) == (1200, 2400)
    # Consent that did not change keeps the time of its change.
    assert profile(tenant, "crmId", "C7")["consent"]["email"] == consent_before


def test_format_from_the_query_or_the_content_type(tenant: Tenant):
    report = post_import(tenant, "email\nq@example.com\n", "application/octet-stream", format="csv")
    assert report["created"] == 1
    response = tenant.client.post(
        "/v1/profiles/imports", content=b"email\n", params={"format": "xml"}
    )
    assert response.status_code == 422
    assert problem_fields(response) == ["format"]
    response = tenant.client.post(
        "/v1/profiles/imports", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert problem_fields(response) == ["format"]


def test_a_bad_header_is_refused_with_its_columns(tenant: Tenant):
    response = tenant.client.post(
        "/v1/profiles/imports",
        content=b"name,consent:fax,a..b,name\nx,y,z,w\n",
        headers={"Content-Type": CSV},
    )
    assert response.status_code == 422
    problem = response.json()
    assert [(e["field"], e["line"], e["column"]) for e in problem["errors"]] == [
        ("header", 1, 2),
        ("header", 1, 3),
        ("header", 1, 4),
    ]
    response = tenant.client.post(
        "/v1/profiles/imports", content=b"name,city\nx,y\n", headers={"Content-Type": CSV}
    )
    assert response.status_code == 422
    assert "identity" in response.json()["errors"][0]["message"]
    assert counts(tenant) == (0, 0)


def test_imports_need_profiles_write_and_stay_in_the_keys_workspace(
    tenant: Tenant, other_tenant: Tenant
):
    reader = tenant.client_with(Scope.PROFILES_READ)
    refused = reader.post(
        "/v1/profiles/imports", content=b"email\na@example.com\n", headers={"Content-Type": CSV}
    )
    assert refused.status_code == 403
    writer = other_tenant.client_with(Scope.PROFILES_WRITE)
    done = writer.post(
        "/v1/profiles/imports",
        content=b"email\ntenant@example.com\n",
        headers={"Content-Type": CSV},
    )
    assert done.json()["created"] == 1
    assert other_tenant.client.get("/v1/profiles/email/tenant@example.com").status_code == 200
    assert tenant.client.get("/v1/profiles/email/tenant@example.com").status_code == 404
    # The same identity in another workspace is another profile.
    assert post_import(tenant, "email\ntenant@example.com\n")["created"] == 1


def test_the_command_imports_a_file_with_a_report(tenant: Tenant, tmp_path):
    name = tenant.client.get("/v1/workspace").json()["name"]
    path = tmp_path / "people.csv"
    path.write_text("email,name,consent:email\ncli@example.com,Cli,in\nbroken,,\n")
    runner = CliRunner()
    result = runner.invoke(
        profiles_app, ["import", str(path), "--workspace", name], obj=tenant.runtime
    )
    assert result.exit_code == 0, result.output
    assert "1 created" in result.output
    assert "line 3: email: is not a valid email address" in result.output
    assert profile(tenant, "email", "cli@example.com")["attributes"] == {"name": "Cli"}
    # A job like the API's and the console's, listed with them.
    [job] = tenant.client.get("/v1/profile-imports", params={"limit": 1}).json()["items"]
    assert (job["source"], job["file_name"], job["state"]) == ("cli", "people.csv", "succeeded")
    assert (job["created"], job["rejected_total"], job["created_by"]) == (1, 1, None)
    # The consent it set names the job in the profile's history.
    [change] = tenant.client.get("/v1/profiles/email/cli@example.com/consent-history").json()[
        "items"
    ]
    assert (change["source"], change["detail"]) == ("import", f"import:{job['id']}")

    jsonl = tmp_path / "people.data"
    jsonl.write_text(
        json.dumps(
            {
                "identities": [{"namespace": "email", "id": "cli@example.com"}],
                "attributes": {"x": 1},
            }
        )
        + "\n"
    )
    result = runner.invoke(
        profiles_app,
        ["import", str(jsonl), "--format", "jsonl", "--workspace", name, "--json"],
        obj=tenant.runtime,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["updated"] == 1

    unknown = runner.invoke(
        profiles_app, ["import", str(jsonl), "--workspace", name], obj=tenant.runtime
    )
    assert unknown.exit_code == 2
    missing = runner.invoke(
        profiles_app, ["import", str(path), "--workspace", "nope"], obj=tenant.runtime
    )
    assert missing.exit_code == 1
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("name\nx\n")
    refused = runner.invoke(
        profiles_app, ["import", str(bad_header), "--workspace", name], obj=tenant.runtime
    )
    assert refused.exit_code == 1
    assert "names no identity column" in refused.output


def _peak_of_import(tenant: Tenant, rows: int, first: int) -> tuple[int, int]:
    """The tracemalloc peak of importing a generated CSV (made as it is read), and its size."""
    header = "email,identity:crmId,name,bio,consent:email\n"
    row = "person{0}@example.com,CRM-{0:08d},Person {0},{1},in\n"
    bio = "lorem ipsum " * 330  # rows of 4 KB: a large file for few rows

    def chunks() -> Iterator[bytes]:
        yield header.encode()
        for start in range(first, first + rows, 100):
            yield "".join(row.format(i, bio) for i in range(start, start + 100)).encode()

    size = len(header) + sum(len(row.format(i, bio)) for i in range(first, first + rows))
    tracemalloc.start()
    try:
        report = imports.import_profiles(
            tenant.runtime.db, tenant.workspace_id, chunks(), ImportFormat.CSV
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (report.created, report.lines) == (rows, rows + 1), report.rejected[:3]
    return peak, size


def test_memory_stays_flat_whatever_the_size_of_the_file(tenant: Tenant):
    """A file four times larger does not take more memory: one batch at a time."""
    # Caches filled once per process (compiled statements, validators) are not the import's.
    _peak_of_import(tenant, 100, 0)
    small, _ = _peak_of_import(tenant, 1_000, 1_000)
    large, large_size = _peak_of_import(tenant, 4_000, 10_000)
    assert large_size > 16_000_000
    # A batch of 500 rows of 4 KB is 2 MB of text: a few copies of it, whatever the file.
    assert large < small * 1.25 + 1_000_000, (small, large)
    assert large < large_size / 1.5, (large, large_size)
