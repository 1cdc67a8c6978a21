"""What start-up guarantees: schema current, default workspace, the bootstrap key if asked."""

from __future__ import annotations

from dataclasses import dataclass

from tidings.db import migrate
from tidings.runtime import Runtime
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

BOOTSTRAP_KEY_NAME = "bootstrap (TIDINGS_BOOTSTRAP_API_KEY)"


@dataclass(frozen=True, slots=True)
class StartupReport:
    workspace_name: str
    # Set only when this start created the first admin key: print it once, it is not stored.
    first_admin_key: str | None


def prepare(runtime: Runtime, *, run_migrations: bool) -> StartupReport:
    # Several API processes starting at once must not migrate or create keys side by side.
    with runtime.db.startup_lock():
        return _prepare(runtime, run_migrations=run_migrations)


def _prepare(runtime: Runtime, *, run_migrations: bool) -> StartupReport:
    if run_migrations:
        migrate.upgrade(runtime.db)
    workspace = workspaces.ensure_workspace(runtime.db)
    # Generated here, under the start-up lock, when it is not set: a key that cannot be read
    # or written stops the start rather than the first message.
    runtime.secret_key  # noqa: B018
    secret = runtime.settings.bootstrap_api_key
    if secret:
        workspaces.ensure_api_key(runtime.db, workspace["id"], secret, BOOTSTRAP_KEY_NAME)
        return StartupReport(workspace["name"], None)
    first_key = None
    if workspaces.count_active_keys(runtime.db) == 0:
        _, first_key = workspaces.create_api_key(
            runtime.db, workspace["id"], "first admin key", [Scope.ADMIN]
        )
    return StartupReport(workspace["name"], first_key)
