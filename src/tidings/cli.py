"""The `tidings` command: serve, api, worker, migrate, trigger, keys, users, and more."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
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
from tidings.feedback.mailbox import bounce_mailbox
from tidings.operations.garbage import tune_for_service
from tidings.operations.logging import LogFormat, configure_logging
from tidings.operations.metrics import Metrics, bind, serve_metrics
from tidings.profiles.commands import app as profiles_app
from tidings.runtime import Runtime
from tidings.suppressions import service as suppressions
from tidings.suppressions.schemas import (
    SuppressionChannel,
    SuppressionEntry,
    SuppressionKind,
    SuppressionType,
)
from tidings.users import service as users
from tidings.users.schemas import Role
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

log = logging.getLogger("tidings.cli")

app = typer.Typer(help="Tidings: API-triggered campaigns over email, SMS and push.")
keys_app = typer.Typer(help="API keys: create, list, revoke.")
workspaces_app = typer.Typer(help="Workspaces (tenants): create, list.")
suppressions_app = typer.Typer(help="The suppression list: add, list, remove, import.")
app.add_typer(keys_app, name="keys")
app.add_typer(workspaces_app, name="workspaces")
app.add_typer(suppressions_app, name="suppressions")
app.add_typer(profiles_app, name="profiles")
bounces_app = typer.Typer(help="The bounce mailbox: an SMTP endpoint for DSN and ARF mail.")
app.add_typer(bounces_app, name="bounces")
users_app = typer.Typer(help="Console users: create, list.")
app.add_typer(users_app, name="users")
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


def _runtime(log_format: LogFormat = "console") -> Runtime:
    """The runtime, with logging configured: servers log JSON lines unless
    TIDINGS_LOG_FORMAT says otherwise, one-off commands lines for a terminal."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format or log_format)
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
    console.print(f'  e.g. curl -H "Authorization: Bearer $KEY" {url}/v1/campaigns')
    if users.count_users(runtime.db) == 0:
        console.print(
            f"  console: {url}/ has no user yet; create the first admin with\n"
            f"  [bold]tidings users create you@example.com --workspace {report.workspace_name} "
            "--role admin[/bold]\n"
        )
    else:
        console.print(f"  console: sign in at {url}/\n")


def _serve(with_worker: bool) -> None:
    runtime = _runtime("json")
    report = prepare(runtime, run_migrations=runtime.settings.auto_migrate)
    _banner(runtime, report, worker=with_worker)
    application = create_app(runtime, with_worker=with_worker)
    tune_for_service()
    try:
        uvicorn.run(
            application,
            host=runtime.settings.host,
            port=runtime.settings.port,
            log_level=runtime.settings.log_level.lower(),
            # Logging is configured already (tidings.operations.logging): uvicorn's lines go
            # through the same JSON pipeline.
            log_config=None,
            # Off: paths carry email addresses (/v1/profiles/email/...), which logs must not, and
            # a line per request costs the trigger hot path a tenth of its time; the app logs
            # failed and slow requests itself (TIDINGS_ACCESS_LOG for every one).
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


def _schema_is_current(runtime: Runtime) -> bool:
    """Whether the schema is this version's, waiting for a database that does not answer yet
    (a worker started during an outage, or before its database) rather than exiting: workers
    are meant to come back by themselves when the database does."""
    delay = 0.5
    while True:
        try:
            return migrations.is_current(runtime.db)
        except sa.exc.OperationalError as exc:
            log.warning(
                "the database does not answer (%s); trying again in %.0f s",
                type(exc.orig).__name__,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


@app.command()
def worker() -> None:
    """A worker process; as many as needed can share one PostgreSQL database."""
    runtime = _runtime("json")
    if not _schema_is_current(runtime):
        console.print("[red]the database schema is not current: run `tidings migrate`[/red]")
        raise typer.Exit(1)
    metrics = Metrics(runtime.db)
    bind(runtime.db, metrics)
    port = runtime.settings.metrics_port
    if port is not None:
        serve_metrics(metrics, runtime.settings.host, port)
        console.print(f"metrics on http://{runtime.settings.host}:{port}/metrics")
    console.print("worker running; Ctrl-C to stop")
    service = Worker(runtime)
    tune_for_service()
    service.run_blocking()


@bounces_app.command("serve")
def bounces_serve() -> None:
    """The bounce mailbox alone, on TIDINGS_BOUNCE_SMTP_PORT (for the scale-out shape; `tidings
    serve` runs it itself when the port is set)."""
    runtime = _runtime()
    if not migrations.is_current(runtime.db):
        console.print("[red]the database schema is not current: run `tidings migrate`[/red]")
        raise typer.Exit(1)
    mailbox = bounce_mailbox(runtime)
    if mailbox is None:
        console.print("[red]set TIDINGS_BOUNCE_SMTP_PORT to the port to listen on[/red]")
        raise typer.Exit(2)
    mailbox.start()
    settings = runtime.settings
    console.print(
        f"bounce mailbox on {settings.bounce_smtp_host}:{settings.bounce_smtp_port}; Ctrl-C to stop"
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        mailbox.stop()
        runtime.close()


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


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="The user's email address (signs in with it)")],
    role: Annotated[Role, typer.Option(help="viewer, editor or admin")] = Role.ADMIN,
    workspace: Annotated[str, typer.Option(help="Workspace name")] = workspaces.DEFAULT_WORKSPACE,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
) -> None:
    """Creates a console user with a role in a workspace (the first admin, for a start)."""
    runtime = _runtime()
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = users.create_user(
            runtime.db, email, password, _workspace_id(runtime, workspace), role, utcnow()
        )
    except TidingsError as exc:
        details = "; ".join(f"{e.field} {e.message}" for e in exc.errors) or exc.detail
        console.print(f"[red]{details}[/red]")
        raise typer.Exit(1) from None
    url = runtime.settings.resolved_public_url
    console.print(f"user {user['email']} is {role} of workspace '{workspace}'; sign in at {url}/")


@users_app.command("list")
def users_list(
    workspace: Annotated[str, typer.Option(help="Workspace name")] = workspaces.DEFAULT_WORKSPACE,
) -> None:
    """Lists the console users of a workspace and their roles."""
    runtime = _runtime()
    table = Table("email", "role", "created")
    for row in users.list_members(runtime.db, _workspace_id(runtime, workspace)):
        table.add_row(row["email"], row["role"], f"{row['created_at']:%Y-%m-%d %H:%M}")
    console.print(table)


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


WorkspaceOption = Annotated[str, typer.Option("--workspace", help="Workspace name")]
ChannelOption = Annotated[SuppressionChannel, typer.Option("--channel", help="email or sms")]
IMPORT_CHUNK_BYTES = 1024 * 1024
REJECTIONS_SHOWN = 20


@suppressions_app.command("add")
def suppressions_add(
    value: Annotated[str, typer.Argument(help="An address, a domain (email) or a phone number")],
    type_: Annotated[SuppressionType, typer.Option("--type", help="Why")] = SuppressionType.MANUAL,
    channel: ChannelOption = SuppressionChannel.EMAIL,
    reason: Annotated[str | None, typer.Option(help="A note kept with the entry")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE,
) -> None:
    """Suppresses an address or a whole domain; adding it again updates its type."""
    try:
        entry = SuppressionEntry(
            value=value, channel=channel, type=type_, source="cli", reason=reason
        )
    except ValidationError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    runtime = _runtime()
    try:
        row, created = suppressions.add_one(runtime.db, _workspace_id(runtime, workspace), entry)
    finally:
        runtime.close()
    console.print(
        f"{'added' if created else 'updated'}: {row['channel']} {row['kind']} {row['value']} "
        f"({row['type']}), id {row['id']}"
    )


@suppressions_app.command("list")
def suppressions_list(
    channel: Annotated[SuppressionChannel | None, typer.Option(help="email or sms")] = None,
    type_: Annotated[SuppressionType | None, typer.Option("--type", help="Only this type")] = None,
    prefix: Annotated[str | None, typer.Option(help="Values that start with this")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    cursor: Annotated[str | None, typer.Option(help="Where the previous page ended")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE,
) -> None:
    """Lists suppressions, newest first."""
    runtime = _runtime()
    try:
        rows, next_cursor = suppressions.list_page(
            runtime.db,
            _workspace_id(runtime, workspace),
            channel=channel,
            type=type_,
            prefix=prefix,
            cursor=cursor,
            limit=limit,
        )
    finally:
        runtime.close()
    table = Table("id", "channel", "kind", "value", "type", "source", "reason", "created")
    for row in rows:
        table.add_row(
            row["id"],
            row["channel"],
            row["kind"],
            row["value"],
            row["type"],
            row["source"],
            row["reason"] or "",
            f"{row['created_at']:%Y-%m-%d %H:%M}",
        )
    console.print(table)
    if next_cursor:
        console.print(f"more: --cursor {next_cursor}")


@suppressions_app.command("remove")
def suppressions_remove(
    value: Annotated[str, typer.Argument(help="The suppressed address, domain or number")],
    channel: ChannelOption = SuppressionChannel.EMAIL,
    kind: Annotated[SuppressionKind | None, typer.Option(help="Default: inferred")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE,
) -> None:
    """Lifts the suppression of a value: messages go to it again."""
    runtime = _runtime()
    try:
        row = suppressions.remove_value(
            runtime.db, _workspace_id(runtime, workspace), channel, value, kind
        )
    finally:
        runtime.close()
    console.print(f"removed: {row['channel']} {row['kind']} {row['value']} ({row['type']})")


@suppressions_app.command("import")
def suppressions_import(
    path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A CSV file")
    ],
    channel: ChannelOption = SuppressionChannel.EMAIL,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE,
) -> None:
    """Imports a CSV file with a header line (value,type,reason), 1,000 rows per transaction;
    prints the rows it rejected with their line numbers."""
    runtime = _runtime()
    try:
        workspace_id = _workspace_id(runtime, workspace)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with (
            path.open("rb") as file,
            Progress(*columns, console=console, transient=True) as progress,
        ):
            task = progress.add_task(f"importing {path.name}", total=path.stat().st_size)
            report = suppressions.import_csv(
                runtime.db,
                workspace_id,
                iter(lambda: file.read(IMPORT_CHUNK_BYTES), b""),
                channel=channel,
                source="csv",
                on_progress=lambda size: progress.advance(task, size),
            )
    finally:
        runtime.close()
    console.print(
        f"{report['imported']} imported, {report['updated']} updated, "
        f"{report['rejected_count']} rejected ({report['lines']} lines)"
    )
    for rejection in report["rejected"][:REJECTIONS_SHOWN]:
        console.print(f"  line {rejection['line']}: {rejection['reason']}")
    if report["rejected_count"] > REJECTIONS_SHOWN:
        console.print(f"  … and {report['rejected_count'] - REJECTIONS_SHOWN} more")


def main() -> None:
    try:
        app()
    except TidingsError as exc:
        console.print(f"[red]{exc.title}: {exc.detail}[/red]")
        for error in exc.errors:
            console.print(f"  {error.field}: {error.message}")
        raise SystemExit(1) from None
