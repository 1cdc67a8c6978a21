"""`tidings profiles ...`: bulk import from a file, with a progress bar."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tidings.config import Settings
from tidings.db import migrate as migrations
from tidings.errors import TidingsError
from tidings.profiles import import_jobs, imports
from tidings.profiles.imports import ImportReport
from tidings.profiles.schemas import ImportFormat
from tidings.runtime import Runtime
from tidings.workspaces import service as workspaces

app = typer.Typer(help="Profiles: bulk import.", no_args_is_help=True)
READ_BYTES = 1024 * 1024
REJECTED_SHOWN = 20
CLI_SOURCE = "cli"


@app.callback()
def profiles() -> None:
    """Profiles: bulk import."""


def _runtime(ctx: typer.Context, console: Console) -> tuple[Runtime, bool]:
    """The runtime a caller put in the context (tests), else one from the settings; and
    whether this command owns it (and closes it)."""
    if isinstance(ctx.obj, Runtime):
        return ctx.obj, False
    try:
        return Runtime.from_settings(Settings()), True
    except ValidationError as exc:
        for error in exc.errors():
            name = "TIDINGS_" + "_".join(str(part) for part in error["loc"]).upper()
            console.print(f"[red]{name}: {error['msg']}[/red]")
        raise typer.Exit(2) from None


def _chunks(source: BinaryIO, progress: Progress, task: TaskID) -> Iterator[bytes]:
    while chunk := source.read(READ_BYTES):
        progress.advance(task, len(chunk))
        yield chunk


def _print_report(console: Console, report: ImportReport) -> None:
    console.print(
        f"{report.lines} lines: [green]{report.created} created[/green], "
        f"{report.updated} updated, {report.unchanged} unchanged, "
        f"[{'red' if report.rejected_total else 'green'}]{report.rejected_total} rejected"
        f"[/{'red' if report.rejected_total else 'green'}]"
    )
    for rejection in report.rejected[:REJECTED_SHOWN]:
        console.print(f"  line {rejection['line']}: {rejection['reason']}", highlight=False)
    if report.rejected_total > REJECTED_SHOWN:
        console.print(
            f"  … and {report.rejected_total - REJECTED_SHOWN} more (--json lists the first "
            f"{imports.MAX_REJECTED_LISTED})"
        )


@app.command("import")
def import_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A CSV or JSON Lines file; '-' reads stdin")],
    format: Annotated[
        ImportFormat | None,
        typer.Option("--format", help="csv or jsonl; by default from the file's extension"),
    ] = None,
    workspace: Annotated[str, typer.Option(help="Workspace name")] = workspaces.DEFAULT_WORKSPACE,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout")
    ] = False,
) -> None:
    """Creates or updates profiles from FILE, upserting by identity with PATCH's merge
    semantics; rejected rows are reported with their line and reason."""
    console = Console(stderr=True) if as_json else Console()
    stdin = str(file) == "-"
    fmt = format or (None if stdin else imports.format_of_path(file))
    if fmt is None:
        console.print("[red]say --format csv or --format jsonl[/red]")
        raise typer.Exit(2)
    if not stdin and not file.is_file():
        console.print(f"[red]no such file: {file}[/red]")
        raise typer.Exit(2)
    runtime, owned = _runtime(ctx, console)
    try:
        if not migrations.is_current(runtime.db):
            console.print("[red]the database schema is not current: run `tidings migrate`[/red]")
            raise typer.Exit(1)
        found = workspaces.find_workspace(runtime.db, workspace)
        if found is None:
            console.print(f"[red]no workspace named '{workspace}'[/red]")
            raise typer.Exit(1)
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[rows]}"),
            console=console,
            transient=False,
        )
        source = sys.stdin.buffer if stdin else file.open("rb")
        total = None if stdin else file.stat().st_size
        # A job, like the console's and the API's imports: listed with them, and left to
        # read `interrupted` if this command is killed.
        job_id = import_jobs.create(
            runtime.db,
            str(found["id"]),
            source=CLI_SOURCE,
            fmt=fmt,
            file_name=None if stdin else file.name,
            bytes_total=total,
            state=import_jobs.JobState.RUNNING,
        )
        tracker = import_jobs.Tracker(runtime.db, job_id)
        try:
            with progress:
                task = progress.add_task("importing", total=total, rows="")

                def on_batch(report: ImportReport) -> None:
                    progress.update(
                        task,
                        rows=f"{report.created + report.updated + report.unchanged} rows, "
                        f"{report.rejected_total} rejected",
                    )

                report = imports.import_profiles(
                    runtime.db,
                    str(found["id"]),
                    tracker.chunks(_chunks(source, progress, task)),
                    fmt,
                    on_batch=on_batch,
                    on_commit=tracker.on_commit,
                    job_id=job_id,
                )
            import_jobs.succeed(runtime.db, job_id, report, tracker.bytes_read)
        except TidingsError as exc:
            import_jobs.fail(runtime.db, job_id, exc.detail, exc.errors, tracker.bytes_read)
            console.print(f"[red]{exc.title}: {exc.detail}[/red]")
            for error in exc.errors:
                where = f" (line {error.line}, column {error.column})" if error.line else ""
                console.print(f"  {error.field}: {error.message}{where}")
            raise typer.Exit(1) from None
        finally:
            if not stdin:
                source.close()
    finally:
        if owned:
            runtime.close()
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        _print_report(console, report)
