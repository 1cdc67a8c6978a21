"""The suppression list: normalization, domain matches, upsert, soft bounces, the policy,
batched lookups, CSV import, problems, tenancy, and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.conftest import Tenant, problem_fields
from tidings import cli
from tidings.clock import utcnow
from tidings.config import Settings
from tidings.suppressions import service as suppressions
from tidings.suppressions.service import SuppressionMatch, blocks
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration


def add(tenant: Tenant, **entry: Any) -> dict[str, Any]:
    response = tenant.client.post("/v1/suppressions", json=entry)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def added(tenant: Tenant, value: str, **entry: Any) -> dict[str, Any]:
    suppression: dict[str, Any] = add(tenant, value=value, **entry)["suppression"]
    return suppression


def values(tenant: Tenant, **params: Any) -> list[str]:
    response = tenant.client.get("/v1/suppressions", params=params)
    assert response.status_code == 200, response.text
    return [item["value"] for item in response.json()["items"]]


def lookup(tenant: Tenant, addresses: list[str], channel: str = "email") -> dict[str, Any]:
    with tenant.runtime.db.read() as conn:
        return suppressions.suppressed(conn, tenant.workspace_id, channel, addresses)


# ---------------------------------------------------------------- adding and normalizing


@pytest.mark.parametrize(
    ("entry", "kind", "value"),
    [
        ({"value": " Ada.Lovelace@Example.COM "}, "address", "ada.lovelace@example.com"),
        ({"value": "Example.ORG"}, "domain", "example.org"),
        ({"value": "@Mail.Example.org."}, "domain", "mail.example.org"),
        ({"value": "XN--MNCHEN-3YA.de"}, "domain", "münchen.de"),
        ({"value": "Ada@MÜNCHEN.de"}, "address", "ada@münchen.de"),
        ({"value": "+44 (0)7700 900123", "channel": "sms"}, "address", "+447700900123"),
        ({"value": "example.net", "kind": "domain"}, "domain", "example.net"),
    ],
)
def test_values_are_normalized_and_their_kind_inferred(
    tenant: Tenant, entry: dict[str, str], kind: str, value: str
):
    suppression = added(tenant, **entry)
    assert (suppression["kind"], suppression["value"]) == (kind, value)
    assert suppression["channel"] == entry.get("channel", "email")
    assert suppression["type"] == "manual"
    assert suppression["source"] == "api"
    assert suppression["soft_bounce_count"] == 0
    fetched = tenant.client.get(f"/v1/suppressions/{suppression['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == suppression


def test_readding_updates_type_and_source_and_keeps_the_entry(tenant: Tenant):
    first = add(tenant, value="ada@example.com", reason="asked by phone")
    assert (first["added"], first["updated"], first["rejected"]) == (1, 0, [])
    again = add(tenant, value="ADA@example.com", type="hard_bounce", source="ses")
    assert (again["added"], again["updated"]) == (0, 1)
    suppression = again["suppression"]
    assert suppression["id"] == first["suppression"]["id"]
    assert suppression["type"] == "hard_bounce"
    assert suppression["source"] == "ses"
    assert suppression["reason"] == "asked by phone"  # kept when none is sent
    assert suppression["created_at"] == first["suppression"]["created_at"]
    assert suppression["updated_at"] >= first["suppression"]["updated_at"]
    assert values(tenant) == ["ada@example.com"]


def test_a_batch_adds_the_valid_entries_and_rejects_the_others_by_index(tenant: Tenant):
    add(tenant, value="old@example.com")
    response = tenant.client.post(
        "/v1/suppressions",
        json={
            "entries": [
                {"value": "new@example.com", "type": "spam_complaint"},
                {"value": "not an address@"},
                {"value": "OLD@example.com", "type": "hard_bounce"},
                {"value": "example.com"},
                {"value": "12", "channel": "sms"},
                {"value": "example.com", "kind": "domain", "type": "hard_bounce"},
                {"value": "a@b.example", "channel": "sms", "kind": "domain"},
            ]
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["added"] == 2  # new@example.com, example.com (given twice, the last wins)
    assert body["updated"] == 1
    assert "suppression" not in body
    assert [(r["index"], r["value"]) for r in body["rejected"]] == [
        (1, "not an address@"),
        (4, "12"),
        (6, "a@b.example"),
    ]
    assert "not a valid email address" in body["rejected"][0]["reason"]
    assert "E.164" in body["rejected"][1]["reason"]
    assert "sms suppressions are numbers" in body["rejected"][2]["reason"]
    assert values(tenant, type="hard_bounce") == ["example.com", "old@example.com"]


def test_invalid_input_is_a_problem_naming_the_field(tenant: Tenant):
    cases = [
        ({"value": "ada@"}, ["value"]),
        ({"value": "ada@example.com", "kind": "domain"}, ["value"]),
        ({"value": "no-dots", "kind": "domain"}, ["value"]),
        ({"value": "+14155550100", "channel": "sms", "kind": "domain"}, ["kind"]),
        ({"value": "ada@example.com", "type": "bounced"}, ["type"]),
        ({"value": "ada@example.com", "colour": "red"}, ["colour"]),
        ({"value": ""}, ["value"]),
        ({"value": "ada@example.com", "source": "x" * 201}, ["source"]),
        ({"entries": []}, ["entries"]),
        ({"entries": [{"value": "a@example.com", "type": "nope"}]}, ["entries.0.type"]),
        ({"entries": [{"value": "a@example.com"}] * 10_001}, ["entries"]),
    ]
    for body, fields in cases:
        response = tenant.client.post("/v1/suppressions", json=body)
        assert response.status_code == 422, (body, response.text)
        assert problem_fields(response) == fields, body
    malformed = tenant.client.post(
        "/v1/suppressions", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert problem_fields(malformed) == ["body"]
    assert values(tenant) == []


# ---------------------------------------------------------------- listing and removing


def test_list_filters_and_pages_newest_first(tenant: Tenant):
    add(tenant, value="a_1@example.com", type="hard_bounce")
    add(tenant, value="ab1@example.com")
    add(tenant, value="example.org", type="spam_complaint")
    add(tenant, value="+14155550100", channel="sms")
    assert values(tenant) == ["+14155550100", "example.org", "ab1@example.com", "a_1@example.com"]
    assert values(tenant, channel="sms") == ["+14155550100"]
    assert values(tenant, type="spam_complaint") == ["example.org"]
    assert values(tenant, kind="domain") == ["example.org"]
    # `_` is a letter here, not LIKE's wildcard.
    assert values(tenant, prefix="A_") == ["a_1@example.com"]
    assert values(tenant, prefix="a") == ["ab1@example.com", "a_1@example.com"]
    assert values(tenant, channel="sms", prefix="+1 415") == ["+14155550100"]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = tenant.client.get("/v1/suppressions", params=params).json()
        seen.extend(item["value"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == values(tenant)
    bad = tenant.client.get("/v1/suppressions", params={"type": "bounced", "limit": 0})
    assert bad.status_code == 422
    assert sorted(problem_fields(bad)) == ["limit", "type"]


def test_remove_by_id_and_by_value(tenant: Tenant):
    ada = added(tenant, value="ada@example.com")
    domain = added(tenant, value="example.org")
    phone = added(tenant, value="+14155550100", channel="sms")

    assert tenant.client.delete(f"/v1/suppressions/{ada['id']}").status_code == 204
    again = tenant.client.delete(f"/v1/suppressions/{ada['id']}")
    assert again.status_code == 404
    assert again.headers["content-type"].startswith("application/problem+json")
    assert tenant.client.get(f"/v1/suppressions/{ada['id']}").status_code == 404

    removed = tenant.client.delete("/v1/suppressions", params={"value": "@EXAMPLE.org"})
    assert removed.status_code == 204
    assert tenant.client.get(f"/v1/suppressions/{domain['id']}").status_code == 404
    by_phone = tenant.client.delete(
        "/v1/suppressions", params={"channel": "sms", "value": "+1 415 555 0100"}
    )
    assert by_phone.status_code == 204, by_phone.text
    assert tenant.client.get(f"/v1/suppressions/{phone['id']}").status_code == 404

    missing = tenant.client.delete("/v1/suppressions", params={"value": "ada@example.com"})
    assert missing.status_code == 404
    invalid = tenant.client.delete("/v1/suppressions", params={"value": "ada@"})
    assert invalid.status_code == 422
    assert problem_fields(invalid) == ["value"]
    assert problem_fields(tenant.client.delete("/v1/suppressions")) == ["value"]


def test_scopes_reads_need_profiles_read_and_writes_profiles_write(tenant: Tenant):
    entry_id = added(tenant, value="ada@example.com")["id"]
    reader = tenant.client_with(Scope.PROFILES_READ)
    assert reader.get("/v1/suppressions").status_code == 200
    assert reader.get(f"/v1/suppressions/{entry_id}").status_code == 200
    assert reader.post("/v1/suppressions", json={"value": "b@example.com"}).status_code == 403
    assert reader.delete(f"/v1/suppressions/{entry_id}").status_code == 403
    assert reader.post("/v1/suppressions/import", content=b"value\n").status_code == 403
    writer = tenant.client_with(Scope.PROFILES_WRITE)
    assert writer.get("/v1/suppressions").status_code == 403
    assert writer.post("/v1/suppressions", json={"value": "b@example.com"}).status_code == 201
    campaigns = tenant.client_with(Scope.CAMPAIGNS_READ)
    assert campaigns.get("/v1/suppressions").status_code == 403


def test_another_workspace_sees_nothing(tenant: Tenant, other_tenant: Tenant):
    ada = added(tenant, value="ada@example.com")
    added(tenant, value="example.org")
    assert values(other_tenant) == []
    assert other_tenant.client.get(f"/v1/suppressions/{ada['id']}").status_code == 404
    assert other_tenant.client.delete(f"/v1/suppressions/{ada['id']}").status_code == 404
    gone = other_tenant.client.delete("/v1/suppressions", params={"value": "ada@example.com"})
    assert gone.status_code == 404
    assert lookup(other_tenant, ["ada@example.com", "bob@example.org"]) == {}
    # The same value in the other workspace is an entry of its own.
    assert add(other_tenant, value="ada@example.com")["added"] == 1
    assert tenant.client.get(f"/v1/suppressions/{ada['id']}").status_code == 200


# ---------------------------------------------------------------- lookups and the policy


def test_domains_cover_their_addresses_and_subdomains_only(tenant: Tenant):
    add(tenant, value="example.com")
    add(tenant, value="ada@other.org", type="hard_bounce")
    add(tenant, value="+14155550100", channel="sms")
    found = lookup(
        tenant,
        [
            "ada@example.com",
            "Bob@Mail.EXAMPLE.com",
            "carol@notexample.com",
            "ADA@other.org",
            "bob@other.org",
            "ada@example.co",
            "not an address",
        ],
    )
    assert sorted(found) == ["ADA@other.org", "Bob@Mail.EXAMPLE.com", "ada@example.com"]
    assert found["ada@example.com"].kind == "domain"
    assert found["ada@example.com"].value == "example.com"
    assert found["ada@example.com"].reason_code == "suppressed_domain"
    assert found["Bob@Mail.EXAMPLE.com"].value == "example.com"
    assert found["ADA@other.org"].reason_code == "suppressed_address"
    assert found["ADA@other.org"].type == "hard_bounce"
    with tenant.runtime.db.read() as conn:
        one = suppressions.suppression_for(conn, tenant.workspace_id, "email", "x@example.com")
        assert one is not None and one.value == "example.com"
        assert suppressions.suppression_for(conn, tenant.workspace_id, "email", "x@a.org") is None
        # Channels are apart: an sms entry never suppresses email and the other way round.
        sms = suppressions.suppression_for(conn, tenant.workspace_id, "sms", "+1 415 555 0100")
        assert sms is not None and sms.value == "+14155550100"
        assert suppressions.suppression_for(conn, tenant.workspace_id, "sms", "example.com") is None


def test_the_deciding_match_is_one_no_policy_lets_through(tenant: Tenant):
    # A complaint on the address, a manual block on its domain: the domain decides, so a
    # transactional configuration that accepts complaints is still blocked.
    add(tenant, value="ada@example.com", type="spam_complaint")
    add(tenant, value="example.com", type="manual")
    add(tenant, value="bob@example.org", type="spam_complaint")
    add(tenant, value="mail.example.org", type="spam_complaint")
    add(tenant, value="example.org", type="spam_complaint")
    found = lookup(tenant, ["ada@example.com", "bob@example.org", "carol@mail.example.org"])
    assert (found["ada@example.com"].kind, found["ada@example.com"].type) == ("domain", "manual")
    assert blocks(found["ada@example.com"], "transactional", allow_complaints=True)
    # Among complaints alone: the address first, then the most specific domain.
    assert found["bob@example.org"].kind == "address"
    assert found["carol@mail.example.org"].value == "mail.example.org"
    assert not blocks(found["carol@mail.example.org"], "transactional", allow_complaints=True)


def test_a_batch_lookup_costs_two_queries(tenant: Tenant):
    for n in range(0, 300, 7):
        add(tenant, value=f"user{n}@example.com")
    add(tenant, value="blocked.example.net")
    addresses = [f"user{n}@example.com" for n in range(300)]
    addresses += [f"user{n}@blocked.example.net" for n in range(100)]
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    engine = tenant.runtime.db.engine
    with tenant.runtime.db.read() as conn:
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            found = suppressions.suppressed(conn, tenant.workspace_id, "email", addresses)
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 2, statements
    assert len(found) == len(range(0, 300, 7)) + 100
    assert "user7@example.com" in found and "user8@example.com" not in found


def match(type: str) -> SuppressionMatch:
    return SuppressionMatch(
        id="x", channel="email", kind="address", value="a@example.com", type=type, source="api"
    )


TYPES = ["hard_bounce", "spam_complaint", "manual", "soft_bounce"]


@pytest.mark.parametrize("allow_complaints", [False, True])
@pytest.mark.parametrize("category", ["marketing", "transactional"])
@pytest.mark.parametrize("type", TYPES)
def test_blocks_policy_table(type: str, category: str, allow_complaints: bool):
    # Only a transactional configuration that opted in sends to complaint suppressions.
    expected = not (category == "transactional" and allow_complaints and type == "spam_complaint")
    assert blocks(match(type), category, allow_complaints) is expected
    assert blocks(None, category, allow_complaints) is False


# ---------------------------------------------------------------- soft bounces


def test_soft_bounces_become_a_suppression_at_the_threshold(tenant: Tenant):
    assert Settings().soft_bounce_threshold == 3
    db, ws = tenant.runtime.db, tenant.workspace_id
    now = utcnow()

    def bounce(address: str, **options: Any) -> suppressions.SoftBounce:
        with db.write() as conn:
            return suppressions.record_soft_bounce(conn, ws, address, "dsn", now, **options)

    assert bounce("Ada@Example.com") == suppressions.SoftBounce(count=1, suppressed=False)
    assert bounce("ada@example.com").count == 2
    assert lookup(tenant, ["ada@example.com"]) == {}
    assert values(tenant) == []
    third = bounce("ada@example.com")
    assert third == suppressions.SoftBounce(count=3, suppressed=True, created=True)
    found = lookup(tenant, ["ada@example.com"])["ada@example.com"]
    assert (found.type, found.source) == ("soft_bounce", "dsn")
    assert bounce("ada@example.com") == suppressions.SoftBounce(count=4, suppressed=True)
    listed = tenant.client.get("/v1/suppressions").json()["items"]
    assert [(i["type"], i["soft_bounce_count"], i["reason"]) for i in listed] == [
        ("soft_bounce", 4, "3 soft bounces")
    ]

    # A delivery in between starts the count again.
    bounce("bob@example.com")
    bounce("bob@example.com")
    with db.write() as conn:
        suppressions.reset_soft_bounces(conn, ws, "BOB@example.com")
    assert bounce("bob@example.com").count == 1
    # The threshold is the caller's (TIDINGS_SOFT_BOUNCE_THRESHOLD).
    assert bounce("carol@example.com", threshold=1).suppressed
    # A suppression of another type keeps its type and counts on.
    add(tenant, value="dan@example.com", type="hard_bounce")
    assert bounce("dan@example.com") == suppressions.SoftBounce(count=1, suppressed=True)
    assert lookup(tenant, ["dan@example.com"])["dan@example.com"].type == "hard_bounce"
    # Phones count too.
    for _ in range(3):
        last = bounce("+1 415 555 0100", channel="sms", threshold=3)
    assert last.created
    with pytest.raises(Exception, match="valid email"):
        bounce("not-an-address")


# ---------------------------------------------------------------- CSV import


def import_csv(tenant: Tenant, body: bytes | Iterator[bytes], **params: str) -> Any:
    return tenant.client.post(
        "/v1/suppressions/import",
        content=body,
        params=params,
        headers={"Content-Type": "text/csv"},
    )


def test_csv_import_reports_rejected_lines_by_number(tenant: Tenant):
    add(tenant, value="old@example.com")
    body = (
        "\ufeffValue,Type,Reason\r\n"
        "ada@example.com,hard_bounce,550 5.1.1 unknown user\r\n"
        "OLD@example.com,spam_complaint,\r\n"
        "\r\n"
        "not-an-address@,manual,\r\n"
        '"quoted@example.com",manual,"two\r\nlines, with a comma"\r\n'
        "example.org,,\r\n"
        "x@example.net,bounced,\r\n"
        "a@example.net,manual,reason,extra\r\n"
        ",manual,\r\n"
        "ada@example.com,manual,again\r\n"
        "last@example.com"
    ).encode()
    response = import_csv(tenant, body)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["imported"] == 4  # ada, quoted, example.org, last
    assert report["updated"] == 2  # old, and ada given twice
    assert report["rejected"] == [
        {"line": 5, "reason": report["rejected"][0]["reason"]},
        {
            "line": 9,
            "reason": "type 'bounced' is not one of "
            "hard_bounce, spam_complaint, manual, soft_bounce",
        },
        {"line": 10, "reason": "has 4 values; the header names 3 columns"},
        {"line": 11, "reason": "value is empty"},
    ]
    assert report["rejected"][0]["reason"].startswith("value is not a valid email address")
    assert report["rejected_count"] == 4
    assert report["lines"] == 13  # the quoted reason spans lines 6 and 7
    items = {i["value"]: i for i in tenant.client.get("/v1/suppressions").json()["items"]}
    assert items["old@example.com"]["type"] == "spam_complaint"
    assert items["old@example.com"]["source"] == "csv"
    assert items["quoted@example.com"]["reason"] == "two\nlines, with a comma"
    assert items["ada@example.com"]["reason"] == "again"
    assert items["example.org"]["kind"] == "domain"


def test_csv_import_streams_batches_and_bad_bytes(tenant: Tenant):
    def chunks() -> Iterator[bytes]:
        yield b"value,type,channel\n"
        for n in range(2500):
            # Lines split across chunks, mid-character included.
            yield f"user{n}@exämple.com,hard_bounce,email\n".encode()[:7]
            yield f"user{n}@exämple.com,hard_bounce,email\n".encode()[7:]
        yield b"bad\xff@example.com,manual,email\n"
        yield b"+14155550100,manual,sms\n"
        yield b"+14155550100,manual,fax\n"
        yield b"x" * 10_000 + b"@example.com\n"
        yield b"z" * 3000  # a long line that arrives in pieces is dropped as it comes
        yield b"z" * 3000
        yield b"z" * 3000 + b"@example.com\n"
        yield b"y@example.com,manual,email"

    report = import_csv(tenant, chunks()).json()
    assert report["imported"] == 2502, report
    assert [(r["line"], r["reason"]) for r in report["rejected"]] == [
        (2502, "is not valid UTF-8"),
        (2504, "channel 'fax' is not one of email, sms"),
        (2505, "is longer than 4096 characters"),
        (2506, "is longer than 4096 characters"),
    ]
    assert report["lines"] == 2507
    assert values(tenant, channel="sms") == ["+14155550100"]
    assert "user2499@exämple.com" in lookup(tenant, ["user2499@exämple.com"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (b"ada@example.com,manual,\n", "line 1 must be a header"),
        (b"value,type,colour\n", "unknown column 'colour'"),
        (b"value,value\n", "appears twice"),
    ],
)
def test_csv_import_without_a_proper_header_is_refused(tenant: Tenant, body: bytes, message: str):
    response = import_csv(tenant, body)
    assert response.status_code == 422, response.text
    assert problem_fields(response) == ["body"]
    assert message in response.json()["errors"][0]["message"]
    assert values(tenant) == []


def test_csv_import_of_sms_numbers_and_an_unclosed_quote(tenant: Tenant):
    response = import_csv(
        tenant, b'value,reason\n+1 (415) 555-0101,"a\n+14155550102,b\n', channel="sms"
    )
    report = response.json()
    assert report["imported"] == 0
    assert report["rejected"] == [{"line": 2, "reason": "has a quoted value that is never closed"}]
    response = import_csv(tenant, b"value\n+1 (415) 555-0101\n", channel="sms")
    assert response.json()["imported"] == 1
    assert values(tenant, channel="sms") == ["+14155550101"]
    assert import_csv(tenant, b"value\n", channel="fax").status_code == 422


# ---------------------------------------------------------------- the CLI


def test_cli_adds_lists_imports_and_removes(
    tenant: Tenant, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
):
    settings = tenant.runtime.settings
    monkeypatch.setenv("TIDINGS_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("TIDINGS_LOG_LEVEL", "warning")
    name = workspaces.get_workspace(tenant.runtime.db, tenant.workspace_id)["name"]
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli.app, ["suppressions", *args, "--workspace", name])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    assert "added: email address ada@example.com (hard_bounce)" in run(
        "add", "Ada@Example.com", "--type", "hard_bounce"
    )
    assert "updated" in run("add", "ada@example.com", "--reason", "by hand")
    run("add", "+1 415 555 0100", "--channel", "sms")
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("value,type,reason\nexample.org,spam_complaint,\nbad@,manual,\n")
    imported = run("import", str(csv_file))
    assert "1 imported, 0 updated, 1 rejected (3 lines)" in imported
    assert "line 3: value is not a valid email address" in imported
    listed = run("list")
    assert "ada@example.com" in listed and "example.org" in listed and "cli" in listed
    assert "+14155550100" in run("list", "--channel", "sms")
    assert "removed: email domain example.org" in run("remove", "@example.org")
    rows = tenant.client.get("/v1/suppressions").json()["items"]
    assert sorted((r["value"], r["type"], r["source"]) for r in rows) == [
        ("+14155550100", "manual", "cli"),
        ("ada@example.com", "manual", "cli"),
    ]
    missing = runner.invoke(cli.app, ["suppressions", "remove", "nobody@example.com"])
    assert missing.exit_code != 0
