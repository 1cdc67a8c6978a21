"""Fixtures shared by every tier: backends for integration tests, API clients per workspace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.postgres import PostgresCluster
from tidings.app import create_app
from tidings.bootstrap import prepare
from tidings.config import Settings
from tidings.runtime import Runtime
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def runtime(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    """One migrated database per backend for the session; tests isolate by workspace."""
    data_dir: Path = tmp_path_factory.mktemp(f"tidings-{request.param}")
    database_url = ""
    if request.param == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        database_url = cluster.create_database("tidings_test")
    settings = Settings(
        data_dir=data_dir, database_url=database_url, public_url="https://tidings.test"
    )
    rt = Runtime.from_settings(settings)
    prepare(rt, run_migrations=True)
    yield rt
    rt.close()


@dataclass
class Tenant:
    """A fresh workspace with an admin client: what most integration tests start from."""

    runtime: Runtime
    workspace_id: str
    client: TestClient
    admin_key: str

    def client_with(self, *scopes: Scope) -> TestClient:
        _, secret = workspaces.create_api_key(
            self.runtime.db, self.workspace_id, "scoped", list(scopes)
        )
        return authorized_client(self.client.app, secret)  # type: ignore[arg-type]


def authorized_client(app: object, secret: str) -> TestClient:
    client = TestClient(app)  # type: ignore[arg-type]
    client.headers["Authorization"] = f"Bearer {secret}"
    return client


def _new_tenant(runtime: Runtime) -> Iterator[Tenant]:
    workspace = workspaces.create_workspace(runtime.db, f"ws-{uuid.uuid4().hex[:12]}")
    _, secret = workspaces.create_api_key(runtime.db, workspace["id"], "admin", [Scope.ADMIN])
    app = create_app(runtime)
    with authorized_client(app, secret) as client:
        yield Tenant(runtime, workspace["id"], client, secret)


@pytest.fixture
def tenant(runtime: Runtime) -> Iterator[Tenant]:
    yield from _new_tenant(runtime)


@pytest.fixture
def other_tenant(runtime: Runtime) -> Iterator[Tenant]:
    """A second workspace on the same database, for checks that tenants stay apart."""
    yield from _new_tenant(runtime)


def problem_fields(response: Any) -> list[str]:
    """The field names an RFC 9457 problem response blames."""
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return [error["field"] for error in response.json()["errors"]]
