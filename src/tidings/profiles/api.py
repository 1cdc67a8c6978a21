"""Routes of /v1/profiles/{namespace}/{id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from tidings.profiles import service
from tidings.profiles.schemas import ProfileOut, ProfileUpsert
from tidings.vocabulary import NAMESPACE_PATTERN
from tidings.web import PROBLEM_RESPONSES, RuntimeDep, require
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(prefix="/v1/profiles", tags=["profiles"], responses=PROBLEM_RESPONSES)
Reader = Annotated[Principal, Depends(require(Scope.PROFILES_READ))]
Writer = Annotated[Principal, Depends(require(Scope.PROFILES_WRITE))]
Namespace = Annotated[str, Path(pattern=NAMESPACE_PATTERN)]
IdentityValue = Annotated[str, Path(min_length=1, max_length=320)]


@router.put(
    "/{namespace}/{identity}",
    response_model=ProfileOut,
    responses={201: {"model": ProfileOut, "description": "Created"}},
)
def put_profile(
    namespace: Namespace,
    identity: IdentityValue,
    body: ProfileUpsert,
    response: Response,
    runtime: RuntimeDep,
    principal: Writer,
) -> ProfileOut:
    result = service.upsert(runtime.db, principal.workspace_id, namespace, identity, body)
    response.status_code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
    return ProfileOut.model_validate(result.profile)


@router.patch(
    "/{namespace}/{identity}",
    response_model=ProfileOut,
    responses={201: {"model": ProfileOut, "description": "Created"}},
)
def patch_profile(
    namespace: Namespace,
    identity: IdentityValue,
    body: ProfileUpsert,
    response: Response,
    runtime: RuntimeDep,
    principal: Writer,
) -> ProfileOut:
    """Like PUT, but attributes merge key by key (null removes one) and absent fields stay."""
    result = service.upsert(
        runtime.db, principal.workspace_id, namespace, identity, body, merge=True
    )
    response.status_code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
    return ProfileOut.model_validate(result.profile)


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
