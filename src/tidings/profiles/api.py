"""Routes of /v1/profiles/{namespace}/{id}."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import anyio.from_thread
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from tidings.profiles import imports, service
from tidings.profiles.schemas import ImportFormat, ImportReportOut, ProfileOut, ProfileUpsert
from tidings.runtime import Runtime
from tidings.vocabulary import NAMESPACE_PATTERN
from tidings.web import PROBLEM_RESPONSES, RuntimeDep, require
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(prefix="/v1/profiles", tags=["profiles"], responses=PROBLEM_RESPONSES)
Reader = Annotated[Principal, Depends(require(Scope.PROFILES_READ))]
Writer = Annotated[Principal, Depends(require(Scope.PROFILES_WRITE))]
Namespace = Annotated[str, Path(pattern=NAMESPACE_PATTERN)]
IdentityValue = Annotated[str, Path(min_length=1, max_length=320)]


UPSERT_RESPONSES: dict[int | str, dict[str, object]] = {
    201: {"model": ProfileOut, "description": "Created"}
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
        runtime.db, principal.workspace_id, namespace, identity, body, merge=merge
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

    report = await run_in_threadpool(
        imports.import_profiles, runtime.db, principal.workspace_id, chunks(), fmt
    )
    return ImportReportOut.model_validate(report.as_dict())


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


@router.delete("/{namespace}/{identity}", status_code=status.HTTP_204_NO_CONTENT)
def delete_profile(
    namespace: Namespace, identity: IdentityValue, runtime: RuntimeDep, principal: Writer
) -> Response:
    service.delete(runtime.db, principal.workspace_id, namespace, identity)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
