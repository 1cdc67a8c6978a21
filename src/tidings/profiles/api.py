"""Routes of /v1/profiles: upsert, read, erase, imports, push tokens, merge."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import anyio.from_thread
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from tidings.profiles import imports, service
from tidings.profiles.schemas import (
    APP_ID_PATTERN,
    MAX_PUSH_TOKEN_CHARS,
    ImportFormat,
    ImportReportOut,
    ProfileMerge,
    ProfileOut,
    ProfileUpsert,
    PushTokenIn,
    PushTokenList,
    PushTokenOut,
)
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
