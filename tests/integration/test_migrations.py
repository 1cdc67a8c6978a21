"""Migrations produce exactly the schema the code declares, on both backends, and their
downgrades keep the data they do not remove."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from tests.conftest import BACKENDS, _new_tenant
from tests.integration.helpers import create_configuration
from tests.integration.test_executions import live_campaign, recipient
from tests.support.postgres import PostgresCluster
from tidings.bootstrap import prepare
from tidings.config import Settings
from tidings.db import migrate
from tidings.db.schema import metadata
from tidings.runtime import Runtime

pytestmark = pytest.mark.integration


def test_schema_is_at_head_and_matches_the_models(runtime: Runtime):
    assert migrate.is_current(runtime.db)
    with runtime.db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_bootstrap_key_exists_with_exactly_that_secret(runtime: Runtime):
    from tidings.bootstrap import prepare
    from tidings.workspaces.schemas import Scope

    secret = "bootstrap-secret-for-tests-0123456789"
    runtime.settings.bootstrap_api_key = secret
    try:
        prepare(runtime, run_migrations=True)
        prepare(runtime, run_migrations=True)  # idempotent
        principal = runtime.authenticator.authenticate(secret)
    finally:
        runtime.settings.bootstrap_api_key = None
    assert principal.workspace_name == "default"
    assert Scope.ADMIN in principal.scopes


def _alembic(rt: Runtime, command_name: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS_DIR))
    with rt.db.engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, command_name)(config, revision)


def _fresh_runtime(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Runtime]:
    """A database of its own: the session's is shared, and a downgrade would pull the schema
    from under every other test."""
    database_url = ""
    if backend == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        database_url = cluster.create_database(f"tidings_migrations_{uuid.uuid4().hex[:12]}")
    settings = Settings(data_dir=tmp_path, database_url=database_url, public_url="https://t.test")
    rt = Runtime.from_settings(settings)
    try:
        prepare(rt, run_migrations=True)
        yield rt
    finally:
        rt.close()


def _counts(rt: Runtime, workspace_id: str) -> dict[str, int]:
    counted = {
        "workspaces": "SELECT count(*) FROM workspaces WHERE id = :w",
        "profiles": "SELECT count(*) FROM profiles WHERE workspace_id = :w",
        "audiences": "SELECT count(*) FROM audiences WHERE workspace_id = :w",
        "audience_members": (
            "SELECT count(*) FROM audience_members JOIN audiences"
            " ON audiences.id = audience_members.audience_id WHERE audiences.workspace_id = :w"
        ),
        "campaigns": "SELECT count(*) FROM campaigns WHERE workspace_id = :w",
        "campaign_versions": (
            "SELECT count(*) FROM campaign_versions JOIN campaigns"
            " ON campaigns.id = campaign_versions.campaign_id WHERE campaigns.workspace_id = :w"
        ),
        "executions": "SELECT count(*) FROM executions WHERE workspace_id = :w",
        "messages": "SELECT count(*) FROM messages WHERE workspace_id = :w",
        "api_keys": "SELECT count(*) FROM api_keys WHERE workspace_id = :w",
    }
    with rt.db.engine.connect() as conn:
        return {
            table: conn.execute(sa.text(query), {"w": workspace_id}).scalar_one()
            for table, query in counted.items()
        }


@pytest.mark.parametrize("backend", BACKENDS)
def test_downgrading_to_0004_and_back_keeps_the_data(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
):
    fresh = _fresh_runtime(backend, request, tmp_path)
    rt = next(fresh)
    try:
        tenant = next(_new_tenant(rt))
        client = tenant.client
        token = "T" * 400  # longer than the 320 characters messages.address had before 0007
        created = client.put(
            "/v1/profiles/email/ada@example.com",
            json={
                "attributes": {"firstName": "Ada"},
                "push_tokens": [{"app_id": "com.example.app", "platform": "ios", "token": token}],
            },
        )
        assert created.status_code == 201, created.text
        made = client.post(
            "/v1/audiences",
            json={"name": "VIP", "members": [{"namespace": "email", "id": "ada@example.com"}]},
        )
        assert made.status_code == 201, made.text
        audience_id = made.json()["id"]
        email = live_campaign(tenant)
        sent = client.post(
            "/v1/executions",
            json={
                "campaign_id": email["id"],
                "context": {"order": {"id": "A-1"}},
                "recipients": [recipient("ada@example.com")],
            },
        )
        assert sent.status_code == 202, sent.text
        push = live_campaign(
            tenant,
            channel="push",
            channel_configuration_id=create_configuration(
                client, category="transactional", channel="push"
            )["id"],
            content={"title": "Hi", "body": "Your order"},
        )
        pushed = client.post(
            "/v1/executions",
            json={"campaign_id": push["id"], "recipients": [recipient("ada@example.com")]},
        )
        assert pushed.status_code == 202, pushed.text
        before = _counts(rt, tenant.workspace_id)
        assert before["audience_members"] == 1 and before["messages"] == 2

        _alembic(rt, "downgrade", "0004")
        assert migrate.current_revision(rt.db) == "0004"
        assert _counts(rt, tenant.workspace_id) == before
        with rt.db.engine.connect() as conn:
            addresses = set(
                conn.execute(
                    sa.text("SELECT address FROM messages WHERE workspace_id = :w"),
                    {"w": tenant.workspace_id},
                ).scalars()
            )
        # The push token did not fit the narrower column: that message lost its address.
        assert addresses == {"ada@example.com", None}

        _alembic(rt, "upgrade", "head")
        assert migrate.is_current(rt.db)
        assert _counts(rt, tenant.workspace_id) == before
        with rt.db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
        read = client.get(f"/v1/audiences/{audience_id}")
        assert read.status_code == 200, read.text
        assert read.json()["member_count"] == 1
    finally:
        fresh.close()
