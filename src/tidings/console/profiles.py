"""Console pages of profiles: search, the profile page, consent, erasure, and CSV imports.

An import runs on a thread of this process, fed from a copy of the uploaded file, and
reports its progress (bytes read, rows created, updated, rejected) after each batch the
import service commits; the page polls it. The progress lives in the process that runs the
import: behind several API processes, the page must reach the same one (a sticky session).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePath
from typing import IO, Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tidings.campaigns.models import campaign_versions, campaigns
from tidings.clock import utcnow
from tidings.console.auth import Admin, Editor, Member
from tidings.console.forms import field_errors, form_fields
from tidings.console.templating import render
from tidings.db import Database
from tidings.errors import FieldError, InvalidInput, NotFound, TidingsError
from tidings.executions.models import messages
from tidings.ids import new_id
from tidings.profiles import imports
from tidings.profiles import service as profiles
from tidings.profiles.models import profile_identities
from tidings.profiles.models import profiles as profile_rows
from tidings.profiles.schemas import ConsentStatus, ImportFormat
from tidings.runtime import Runtime
from tidings.users.schemas import ConsoleSession
from tidings.vocabulary import EMAIL_NAMESPACE, PHONE_NAMESPACE, Channel
from tidings.web import runtime_of

router = APIRouter(include_in_schema=False)
LISTED = 50
RECENT_MESSAGES = 20
COPY_CHUNK = 1024 * 1024
# Imports at once in this process: each holds a database writer between batches.
MAX_RUNNING_IMPORTS = 4
# Finished imports remembered for their pages.
KEPT_IMPORTS = 50
CONSOLE_SOURCE = "console"


# ---------------------------------------------------------------- search and list


def _identity_of(query: str) -> tuple[str, str] | None:
    """The identity a search names exactly: an address, a phone number, or `namespace:id`."""
    if "@" in query:
        return EMAIL_NAMESPACE, query
    if query.startswith("+"):
        return PHONE_NAMESPACE, query
    namespace, colon, value = query.partition(":")
    if colon and namespace and value:
        return namespace, value
    return None


def _with_identities(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [row["id"] for row in rows]
    found: dict[str, list[tuple[str, str]]] = {profile_id: [] for profile_id in ids}
    if ids:
        for namespace, value, profile_id in conn.execute(
            sa.select(
                profile_identities.c.namespace,
                profile_identities.c.value,
                profile_identities.c.profile_id,
            )
            .where(profile_identities.c.profile_id.in_(ids))
            .order_by(profile_identities.c.namespace, profile_identities.c.value)
        ):
            found[profile_id].append((namespace, value))
    return [{**row, "identities": found[row["id"]]} for row in rows]


def search(db: Database, workspace_id: str, query: str) -> list[dict[str, Any]]:
    """The newest profiles, or those with an identity value starting with `query` (any
    namespace; an address or a phone number normalised first)."""
    columns = (profile_rows.c.id, profile_rows.c.created_at, profile_rows.c.updated_at)
    statement = sa.select(*columns).where(profile_rows.c.workspace_id == workspace_id)
    query = query.strip()
    if query:
        matches = [profile_identities.c.value.startswith(query, autoescape=True)]
        named = _identity_of(query)
        if named is not None:
            namespace, value = named
            try:
                value = profiles.normalize_identity(namespace, value)
            except InvalidInput:
                # The start of an address: stored addresses are lowercase.
                value = value.lower() if namespace == EMAIL_NAMESPACE else value
            matches.append(
                sa.and_(
                    profile_identities.c.namespace == namespace,
                    profile_identities.c.value.startswith(value, autoescape=True),
                )
            )
        owners = sa.select(profile_identities.c.profile_id).where(
            profile_identities.c.workspace_id == workspace_id, sa.or_(*matches)
        )
        statement = statement.where(profile_rows.c.id.in_(owners))
    statement = statement.order_by(profile_rows.c.id.desc()).limit(LISTED)
    with db.read() as conn:
        rows = [dict(row) for row in conn.execute(statement).mappings()]
        return _with_identities(conn, rows)


@router.get("/profiles", response_class=HTMLResponse)
async def profile_list(request: Request, session: Member) -> Response:
    query = (request.query_params.get("q") or "")[:320]
    found = await run_in_threadpool(search, runtime_of(request).db, session.workspace_id, query)
    return render(request, "profiles/list.html", profiles=found, q=query, limit=LISTED)


# ---------------------------------------------------------------- the profile page


def campaign_names(conn: sa.Connection, campaign_ids: set[str]) -> dict[str, str]:
    """The names campaigns have now (their draft's, else their live version's)."""
    if not campaign_ids:
        return {}
    head = sa.func.coalesce(campaigns.c.draft_version_id, campaigns.c.live_version_id)
    rows = conn.execute(
        sa.select(campaigns.c.id, campaign_versions.c.name)
        .join(campaign_versions, campaign_versions.c.id == head)
        .where(campaigns.c.id.in_(sorted(campaign_ids)))
    )
    return {campaign_id: name for campaign_id, name in rows}


def recent_messages(db: Database, workspace_id: str, profile_id: str) -> list[dict[str, Any]]:
    """The profile's newest messages with their campaign's name.

    messages.profile_id has no index (it would slow every trigger): the newest-first walk of
    the primary key stops at the page's size, which is quick for a profile with recent
    messages and a scan for one with none."""
    with db.read() as conn:
        rows = [
            dict(row)
            for row in conn.execute(
                sa.select(
                    messages.c.id,
                    messages.c.campaign_id,
                    messages.c.channel,
                    messages.c.state,
                    messages.c.reason,
                    messages.c.attempts,
                    messages.c.is_proof,
                    messages.c.created_at,
                    messages.c.sent_at,
                )
                .where(messages.c.workspace_id == workspace_id, messages.c.profile_id == profile_id)
                .order_by(messages.c.id.desc())
                .limit(RECENT_MESSAGES)
            ).mappings()
        ]
        names = campaign_names(conn, {row["campaign_id"] for row in rows})
    for row in rows:
        row["campaign_name"] = names.get(row["campaign_id"], row["campaign_id"])
    return rows


def _profile_context(runtime: Runtime, workspace_id: str, namespace: str, value: str) -> Any:
    profile = profiles.get(runtime.db, workspace_id, namespace, value)
    tokens = profiles.list_push_tokens(runtime.db, workspace_id, namespace, value)
    return {
        "profile": profile,
        "push_tokens": tokens,
        "recent": recent_messages(runtime.db, workspace_id, profile["id"]),
        "namespace": namespace,
        "value": profiles.normalize_identity(namespace, value),
    }


async def _profile_page(
    request: Request,
    session: ConsoleSession,
    namespace: str,
    value: str,
    status_code: int = 200,
    error: str | None = None,
    errors: list[FieldError] | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    runtime = runtime_of(request)
    try:
        context = await run_in_threadpool(
            _profile_context, runtime, session.workspace_id, namespace, value
        )
    except (NotFound, InvalidInput) as exc:
        return render(request, "error.html", 404, title="No such profile", message=exc.detail)
    return render(
        request,
        "profiles/detail.html",
        status_code,
        error=error,
        field_errors=field_errors(errors or []),
        notice=notice,
        channels=[channel.value for channel in Channel],
        statuses=[status.value for status in ConsentStatus],
        **context,
    )


@router.get("/profiles/show", response_class=HTMLResponse)
async def profile_page(request: Request, session: Member) -> Response:
    query = request.query_params
    return await _profile_page(
        request, session, query.get("namespace", "")[:64], query.get("id", "")[:320]
    )


def set_consent(
    db: Database, workspace_id: str, namespace: str, value: str, channel: str, status: str
) -> dict[str, Any]:
    try:
        chosen_channel = Channel(channel)
    except ValueError:
        raise InvalidInput.on("channel", "choose email, sms or push") from None
    try:
        chosen_status = ConsentStatus(status)
    except ValueError:
        raise InvalidInput.on("status", "choose in, out or unset") from None
    profile_id = profiles.get(db, workspace_id, namespace, value)["id"]
    with db.write() as conn:
        entry = profiles.set_channel_consent(
            conn, workspace_id, profile_id, chosen_channel, chosen_status, CONSOLE_SOURCE, utcnow()
        )
    if entry is None:
        raise NotFound(f"no profile with {namespace} identity '{value}'")
    return entry


@router.post("/profiles/consent", response_class=HTMLResponse)
async def change_consent(request: Request, session: Editor) -> Response:
    form = await form_fields(request)
    namespace, value = form.get("namespace", ""), form.get("id", "")
    channel = form.get("channel", "")
    try:
        await run_in_threadpool(
            set_consent,
            runtime_of(request).db,
            session.workspace_id,
            namespace,
            value,
            channel,
            form.get("status", ""),
        )
    except TidingsError as exc:
        return await _profile_page(
            request, session, namespace, value, 422, exc.detail, list(exc.errors)
        )
    return await _profile_page(
        request, session, namespace, value, notice=f"{channel} consent changed."
    )


@router.post("/profiles/erase", response_class=HTMLResponse)
async def erase_profile(request: Request, session: Admin) -> Response:
    form = await form_fields(request)
    namespace, value = form.get("namespace", ""), form.get("id", "")
    if form.get("confirm", "").strip() != value:
        error = InvalidInput.on("confirm", f"type {value} to confirm the erasure")
        return await _profile_page(
            request, session, namespace, value, 422, error.detail, list(error.errors)
        )
    try:
        await run_in_threadpool(
            profiles.erase, runtime_of(request).db, session.workspace_id, namespace, value
        )
    except TidingsError as exc:
        return await _profile_page(request, session, namespace, value, 409, exc.detail)
    return render(
        request,
        "profiles/list.html",
        profiles=[],
        q="",
        limit=LISTED,
        notice="The profile was erased; its messages keep no personal data.",
    )


# ---------------------------------------------------------------- imports


@dataclass
class ImportJob:
    """One console import: what it has read and done so far."""

    id: str
    workspace_id: str
    filename: str
    format: str
    total_bytes: int
    started_at: datetime
    bytes_read: int = 0
    state: str = "running"
    report: dict[str, Any] = field(default_factory=lambda: imports.ImportReport().as_dict())
    error: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    finished_at: datetime | None = None

    def view(self) -> dict[str, Any]:
        percent = 100 if self.state != "running" else 0
        if self.state == "running" and self.total_bytes:
            percent = min(99, self.bytes_read * 100 // self.total_bytes)
        report = dict(self.report)
        report["rejected"] = report["rejected"][:100]
        return {
            "id": self.id,
            "filename": self.filename,
            "format": self.format,
            "state": self.state,
            "bytes_read": self.bytes_read,
            "total_bytes": self.total_bytes,
            "percent": percent,
            "report": report,
            "error": self.error,
            "errors": self.errors,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


class ImportJobs:
    """The imports of this process, newest last; finished ones beyond KEPT_IMPORTS forgotten."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, ImportJob] = {}

    def start(self, job: ImportJob) -> None:
        with self._lock:
            running = sum(1 for other in self._jobs.values() if other.state == "running")
            if running >= MAX_RUNNING_IMPORTS:
                raise InvalidInput.on(
                    "file", f"{running} imports are running; start this one when one ends"
                )
            self._jobs[job.id] = job
            finished = [other.id for other in self._jobs.values() if other.state != "running"]
            for old in finished[: max(0, len(finished) - KEPT_IMPORTS)]:
                del self._jobs[old]

    def get(self, workspace_id: str, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.workspace_id != workspace_id:
                raise NotFound("no such import in this process (imports are kept until restart)")
            return job.view()

    def of_workspace(self, workspace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                job.view()
                for job in reversed(self._jobs.values())
                if job.workspace_id == workspace_id
            ]

    def update(self, job: ImportJob, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(job, name, value)


JOBS = ImportJobs()


def _chunks(job: ImportJob, source: IO[bytes]) -> Iterator[bytes]:
    while chunk := source.read(COPY_CHUNK):
        JOBS.update(job, bytes_read=job.bytes_read + len(chunk))
        yield chunk


def run_import(db: Database, job: ImportJob, path: Path) -> None:
    """The import of the copied file, recording progress after each batch; the copy goes."""
    try:
        with path.open("rb") as source:
            report = imports.import_profiles(
                db,
                job.workspace_id,
                _chunks(job, source),
                ImportFormat(job.format),
                on_batch=lambda report: JOBS.update(job, report=report.as_dict()),
            )
        JOBS.update(job, report=report.as_dict(), state="done", finished_at=utcnow())
    except TidingsError as exc:
        JOBS.update(
            job,
            state="failed",
            error=exc.detail,
            errors=[error.as_dict() for error in exc.errors],
            finished_at=utcnow(),
        )
    except Exception as exc:  # a database outage: shown on the page rather than lost
        JOBS.update(job, state="failed", error=f"the import stopped: {exc}", finished_at=utcnow())
    finally:
        path.unlink(missing_ok=True)


def _copy(upload: IO[bytes]) -> tuple[Path, int]:
    # The request's own file goes when the request ends; the import outlives it.
    with tempfile.NamedTemporaryFile(prefix="tidings-import-", delete=False) as copy:
        upload.seek(0)
        shutil.copyfileobj(upload, copy, COPY_CHUNK)
        return Path(copy.name), copy.tell()


def _format_of(filename: str, chosen: str) -> ImportFormat:
    if chosen:
        try:
            return ImportFormat(chosen)
        except ValueError:
            raise InvalidInput.on("format", "choose csv or jsonl") from None
    return imports.format_of_path(PurePath(filename)) or ImportFormat.CSV


def _imports_page(
    request: Request,
    session: ConsoleSession,
    status_code: int = 200,
    error: str | None = None,
    errors: list[FieldError] | None = None,
) -> HTMLResponse:
    return render(
        request,
        "profiles/imports.html",
        status_code,
        jobs=JOBS.of_workspace(session.workspace_id),
        error=error,
        field_errors=field_errors(errors or []),
    )


@router.get("/profiles/imports", response_class=HTMLResponse)
async def imports_page(request: Request, session: Member) -> Response:
    return _imports_page(request, session)


@router.post("/profiles/imports", response_class=HTMLResponse)
async def start_import(request: Request, session: Editor) -> Response:
    form = await request.form()
    upload = form.get("file")
    chosen = form.get("format")
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise InvalidInput.on("file", "choose a CSV or JSON Lines file")
        fmt = _format_of(upload.filename, chosen if isinstance(chosen, str) else "")
        path, size = await run_in_threadpool(_copy, upload.file)
    except InvalidInput as exc:
        return _imports_page(request, session, 422, exc.detail, list(exc.errors))
    finally:
        await form.close()
    job = ImportJob(
        id=new_id(),
        workspace_id=session.workspace_id,
        filename=PurePath(upload.filename).name[:200],
        format=fmt.value,
        total_bytes=size,
        started_at=utcnow(),
    )
    try:
        JOBS.start(job)
    except InvalidInput as exc:
        path.unlink(missing_ok=True)
        return _imports_page(request, session, 429, exc.detail, list(exc.errors))
    db = runtime_of(request).db
    threading.Thread(
        target=run_import, args=(db, job, path), name=f"console-import-{job.id}", daemon=True
    ).start()
    return RedirectResponse(f"/profiles/imports/{job.id}", status_code=303)


@router.get("/profiles/imports/{import_id}", response_class=HTMLResponse)
async def import_page(request: Request, session: Member, import_id: str) -> Response:
    try:
        job = JOBS.get(session.workspace_id, import_id)
    except NotFound as exc:
        return render(request, "error.html", 404, title="No such import", message=exc.detail)
    return render(request, "profiles/import.html", job=job)


@router.get("/profiles/imports/{import_id}/status")
async def import_status(request: Request, session: Member, import_id: str) -> Response:
    """The progress as JSON, for the page's script."""
    try:
        job = JOBS.get(session.workspace_id, import_id)
    except NotFound as exc:
        return JSONResponse({"detail": exc.detail}, status_code=404)
    return JSONResponse(job, headers={"Cache-Control": "no-store"})
