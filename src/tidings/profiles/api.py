"""Routes of /v1/profiles/{namespace}/{id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from tidings.profiles import service
from tidings.profiles.schemas import ProfileOut, ProfileUpsert
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
