"""The console's search of profiles by the start of an identity: the same answers on both
backends, and an index range that stops at the limit, whatever PostgreSQL's collation."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.conftest import Tenant
from tests.support.postgres import PostgresCluster
from tidings.config import Settings
from tidings.console import profiles as console_profiles
from tidings.console.profiles import _following, first_identities, search, suggestions
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


def test_the_index_gives_the_order_and_nothing_is_sorted(tenant: Tenant):
    db = tenant.runtime.db
    dialect = db.engine.dialect.name
    statement = first_identities(tenant.workspace_id, (None, "ada"), dialect, 20)
    compiled = statement.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True})
    with db.read() as conn:
        if dialect == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
            plan = " | ".join(row[3] for row in rows)
            assert INDEX in plan and "TEMP B-TREE" not in plan, plan
        else:
            # A small table: without this the planner would rightly prefer reading it whole.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(row[0] for row in conn.execute(sa.text(f"EXPLAIN {compiled}")))
            assert f"Index Scan using {INDEX}" in plan and "Sort" not in plan, plan


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
        # An empty table: without this the planner would rightly prefer reading it whole.
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        compiled = statement.compile(
            dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}
        )
        plan = "\n".join(row[0] for row in conn.execute(sa.text(f"EXPLAIN {compiled}")))
    assert f"Index Scan using {INDEX}" in plan and "Sort" not in plan, plan
