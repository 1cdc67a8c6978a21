"""The `tidings` command: serve, api, worker, migrate, trigger, keys, workspaces."""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from tidings.app import create_app
from tidings.bootstrap import StartupReport, prepare
from tidings.clock import utcnow
from tidings.config import Settings
from tidings.db import migrate as migrations
from tidings.delivery.worker import Worker
from tidings.errors import TidingsError
from tidings.executions import service as executions
from tidings.executions.schemas import ExecutionCreate, Recipient, RecipientIdentity
from tidings.runtime import Runtime
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

app = typer.Typer(help="Tidings: API-triggered campaigns over email, SMS and push.")
keys_app = typer.Typer(help="API keys: create, list, revoke.")
workspaces_app = typer.Typer(help="Workspaces (tenants): create, list.")
app.add_typer(keys_app, name="keys")
app.add_typer(workspaces_app, name="workspaces")
# Piped into another program, tables keep whole values on one line instead of wrapping at 80.
console = Console() if sys.stdout.isatty() else Console(width=200)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "TIDINGS_" + "_".join(str(part) for part in error["loc"]).upper()
            console.print(f"[red]{name}: {error['msg']}[/red]")
        raise typer.Exit(2) from None


def _runtime() -> Runtime:
    settings = _settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return Runtime.from_settings(settings)


def _banner(runtime: Runtime, report: StartupReport, *, worker: bool) -> None:
    settings = runtime.settings
    url = settings.resolved_public_url
    console.print(f"[bold]Tidings[/bold] is starting on [link={url}]{url}[/link]")
    console.print(f"  database: {runtime.db.url.render_as_string(hide_password=True)}")
    console.print(f"  workers:  {'in this process' if worker else 'run `tidings worker`'}")
    console.print(f"  API reference: {url}/docs")
    if report.first_admin_key:
        console.print(
            f"\n  First admin API key of workspace '{report.workspace_name}' (shown once):\n"
            f"  [bold]{report.first_admin_key}[/bold]"
        )
    elif settings.bootstrap_api_key:
        console.print("  authenticate with the key in TIDINGS_BOOTSTRAP_API_KEY")
    else:
        console.print("  authenticate with an API key; make one with `tidings keys create`")
    console.print(f'  e.g. curl -H "Authorization: Bearer $KEY" {url}/v1/campaigns\n')


def _serve(with_worker: bool) -> None:
    runtime = _runtime()
    report = prepare(runtime, run_migrations=runtime.settings.auto_migrate)
    _banner(runtime, report, worker=with_worker)
    try:
        uvicorn.run(
            create_app(runtime, with_worker=with_worker),
            host=runtime.settings.host,
            port=runtime.settings.port,
            log_level=runtime.settings.log_level.lower(),
            # Off: paths carry email addresses (/v1/profiles/email/...), which logs must not, and
            # a line per request costs the trigger hot path a tenth of its time.
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        # Commits what the trigger writer still holds, then closes the database.
        runtime.close()


@app.command()
def serve() -> None:
    """Everything in one process: API, console and workers (the embedded shape)."""
    _serve(with_worker=True)


@app.command()
def api() -> None:
    """The API and console only; run workers with `tidings worker` (the scale-out shape)."""
    _serve(with_worker=False)


@app.command()
def worker() -> None:
    """A worker process; as many as needed can share one PostgreSQL database."""
    runtime = _runtime()
    if not migrations.is_current(runtime.db):
        console.print("[red]the database schema is not current: run `tidings migrate`[/red]")
        raise typer.Exit(1)
    console.print("worker running; Ctrl-C to stop")
    Worker(runtime).run_blocking()


@app.command()
def migrate() -> None:
    """Brings the database schema to the newest version."""
    runtime = _runtime()
    migrations.upgrade(runtime.db)
    workspaces.ensure_workspace(runtime.db)
    console.print(f"schema at revision {migrations.current_revision(runtime.db)}")


def _workspace_id(runtime: Runtime, name: str) -> str:
    found = workspaces.find_workspace(runtime.db, name)
    if found is None:
        console.print(f"[red]no workspace named '{name}'[/red]")
        raise typer.Exit(1)
    workspace_id: str = found["id"]
    return workspace_id


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for")] = "cli",
    scope: Annotated[
        list[Scope] | None, typer.Option(help="Repeat for several; default: admin")
    ] = None,
    workspace: Annotated[str, typer.Option(help="Workspace name")] = workspaces.DEFAULT_WORKSPACE,
) -> None:
    """Creates an API key and prints its secret once."""
    runtime = _runtime()
    row, secret = workspaces.create_api_key(
        runtime.db, _workspace_id(runtime, workspace), name, scope or [Scope.ADMIN]
    )
    console.print(f"key {row['id']} ({', '.join(row['scopes'])}) in workspace '{workspace}'")
    console.print("secret (shown once, store it now):")
    print(secret)


@keys_app.command("list")
def keys_list(
    workspace: Annotated[str, typer.Option(help="Workspace name")] = workspaces.DEFAULT_WORKSPACE,
) -> None:
    """Lists the keys of a workspace (never their secrets)."""
    runtime = _runtime()
    table = Table("id", "name", "prefix", "scopes", "created", "last used", "revoked")
    for row in workspaces.list_api_keys(runtime.db, _workspace_id(runtime, workspace)):
        table.add_row(
            row["id"],
            row["name"],
            row["display_prefix"],
            ", ".join(row["scopes"]),
            f"{row['created_at']:%Y-%m-%d %H:%M}",
            f"{row['last_used_at']:%Y-%m-%d %H:%M}" if row["last_used_at"] else "",
            f"{row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str,
    workspace: Annotated[str, typer.Option(help="Workspace name")] = workspaces.DEFAULT_WORKSPACE,
) -> None:
    """Revokes a key; requests with it fail within seconds."""
    runtime = _runtime()
    workspaces.revoke_api_key(runtime.db, _workspace_id(runtime, workspace), key_id)
    console.print(f"key {key_id} revoked")


@app.command()
def trigger(
    campaign_id: Annotated[str, typer.Argument(help="The live campaign to trigger")],
    to: Annotated[list[str], typer.Option(help="Recipient identity; repeat for several")],
    context: Annotated[str, typer.Option(help="Context as a JSON object")] = "{}",
    namespace: Annotated[str, typer.Option(help="Identity namespace of --to")] = "email",
    workspace: Annotated[str, typer.Option(help="Workspace name")] = workspaces.DEFAULT_WORKSPACE,
) -> None:
    """Triggers a campaign for a quick test; a running server's workers deliver it."""
    runtime = _runtime()
    try:
        shared = json.loads(context)
    except json.JSONDecodeError as exc:
        console.print(f"[red]--context is not JSON: {exc}[/red]")
        raise typer.Exit(2) from None
    try:
        body = ExecutionCreate(
            campaign_id=campaign_id,
            recipients=[
                Recipient(identity=RecipientIdentity(namespace=namespace, id=value)) for value in to
            ],
            context=shared,
        )
    except ValidationError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    triggered = executions.trigger(runtime.db, _workspace_id(runtime, workspace), body, utcnow())
    console.print(
        f"execution {triggered.response['execution_id']}: "
        f"{triggered.response['accepted']} message(s) accepted"
    )


@workspaces_app.command("create")
def workspaces_create(name: str) -> None:
    """Creates a workspace; then `tidings keys create --workspace NAME`."""
    runtime = _runtime()
    row = workspaces.create_workspace(runtime.db, name)
    console.print(f"workspace '{row['name']}' created ({row['id']})")


@workspaces_app.command("list")
def workspaces_list() -> None:
    runtime = _runtime()
    table = Table("id", "name", "created")
    for row in workspaces.list_workspaces(runtime.db):
        table.add_row(row["id"], row["name"], f"{row['created_at']:%Y-%m-%d %H:%M}")
    console.print(table)


def main() -> None:
    try:
        app()
    except TidingsError as exc:
        console.print(f"[red]{exc.title}: {exc.detail}[/red]")
        for error in exc.errors:
            console.print(f"  {error.field}: {error.message}")
        raise SystemExit(1) from None
