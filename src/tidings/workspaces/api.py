"""Routes for the caller's workspace and its API keys (admin scope)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, status

from tidings.web import PROBLEM_RESPONSES, RuntimeDep, authenticated, require
from tidings.workspaces import service
from tidings.workspaces.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyOut,
    Scope,
    WorkspaceOut,
    WorkspacePatch,
)
from tidings.workspaces.service import Principal

router = APIRouter(prefix="/v1", tags=["workspaces"], responses=PROBLEM_RESPONSES)
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
AnyKey = Annotated[Principal, Depends(authenticated)]


def _key_out(row: dict[str, Any]) -> ApiKeyOut:
    return ApiKeyOut.model_validate(row)


@router.get("/workspace", response_model=WorkspaceOut)
def current_workspace(runtime: RuntimeDep, principal: AnyKey) -> WorkspaceOut:
    return WorkspaceOut.model_validate(service.get_workspace(runtime.db, principal.workspace_id))


@router.patch("/workspace", response_model=WorkspaceOut)
def update_workspace(body: WorkspacePatch, runtime: RuntimeDep, principal: Admin) -> WorkspaceOut:
    changes = body.model_dump(mode="json", exclude_unset=True)
    row = service.update_workspace(runtime.db, principal.workspace_id, changes)
    return WorkspaceOut.model_validate(row)


@router.get("/api-keys", response_model=ApiKeyList)
def list_keys(runtime: RuntimeDep, principal: Admin) -> ApiKeyList:
    rows = service.list_api_keys(runtime.db, principal.workspace_id)
    return ApiKeyList(items=[_key_out(row) for row in rows])


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
def create_key(body: ApiKeyCreate, runtime: RuntimeDep, principal: Admin) -> ApiKeyCreated:
    row, secret = service.create_api_key(runtime.db, principal.workspace_id, body.name, body.scopes)
    return ApiKeyCreated.model_validate({**row, "secret": secret})


@router.delete("/api-keys/{key_id}", response_model=ApiKeyOut)
def revoke_key(key_id: str, runtime: RuntimeDep, principal: Admin) -> ApiKeyOut:
    row = service.revoke_api_key(runtime.db, principal.workspace_id, key_id)
    runtime.authenticator.forget()
    return _key_out(row)
