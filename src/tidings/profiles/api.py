"""Routes of /v1/profiles (upsert, read, erase, imports, push tokens, merge, consent history).

And of /v1/profile-imports: the import jobs and their progress.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any

import anyio.from_thread
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from tidings.errors import TidingsError
from tidings.pagination import DEFAULT_LIMIT, MAX_LIMIT
from tidings.profiles import import_jobs, imports, service
from tidings.profiles.schemas import (
    APP_ID_PATTERN,
    MAX_PUSH_TOKEN_CHARS,
    ConsentEventOut,
    ConsentHistory,
    ImportFormat,
    ImportJobList,
    ImportJobOut,
    ImportReportOut,
    ProfileMerge,
    ProfileOut,
    ProfileUpsert,
    PushTokenIn,
    PushTokenList,
    PushTokenOut,
)
from tidings.runtime import Runtime
from tidings.vocabulary import NAMESPACE_PATTERN, Channel
from tidings.web import PROBLEM_RESPONSES, RuntimeDep, require
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(prefix="/v1/profiles", tags=["profiles"], responses=PROBLEM_RESPONSES)
# Imports by id: under /v1/profiles/ an id would read as a namespace and identity.
imports_router = APIRouter(
    prefix="/v1/profile-imports", tags=["profiles"], responses=PROBLEM_RESPONSES
)
API_SOURCE = "api"
Reader = Annotated[Principal, Depends(require(Scope.PROFILES_READ))]
Writer = Annotated[Principal, Depends(require(Scope.PROFILES_WRITE))]
Namespace = Annotated[str, Path(pattern=NAMESPACE_PATTERN)]
IdentityValue = Annotated[str, Path(min_length=1, max_length=320)]


UPSERT_RESPONSES: dict[int | str, dict[str, object]] = {
    201: {"model": ProfileOut, "description": "Created"}
}
REGISTER_RESPONSES: dict[int | str, dict[str, object]] = {
    201: {"model": PushTokenOut, "description": "Registered: new to this profile"}
}


def _upsert(
    runtime: Runtime,
    principal: Principal,
    key: tuple[str, str],
    body: ProfileUpsert,
    response: Response,
    *,
    merge: bool,
) -> ProfileOut:
    namespace, identity = key
    result = service.upsert(
        runtime.db,
        principal.workspace_id,
        namespace,
        identity,
        body,
        merge=merge,
        detail=f"api_key:{principal.key_id}",
    )
    response.status_code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
    return ProfileOut.model_validate(result.profile)


IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


@router.post("/imports", response_model=ImportReportOut, openapi_extra=IMPORT_BODY)
async def import_profiles(
    request: Request,
    runtime: RuntimeDep,
    principal: Writer,
    format: Annotated[
        ImportFormat | None,
        Query(description="csv or jsonl; by default, the one the Content-Type names"),
    ] = None,
) -> ImportReportOut:
    """Creates or updates profiles from a CSV or JSON Lines body, streamed: upsert by identity
    with PATCH's merge semantics, in batches; a bad row is rejected alone (line and reason)."""
    fmt = imports.format_for(format, request.headers.get("content-type"))
    body = request.stream()

    def chunks() -> Iterator[bytes]:
        # The import runs on a worker thread and pulls the body from the event loop one
        # chunk at a time: the body is never held whole.
        while True:
            try:
                chunk = anyio.from_thread.run(body.__anext__)
            except StopAsyncIteration:
                return
            if chunk:
                yield chunk

    length = request.headers.get("content-length", "")
    job_id = await run_in_threadpool(
        lambda: import_jobs.create(
            runtime.db,
            principal.workspace_id,
            source=API_SOURCE,
            fmt=fmt,
            created_by=principal.key_id,
            bytes_total=int(length) if length.isdigit() else None,
            state=import_jobs.JobState.RUNNING,
        )
    )
    report = await run_in_threadpool(_run_job, runtime, principal, job_id, chunks(), fmt)
    return ImportReportOut.model_validate({**report.as_dict(), "import_id": job_id})


def _run_job(
    runtime: Runtime,
    principal: Principal,
    job_id: str,
    chunks: Iterator[bytes],
    fmt: ImportFormat,
) -> imports.ImportReport:
    """The import as job `job_id`: progress written with each batch, the end recorded."""
    tracker = import_jobs.Tracker(runtime.db, job_id)
    try:
        report = imports.import_profiles(
            runtime.db,
            principal.workspace_id,
            tracker.chunks(chunks),
            fmt,
            on_commit=tracker.on_commit,
            job_id=job_id,
        )
    except Exception as exc:  # a bad header, the client gone, the database failing
        # Recorded if the database lets it (else the job reads interrupted once stale); the
        # error itself answers the request.
        if isinstance(exc, TidingsError):
            # The answer names the job, whose record keeps the error and the bytes read.
            exc.extensions["import_id"] = job_id
        with contextlib.suppress(Exception):
            if isinstance(exc, TidingsError):
                import_jobs.fail(runtime.db, job_id, exc.detail, exc.errors, tracker.bytes_read)
            else:
                reason = f"the import stopped: {type(exc).__name__}"
                import_jobs.fail(runtime.db, job_id, reason, (), tracker.bytes_read)
        raise
    import_jobs.succeed(runtime.db, job_id, report, tracker.bytes_read)
    return report


def _job_out(job: dict[str, Any]) -> ImportJobOut:
    return ImportJobOut(
        id=job["id"],
        state=job["state"],
        source=job["source"],
        created_by=job["created_by"],
        file_name=job["file_name"],
        format=job["format"],
        bytes_total=job["bytes_total"],
        bytes_read=job["bytes_read"],
        lines=job["lines"],
        created=job["rows_created"],
        updated=job["rows_updated"],
        unchanged=job["rows_unchanged"],
        rejected_total=job["rows_rejected"],
        rejected=job["rejected_sample"],
        error=job["error"],
        errors=job["error_details"] or [],
        created_at=job["created_at"],
        started_at=job["started_at"],
        finished_at=job["finished_at"],
        updated_at=job["updated_at"],
    )


@imports_router.get("", response_model=ImportJobList)
def list_imports(
    runtime: RuntimeDep,
    principal: Reader,
    cursor: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
) -> ImportJobList:
    """The workspace's profile imports (API, console, command line), newest first."""
    stale_after = timedelta(seconds=runtime.settings.import_stale_seconds)
    rows, next_cursor = import_jobs.page(
        runtime.db, principal.workspace_id, cursor, limit, stale_after
    )
    return ImportJobList(items=[_job_out(row) for row in rows], next_cursor=next_cursor)


@imports_router.get("/{import_id}", response_model=ImportJobOut)
def get_import(
    import_id: Annotated[str, Path(max_length=64)], runtime: RuntimeDep, principal: Reader
) -> ImportJobOut:
    """One import and its progress, as last committed: any process of the deployment answers.
    A job whose process stopped writing progress reads `interrupted`; its rows stay."""
    stale_after = timedelta(seconds=runtime.settings.import_stale_seconds)
    job = import_jobs.get(runtime.db, principal.workspace_id, import_id, stale_after)
    return _job_out(job)


@router.put("/{namespace}/{identity}", response_model=ProfileOut, responses=UPSERT_RESPONSES)
def put_profile(
    namespace: Namespace,
    identity: IdentityValue,
    body: ProfileUpsert,
    response: Response,
    runtime: RuntimeDep,
    principal: Writer,
) -> ProfileOut:
    """Creates or replaces: attributes, time zone and locale as sent; identities and consent
    merge."""
    return _upsert(runtime, principal, (namespace, identity), body, response, merge=False)


@router.patch("/{namespace}/{identity}", response_model=ProfileOut, responses=UPSERT_RESPONSES)
def patch_profile(
    namespace: Namespace,
    identity: IdentityValue,
    body: ProfileUpsert,
    response: Response,
    runtime: RuntimeDep,
    principal: Writer,
) -> ProfileOut:
    """Like PUT, but attributes merge key by key (null removes one) and absent fields stay."""
    return _upsert(runtime, principal, (namespace, identity), body, response, merge=True)


@router.get("/{namespace}/{identity}", response_model=ProfileOut)
def get_profile(
    namespace: Namespace, identity: IdentityValue, runtime: RuntimeDep, principal: Reader
) -> ProfileOut:
    return ProfileOut.model_validate(
        service.get(runtime.db, principal.workspace_id, namespace, identity)
    )


@router.get("/{namespace}/{identity}/consent-history", response_model=ConsentHistory)
def consent_history(
    namespace: Namespace,
    identity: IdentityValue,
    runtime: RuntimeDep,
    principal: Reader,
    channel: Annotated[Channel | None, Query(description="Only this channel's changes")] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> ConsentHistory:
    """Every change of the profile's consent, newest first: channel, status before and
    after, source, time and what made it (a message, an API key, a console user)."""
    rows, next_cursor = service.consent_changes(
        runtime.db, principal.workspace_id, namespace, identity, channel, cursor, limit
    )
    return ConsentHistory(
        items=[ConsentEventOut.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.delete("/{namespace}/{identity}", status_code=status.HTTP_204_NO_CONTENT)
def delete_profile(
    namespace: Namespace, identity: IdentityValue, runtime: RuntimeDep, principal: Writer
) -> Response:
    """Erases the person (right to be forgotten): the profile, its identities, push tokens and
    memberships are deleted, and its messages keep their counts but no personal data."""
    service.erase(runtime.db, principal.workspace_id, namespace, identity)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/merge", response_model=ProfileOut)
def merge_profiles(body: ProfileMerge, runtime: RuntimeDep, principal: Writer) -> ProfileOut:
    """Merges the profile `from` names into the one `into` names; answers the merged profile.
    Identities, push tokens, memberships and pending messages move; the target's attributes
    win; per channel, the most recent consent change wins; `from` is deleted."""
    return ProfileOut.model_validate(
        service.merge(runtime.db, principal.workspace_id, body.into, body.source)
    )


@router.put(
    "/{namespace}/{identity}/push-tokens",
    response_model=PushTokenOut,
    responses=REGISTER_RESPONSES,
)
def register_push_token(
    namespace: Namespace,
    identity: IdentityValue,
    body: PushTokenIn,
    response: Response,
    runtime: RuntimeDep,
    principal: Writer,
) -> PushTokenOut:
    """Registers a device's token for an app: `201` when new to the profile (a token another
    profile had moves here), `200` when it was there (seen again)."""
    token, created = service.register_push_token(
        runtime.db, principal.workspace_id, namespace, identity, body
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return PushTokenOut.model_validate(token)


@router.get("/{namespace}/{identity}/push-tokens", response_model=PushTokenList)
def list_push_tokens(
    namespace: Namespace, identity: IdentityValue, runtime: RuntimeDep, principal: Reader
) -> PushTokenList:
    tokens = service.list_push_tokens(runtime.db, principal.workspace_id, namespace, identity)
    return PushTokenList(items=[PushTokenOut.model_validate(token) for token in tokens])


@router.delete("/{namespace}/{identity}/push-tokens", status_code=status.HTTP_204_NO_CONTENT)
def remove_push_token(
    namespace: Namespace,
    identity: IdentityValue,
    token: Annotated[str, Query(min_length=1, max_length=MAX_PUSH_TOKEN_CHARS)],
    runtime: RuntimeDep,
    principal: Writer,
    app_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=APP_ID_PATTERN,
            description="The token's app; every app of the profile when left out",
        ),
    ] = None,
) -> Response:
    """Unregisters a token (query parameters: tokens may hold any character but control ones,
    which a path segment would need escaped)."""
    service.remove_push_token(
        runtime.db, principal.workspace_id, namespace, identity, token, app_id
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
