"""SQLite on a full disk: a clear 507, nothing half-written, reads still served, then recovery.

The database lives on a tmpfs of a few megabytes mounted for the test (the suite runs as root
in CI); a process without the right to mount gets the same SQLite error (SQLITE_FULL) from a
`max_page_count` at the database's current size instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from tests.conftest import authorized_client
from tests.integration.test_executions import live_campaign, recipient
from tidings.app import create_app
from tidings.bootstrap import prepare
from tidings.config import Settings
from tidings.executions.models import executions, messages
from tidings.runtime import Runtime
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration
DISK_BYTES = 16 * 1024 * 1024


class Disk:
    """Fills the database's storage, and frees it again."""

    def __init__(self, folder: Path, runtime: Runtime, mounted: bool) -> None:
        self.folder = folder
        self.runtime = runtime
        self.mounted = mounted
        self.filler = folder / "filler"

    def _checkpoint(self) -> None:
        # An empty WAL: the next write needs new space, not pages the WAL already holds.
        with self.runtime.db.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def fill(self) -> None:
        self._checkpoint()
        if self.mounted:
            with self.filler.open("wb", buffering=0) as filler:
                for chunk in (1 << 20, 1 << 12, 1 << 9):
                    with contextlib.suppress(OSError):
                        while True:
                            filler.write(b"\0" * chunk)
            return
        pages = self._scalar("PRAGMA page_count")
        self._set_max_pages(pages)

    def free(self) -> None:
        if self.mounted:
            self.filler.unlink()
        else:
            self._set_max_pages(1_073_741_823)

    def _scalar(self, sql: str) -> int:
        with self.runtime.db.engine.connect() as connection:
            return int(connection.exec_driver_sql(sql).scalar_one())

    def _set_max_pages(self, pages: int) -> None:
        engine = self.runtime.db.engine
        self.runtime.db.engine.dispose()

        @event.listens_for(engine, "connect")
        def _limit(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA max_page_count={pages}")


def _mount_tmpfs(folder: Path) -> bool:
    folder.mkdir()
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(folder)],
        capture_output=True,
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    folder = tmp_path / "disk"
    mounted = _mount_tmpfs(folder)
    runtime = Runtime.from_settings(
        Settings(data_dir=folder, database_url="", public_url="https://tidings.test")
    )
    try:
        prepare(runtime, run_migrations=True)
        yield Disk(folder, runtime, mounted)
    finally:
        runtime.close()
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def _counts(runtime: Runtime) -> tuple[int, int]:
    with runtime.db.read() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(executions)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one(),
        )


def test_a_full_disk_refuses_writes_clearly_and_keeps_what_was_stored(small_disk: Disk):
    runtime = small_disk.runtime
    workspace = workspaces.create_workspace(runtime.db, "full")
    _, secret = workspaces.create_api_key(runtime.db, workspace["id"], "admin", [Scope.ADMIN])
    with authorized_client(create_app(runtime), secret) as client:

        class _Tenant:  # what live_campaign reads of a Tenant
            pass

        tenant: Any = _Tenant()
        tenant.client = client
        campaign = live_campaign(tenant)

        def trigger(name: str) -> Any:
            return client.post(
                "/v1/executions",
                json={
                    "campaign_id": campaign["id"],
                    "request_id": name,
                    "context": {"order": {"id": name}, "padding": "x" * 20_000},
                    "recipients": [recipient(f"{name}-{n}@example.com") for n in range(20)],
                },
            )

        before = trigger("before")
        assert before.status_code == 202, before.text
        stored = _counts(runtime)
        small_disk.fill()
        if small_disk.mounted:
            with pytest.raises(OSError) as no_space:
                (small_disk.folder / "probe").write_bytes(b"\0" * 4096)
            assert no_space.value.errno == errno.ENOSPC

        refused = trigger("during")
        assert refused.status_code == 507, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert "disk is full" in refused.json()["detail"]
        assert "retry-after" in refused.headers
        # The other write paths say the same, through FastAPI's handlers.
        # (Larger than a page, so that it cannot fit in the free space of existing pages.)
        attributes = {"note": "x" * 20_000}
        profile = client.put("/v1/profiles/email/late@example.com", json={"attributes": attributes})
        assert profile.status_code == 507, profile.text

        # Nothing of the refused call was written; what was accepted is whole and readable.
        assert _counts(runtime) == stored
        execution = client.get(f"/v1/executions/{before.json()['execution_id']}")
        assert execution.status_code == 200
        assert execution.json()["recipients"] == 20
        listed = client.get(f"/v1/executions/{before.json()['execution_id']}/messages")
        assert listed.status_code == 200
        assert len(listed.json()["items"]) == 20
        with runtime.db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"

        small_disk.free()
        again = trigger("during")
        assert again.status_code == 202, again.text
        assert _counts(runtime) == (stored[0] + 1, stored[1] + 20)
