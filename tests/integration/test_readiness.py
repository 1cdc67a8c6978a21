"""/healthz and /readyz: alive, and ready to serve and deliver."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import Tenant
from tests.support.postgres import free_port
from tidings.db import Database, migrate
from tidings.operations.service import ReadinessProbe, WorkerState

pytestmark = pytest.mark.integration


def test_an_api_process_is_ready_without_a_worker_of_its_own(tenant: Tenant):
    assert tenant.client.get("/healthz").json() == {"status": "ok"}
    response = tenant.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {
        "database": "ok",
        "migrations": "ok",
        "worker": "absent",
    }


def test_a_schema_behind_this_version_is_not_ready(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path}/old.db")
    migrate.upgrade(db, "0003")
    result = ReadinessProbe(db, WorkerState()).check()
    assert not result.ready
    assert result.checks["migrations"] == "failing"
    migrate.upgrade(db)
    assert ReadinessProbe(db, WorkerState()).check().ready
    db.dispose()


def test_an_unreachable_database_is_not_ready():
    db = Database(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none", pool_timeout=1)
    result = ReadinessProbe(db, WorkerState()).check()
    assert not result.ready
    assert result.checks["database"] == "failing"
    db.dispose()


def test_a_stopped_worker_is_not_ready(tenant: Tenant):
    async def stopped() -> None:
        return None

    async def main() -> WorkerState:
        task = asyncio.create_task(stopped())
        await task
        return WorkerState(task)

    state = asyncio.run(main())
    result = ReadinessProbe(tenant.runtime.db, state).check()
    assert not result.ready
    assert result.checks["worker"] == "failing"
