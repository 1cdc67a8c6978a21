"""The console's search of profiles by the start of an identity: the same answers on both
backends, and an index range that stops at the limit, whatever PostgreSQL's collation."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import BACKENDS, Tenant
from tests.integration.test_migrations import _alembic, _fresh_runtime
from tests.support.postgres import PostgresCluster
from tidings.config import Settings
from tidings.console import profiles as console_profiles
from tidings.console.profiles import _following, first_identities, search, suggestions
from tidings.db import migrate as migrations
from tidings.runtime import Runtime
from tidings.vocabulary import EMAIL_NAMESPACE
from tidings.workspaces import service as workspaces

pytestmark = pytest.mark.integration

INDEX = "ix_profile_identities_workspace_value"


def put(tenant: Tenant, email: str, **identities: str) -> None:
    response = tenant.client.put(
        f"/v1/profiles/email/{email}",
        json={"identities": [{"namespace": ns, "id": value} for ns, value in identities.items()]},
    )
    assert response.status_code in (200, 201), response.text


def found(tenant: Tenant, query: str) -> list[str]:
    return sorted(
        value
        for profile in search(tenant.runtime.db, tenant.workspace_id, query)
        for namespace, value in profile["identities"]
        if namespace == EMAIL_NAMESPACE
    )


def test_search_and_suggestions_match_identity_starts_exactly(tenant: Tenant):
    tag = uuid.uuid4().hex[:8]
    put(tenant, f"ada.{tag}@example.com", crm_id=f"CRM-{tag}-1")
    put(tenant, f"adb.{tag}@example.com")
    put(tenant, f"a_d.{tag}@example.com")
    put(tenant, f"axd.{tag}@example.com")
    put(tenant, f"zoë.{tag}@example.com")

    assert found(tenant, "ada.") == [f"ada.{tag}@example.com"]
    # LIKE's wildcards are plain characters here.
    assert found(tenant, "a_d.") == [f"a_d.{tag}@example.com"]
    assert found(tenant, "ax") == [f"axd.{tag}@example.com"]
    # An address typed in capitals finds the lowercase address stored.
    assert found(tenant, "ADA.") == [f"ada.{tag}@example.com"]
    # Other identities match as stored, case and all.
    assert found(tenant, f"CRM-{tag}") == [f"ada.{tag}@example.com"]
    assert found(tenant, f"crm-{tag}") == []
    assert found(tenant, f"crm_id:CRM-{tag}") == [f"ada.{tag}@example.com"]
    assert found(tenant, "zoë.") == [f"zoë.{tag}@example.com"]
    assert found(tenant, f"zz-{tag}") == []

    picked = suggestions(tenant.runtime.db, tenant.workspace_id, f"CRM-{tag}")
    # The profile found by its CRM id offers its address too.
    assert {item["value"] for item in picked} == {f"ada.{tag}@example.com", f"crm_id:CRM-{tag}-1"}


@pytest.mark.parametrize("probe", [1000, 3], ids=["from-the-index", "walking-the-newest"])
def test_a_search_many_identities_match_walks_the_newest_profiles_with_the_same_answers(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch, probe: int
):
    monkeypatch.setattr(console_profiles, "SEARCH_PROBE", probe)
    tag = uuid.uuid4().hex[:8]
    emails = [f"{tag}-{n}@example.com" for n in range(6)]
    for email in emails:
        put(tenant, email)
    put(tenant, f"other-{tag}@example.com")
    newest_first = [
        profile["identities"][0][1]
        for profile in search(tenant.runtime.db, tenant.workspace_id, tag, limit=4)
    ]
    assert newest_first == emails[::-1][:4]
    assert found(tenant, f"x{tag}") == []
    assert found(tenant, f"{tag}-5") == [emails[5]]


def test_suggestions_come_in_identity_order_and_stop_at_the_limit(
    tenant: Tenant, other_tenant: Tenant
):
    tag = uuid.uuid4().hex[:8]
    emails = [f"{tag}-{n:02d}@example.com" for n in range(12)]
    for email in reversed(emails):
        put(tenant, email)
    put(other_tenant, f"{tag}-00@example.com")

    picked = suggestions(tenant.runtime.db, tenant.workspace_id, tag, limit=5)
    assert [item["id"] for item in picked] == emails[:5]
    everything = suggestions(tenant.runtime.db, tenant.workspace_id, tag, limit=50)
    assert [item["id"] for item in everything] == emails


@pytest.mark.parametrize(
    ("prefix", "following"),
    [
        ("ada", "adb"),
        ("a", "b"),
        ("a\U0010ffff", "b"),
        ("\U0010ffff", None),
        ("", None),
        ("x\ud7ff", "x\ue000"),
    ],
)
def test_the_upper_bound_of_a_prefix(prefix: str, following: str | None):
    assert _following(prefix) == following
    if following is not None:
        assert prefix < following and all(
            prefix + tail < following for tail in ("", "\x00", "zzz", chr(sys.maxunicode) * 3)
        )


def generic_plan(conn: sa.Connection, statement: sa.Select[str, str]) -> str:
    """PostgreSQL's plan of `statement` for any values of its parameters: the plan a statement
    prepared on the server (psycopg prepares one the fifth time it runs) may be given for
    good, where the planner cannot see the values."""
    compiled = statement.compile(dialect=conn.dialect)
    sql, values = compiled.string, []
    for number, (name, value) in enumerate(compiled.params.items(), 1):
        sql = sql.replace(f"%({name})s", f"${number}")
        values.append(
            str(value) if isinstance(value, int) else "'{}'".format(value.replace("'", "''"))
        )
    conn.exec_driver_sql(f"PREPARE probe AS {sql}")
    conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    # A small table: without this the planner would rightly prefer reading it whole.
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    rows = conn.exec_driver_sql(f"EXPLAIN EXECUTE probe({', '.join(values)})")
    plan = "\n".join(row[0] for row in rows)
    conn.exec_driver_sql("DEALLOCATE probe")
    return plan


def test_the_index_gives_the_order_and_nothing_is_sorted(tenant: Tenant):
    db = tenant.runtime.db
    dialect = db.engine.dialect.name
    statement = first_identities(tenant.workspace_id, (None, "ada"), dialect, 20)
    with db.read() as conn:
        if dialect == "sqlite":
            compiled = statement.compile(conn)
            values = tuple(compiled.params[name] for name in compiled.positiontup or ())
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", values)
            plan = " | ".join(row[3] for row in rows)
            assert INDEX in plan and "TEMP B-TREE" not in plan, plan
        else:
            plan = generic_plan(conn, statement)
            # The range is the index's: an index condition, not a filter of the workspace.
            assert f"Index Scan using {INDEX}" in plan and "Sort" not in plan, plan
            assert "~>=~" in plan.split("Index Cond:", 1)[1].split("\n", 1)[0], plan


@pytest.fixture
def collated_runtime(postgres_cluster: PostgresCluster, tmp_path) -> Iterator[Runtime]:
    """A database whose collation is not C (ICU's en-US): LIKE cannot use a plain index."""
    import psycopg

    name = f"collated_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(
        f"host=127.0.0.1 port={postgres_cluster.port} user=tidings dbname=postgres",
        autocommit=True,
    ) as conn:
        conn.execute(
            f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING UTF8 '
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    settings = Settings(data_dir=tmp_path, database_url=postgres_cluster.url(name))
    runtime = Runtime.from_settings(settings)
    from tidings.bootstrap import prepare

    prepare(runtime, run_migrations=True)
    yield runtime
    runtime.close()


def test_postgresql_reads_the_pattern_index_in_order_whatever_the_collation(
    collated_runtime: Runtime,
):
    db = collated_runtime.db
    workspace = workspaces.create_workspace(db, "collated")
    statement = first_identities(workspace["id"], (EMAIL_NAMESPACE, "ada"), "postgresql", 20)
    with db.read() as conn:
        collation = conn.exec_driver_sql(
            "SELECT daticulocale FROM pg_database WHERE datname = current_database()"
        ).scalar()
        assert collation == "en-US"
        plan = generic_plan(conn, statement)
    assert f"Index Scan using {INDEX}" in plan and "Sort" not in plan, plan
    assert "~>=~" in plan.split("Index Cond:", 1)[1].split("\n", 1)[0], plan


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_upgrade_keeps_an_identity_index_an_operator_built_beforehand(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
):
    # docs/operations.md: on a large PostgreSQL database, CREATE INDEX CONCURRENTLY before
    # upgrading, so that writes go on while it builds.
    fresh = _fresh_runtime(backend, request, tmp_path)
    rt = next(fresh)
    try:
        _alembic(rt, "downgrade", "0018")
        how, ops = ("CONCURRENTLY ", " text_pattern_ops") if backend == "postgresql" else ("", "")
        # CONCURRENTLY runs outside any transaction; on SQLite, a transaction commits the index.
        with (
            rt.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if how
            else rt.db.engine.begin()
        ) as conn:
            conn.exec_driver_sql(
                f"CREATE INDEX {how}{INDEX} ON profile_identities (workspace_id, value{ops})"
            )
        with rt.db.engine.connect() as conn:
            before = sa.inspect(conn).get_indexes("profile_identities")
        assert INDEX in {index["name"] for index in before}
        _alembic(rt, "upgrade", "head")
        with rt.db.engine.connect() as conn:
            indexes = {
                index["name"] for index in sa.inspect(conn).get_indexes("profile_identities")
            }
            assert INDEX in indexes
            assert migrations.is_current(rt.db)
    finally:
        fresh.close()
