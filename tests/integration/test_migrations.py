"""Migrations produce exactly the schema the code declares, on both backends."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

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
