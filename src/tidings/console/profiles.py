"""Console pages of profiles: search, the profile page, consent, erasure, and CSV imports.

An import is a job (tidings.profiles.import_jobs) run on a thread of this process, fed from a
copy of the uploaded file; its progress (bytes read, rows created, updated, rejected) is
written to the database with each batch the import service commits, and the page polls it
from there: any API process answers it, and a restart leaves the job `interrupted`, its
committed rows kept.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import threading
from datetime import timedelta
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
from tidings.profiles import import_jobs, imports
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
# Identities a picker suggests at once.
SUGGESTED = 20
# Matches of a search read from the identity index before the search walks the newest
# profiles instead (console.profiles.search).
SEARCH_PROBE = 1000
# Imports the profiles page lists (the imports page lists import_jobs.LISTED).
LISTED_IMPORTS = 5
# Consent changes on the profile page, the newest; the API pages through all of them.
CONSENT_CHANGES_SHOWN = 50
COPY_CHUNK = 1024 * 1024
# Imports at once in this process: each holds a database writer between batches.
MAX_RUNNING_IMPORTS = 4
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


def search(
    db: Database, workspace_id: str, query: str, limit: int = LISTED
) -> list[dict[str, Any]]:
    """The newest profiles, or those with an identity value starting with `query` (any
    namespace; an address or a phone number normalised first)."""
    columns = (profile_rows.c.id, profile_rows.c.created_at, profile_rows.c.updated_at)
    statement = sa.select(*columns).where(profile_rows.c.workspace_id == workspace_id)
    starts = _identity_starts(query)
    dialect = db.engine.dialect.name
    with db.read() as conn:
        if starts:
            # A text few identities start with: those, read from the identity index. One that
            # many start with (a first letter): the newest profiles, each checked, until the
            # page is full; matches are then dense enough for that walk to end soon.
            owners: set[str] = set()
            for start in starts:
                probe = first_identities(workspace_id, start, dialect, SEARCH_PROBE + 1)
                found = [row[1] for row in conn.execute(probe)]
                if len(found) > SEARCH_PROBE:
                    break
                owners.update(found)
            else:
                statement = statement.where(profile_rows.c.id.in_(sorted(owners)))
                starts = []
            if starts:
                statement = statement.where(
                    sa.exists().where(
                        profile_identities.c.profile_id == profile_rows.c.id,
                        sa.or_(*(_starting_with(start, dialect) for start in starts)),
                    )
                )
        statement = statement.order_by(profile_rows.c.id.desc()).limit(limit)
        rows = [dict(row) for row in conn.execute(statement).mappings()]
        return _with_identities(conn, rows)


def _identity_starts(query: str) -> list[tuple[str | None, str]]:
    """What an identity must start with to match a search, as (namespace or None for any,
    start): the text as typed, in any namespace; an address typed in capitals, lowercase
    (stored addresses are); and the identity the text names, normalised."""
    query = query.strip()
    if not query:
        return []
    starts: list[tuple[str | None, str]] = [(None, query)]
    if query != query.lower():
        starts.append((EMAIL_NAMESPACE, query.lower()))
    named = _identity_of(query)
    if named is not None:
        namespace, value = named
        try:
            value = profiles.normalize_identity(namespace, value)
        except InvalidInput:
            # The start of an address: stored addresses are lowercase.
            value = value.lower() if namespace == EMAIL_NAMESPACE else value
        starts.append((namespace, value))
    return list(dict.fromkeys(starts))


def _starting_with(start: tuple[str | None, str], dialect: str) -> sa.ColumnElement[bool]:
    """Identities starting with a text, as the range of ix_profile_identities_workspace_value
    they fill, in binary order: SQLite's own comparison, PostgreSQL's pattern operators (the
    index's operator class). Not LIKE: SQLite's ignores ASCII case and cannot use the index,
    and PostgreSQL's, with the pattern a parameter, cannot in a generic plan, which a
    statement prepared by psycopg may get."""
    namespace, text = start
    value = profile_identities.c.value
    at_least, below = (">=", "<") if dialect == "sqlite" else ("~>=~", "~<~")
    condition: sa.ColumnElement[bool] = value.op(at_least, is_comparison=True)(text)
    following = _following(text)
    if following is not None:
        condition = sa.and_(condition, value.op(below, is_comparison=True)(following))
    if namespace is not None:
        condition = sa.and_(profile_identities.c.namespace == namespace, condition)
    return condition


def first_identities(
    workspace_id: str, start: tuple[str | None, str], dialect: str, limit: int
) -> sa.Select[str, str]:
    """(value, profile id) of the first identities starting with a text, in binary order: on
    SQLite its own order, on PostgreSQL the pattern operator class's, so that on both the
    index gives the order and the scan stops at the limit."""
    value = profile_identities.c.value
    order = value if dialect == "sqlite" else sa.text("value USING ~<~")
    return (
        sa.select(value, profile_identities.c.profile_id)
        .where(profile_identities.c.workspace_id == workspace_id, _starting_with(start, dialect))
        .order_by(order)
        .limit(limit)
    )


def _following(prefix: str) -> str | None:
    """The least text above every text that starts with `prefix`, in code point order (which
    is SQLite's binary order of UTF-8); None when no text is (no upper bound)."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if last <= sys.maxunicode:
            # Surrogates are not text UTF-8 can hold: the next code point that is.
            return prefix[:-1] + chr(0xE000 if 0xD800 <= last <= 0xDFFF else last)
        prefix = prefix[:-1]
    return None


def typed_identity(namespace: str, value: str) -> str:
    """An identity as one types it in the console: an address or a phone number as it is,
    any other namespace as `namespace:value` (what _identity_of reads back)."""
    if namespace in (EMAIL_NAMESPACE, PHONE_NAMESPACE):
        return value
    return f"{namespace}:{value}"


def suggestions(
    db: Database, workspace_id: str, query: str, limit: int = SUGGESTED
) -> list[dict[str, str]]:
    """Identities of the newest profiles, or, in alphabetical order, identities starting with
    `query`, each with the other identities of its profile (one found by its CRM id offers its
    address too): what a picker offers as one types.

    Unlike `search`, a match is found in the order of the identity index and the reading
    stops at `limit`: a first letter typed in a workspace of a million profiles reads twenty
    index entries, not the tens of thousands that start with it.
    """
    starts = _identity_starts(query)
    if not starts:
        profiles_found = search(db, workspace_id, "", limit)
    else:
        dialect = db.engine.dialect.name
        found: list[tuple[str, str]] = []
        with db.read() as conn:
            for start in starts:
                statement = first_identities(workspace_id, start, dialect, limit)
                found += [(row[0], row[1]) for row in conn.execute(statement)]
            # Code point order: UTF-8's byte order, the queries' own.
            found.sort()
            profile_ids = list(dict.fromkeys(profile_id for _, profile_id in found))[:limit]
            profiles_found = _with_identities(conn, [{"id": pid} for pid in profile_ids])
    items = [
        {
            "namespace": namespace,
            "id": identity,
            "value": typed_identity(namespace, identity),
            "label": f"{namespace}: {identity}",
        }
        for profile in profiles_found
        for namespace, identity in profile["identities"]
    ]
    return items[:limit]


@router.get("/profiles/suggestions")
async def profile_suggestions(request: Request, session: Member) -> Response:
    """Identities to pick from as one types (the preview's stored profile), as JSON."""
    query = (request.query_params.get("q") or "")[:320]
    items = await run_in_threadpool(
        suggestions, runtime_of(request).db, session.workspace_id, query
    )
    return JSONResponse({"items": items}, headers={"Cache-Control": "no-store"})


@router.get("/profiles", response_class=HTMLResponse)
async def profile_list(request: Request, session: Member) -> Response:
    query = (request.query_params.get("q") or "")[:320]
    runtime = runtime_of(request)
    found = await run_in_threadpool(search, runtime.db, session.workspace_id, query)
    jobs = await run_in_threadpool(recent_imports, runtime, session.workspace_id, LISTED_IMPORTS)
    return render(
        request, "profiles/list.html", profiles=found, q=query, limit=LISTED, imports=jobs
    )


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
    changes, more_changes = profiles.consent_changes(
        runtime.db, workspace_id, namespace, value, None, None, CONSENT_CHANGES_SHOWN
    )
    return {
        "profile": profile,
        "push_tokens": tokens,
        "consent_changes": changes,
        "more_consent_changes": more_changes is not None,
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
    db: Database,
    workspace_id: str,
    namespace: str,
    value: str,
    channel: str,
    status: str,
    detail: str | None = None,
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
            conn,
            workspace_id,
            profile_id,
            chosen_channel,
            chosen_status,
            CONSOLE_SOURCE,
            utcnow(),
            detail,
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
            f"user:{session.email}",
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


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """A job as the pages and the status JSON show it."""
    return {
        "id": job["id"],
        "filename": job["file_name"] or "(request body)",
        "source": job["source"],
        "format": job["format"],
        "state": job["state"],
        "bytes_read": job["bytes_read"],
        "total_bytes": job["bytes_total"],
        "percent": import_jobs.percent(job),
        "report": {
            "lines": job["lines"],
            "created": job["rows_created"],
            "updated": job["rows_updated"],
            "unchanged": job["rows_unchanged"],
            "rejected": job["rejected_sample"],
            "rejected_total": job["rows_rejected"],
        },
        "error": job["error"],
        "errors": job["error_details"] or [],
        "created_at": job["created_at"].isoformat(),
        "started_at": job["started_at"].isoformat() if job["started_at"] else None,
        "finished_at": job["finished_at"].isoformat() if job["finished_at"] else None,
        "updated_at": job["updated_at"].isoformat(),
    }


class RunningImports:
    """How many imports this process runs, bounded: each holds a writer between batches."""

    def __init__(self, limit: int = MAX_RUNNING_IMPORTS) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self.limit = limit

    def acquire(self) -> bool:
        return self._slots.acquire(blocking=False)

    def release(self) -> None:
        self._slots.release()


RUNNING = RunningImports()


def _stale_after(runtime: Runtime) -> timedelta:
    return timedelta(seconds=runtime.settings.import_stale_seconds)


def run_import(db: Database, job_id: str, workspace_id: str, fmt: ImportFormat, path: Path) -> None:
    """The import of the copied file as job `job_id`, its progress written with each batch;
    the copy goes, and so does this import's slot."""
    tracker = import_jobs.Tracker(db, job_id)
    try:
        import_jobs.start(db, job_id)
        with path.open("rb") as source:
            report = imports.import_profiles(
                db,
                workspace_id,
                tracker.chunks(iter(lambda: source.read(COPY_CHUNK), b"")),
                fmt,
                on_commit=tracker.on_commit,
                job_id=job_id,
            )
        import_jobs.succeed(db, job_id, report, tracker.bytes_read)
    except TidingsError as exc:
        import_jobs.fail(db, job_id, exc.detail, exc.errors, tracker.bytes_read)
    except Exception as exc:  # a database outage: shown on the page rather than lost
        # The database itself may be gone: then the job reads interrupted once stale.
        with contextlib.suppress(Exception):
            import_jobs.fail(db, job_id, f"the import stopped: {exc}", (), tracker.bytes_read)
    finally:
        path.unlink(missing_ok=True)
        RUNNING.release()


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


def recent_imports(
    runtime: Runtime, workspace_id: str, limit: int = import_jobs.LISTED
) -> list[dict[str, Any]]:
    jobs = import_jobs.recent(runtime.db, workspace_id, limit, _stale_after(runtime))
    return [job_view(job) for job in jobs]


async def _imports_page(
    request: Request,
    session: ConsoleSession,
    status_code: int = 200,
    error: str | None = None,
    errors: list[FieldError] | None = None,
) -> HTMLResponse:
    jobs = await run_in_threadpool(recent_imports, runtime_of(request), session.workspace_id)
    return render(
        request,
        "profiles/imports.html",
        status_code,
        jobs=jobs,
        error=error,
        field_errors=field_errors(errors or []),
    )


@router.get("/profiles/imports", response_class=HTMLResponse)
async def imports_page(request: Request, session: Member) -> Response:
    return await _imports_page(request, session)


@router.post("/profiles/imports", response_class=HTMLResponse)
async def start_import(request: Request, session: Editor) -> Response:
    form = await request.form()
    upload = form.get("file")
    chosen = form.get("format")
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise InvalidInput.on("file", "choose a CSV or JSON Lines file")
        fmt = _format_of(upload.filename, chosen if isinstance(chosen, str) else "")
        if not RUNNING.acquire():
            error = InvalidInput.on(
                "file", f"{RUNNING.limit} imports are running; start this one when one ends"
            )
            return await _imports_page(request, session, 429, error.detail, list(error.errors))
        try:
            path, size = await run_in_threadpool(_copy, upload.file)
        except BaseException:
            RUNNING.release()
            raise
    except InvalidInput as exc:
        return await _imports_page(request, session, 422, exc.detail, list(exc.errors))
    finally:
        await form.close()
    db = runtime_of(request).db
    try:
        job_id = await run_in_threadpool(
            lambda: import_jobs.create(
                db,
                session.workspace_id,
                source=CONSOLE_SOURCE,
                fmt=fmt,
                created_by=session.user_id,
                file_name=PurePath(upload.filename or "").name,
                bytes_total=size,
            )
        )
    except BaseException:
        path.unlink(missing_ok=True)
        RUNNING.release()
        raise
    threading.Thread(
        target=run_import,
        args=(db, job_id, session.workspace_id, fmt, path),
        name=f"console-import-{job_id}",
        daemon=True,
    ).start()
    return RedirectResponse(f"/profiles/imports/{job_id}", status_code=303)


def _job(runtime: Runtime, workspace_id: str, job_id: str) -> dict[str, Any]:
    return job_view(import_jobs.get(runtime.db, workspace_id, job_id, _stale_after(runtime)))


@router.get("/profiles/imports/{import_id}", response_class=HTMLResponse)
async def import_page(request: Request, session: Member, import_id: str) -> Response:
    try:
        job = await run_in_threadpool(
            _job, runtime_of(request), session.workspace_id, import_id[:64]
        )
    except NotFound as exc:
        return render(request, "error.html", 404, title="No such import", message=exc.detail)
    return render(request, "profiles/import.html", job=job)


@router.get("/profiles/imports/{import_id}/status")
async def import_status(request: Request, session: Member, import_id: str) -> Response:
    """The progress as JSON, for the page's script: read from the database, so any process
    of the deployment answers it."""
    try:
        job = await run_in_threadpool(
            _job, runtime_of(request), session.workspace_id, import_id[:64]
        )
    except NotFound as exc:
        return JSONResponse({"detail": exc.detail}, status_code=404)
    return JSONResponse(job, headers={"Cache-Control": "no-store"})
