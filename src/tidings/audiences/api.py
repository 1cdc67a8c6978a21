"""Routes of /v1/audiences: list and rule audiences, members, estimates."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from tidings.audiences import service
from tidings.audiences.schemas import (
    AudienceCreate,
    AudienceCreated,
    AudienceList,
    AudienceOut,
    AudienceUpdate,
    Estimate,
    MembersChange,
    MembersChanged,
    RuleBody,
)
from tidings.errors import PermissionDenied
from tidings.pagination import DEFAULT_LIMIT, MAX_LIMIT
from tidings.web import PROBLEM_RESPONSES, RuntimeDep, authenticated, require
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(prefix="/v1/audiences", tags=["audiences"], responses=PROBLEM_RESPONSES)
READ_SCOPES = (Scope.PROFILES_READ, Scope.CAMPAIGNS_READ)


async def require_audience_reader(
    principal: Annotated[Principal, Depends(authenticated)],
) -> Principal:
    """Audiences are read by those who read profiles and by those who author campaigns."""
    if not any(principal.allows(scope) for scope in READ_SCOPES):
        raise PermissionDenied(
            "this API key lacks the 'profiles:read' or the 'campaigns:read' scope"
        )
    return principal


Reader = Annotated[Principal, Depends(require_audience_reader)]
# Marketers build audiences as they build campaigns.
Writer = Annotated[Principal, Depends(require(Scope.CAMPAIGNS_WRITE))]


def _out(row: dict[str, Any]) -> AudienceOut:
    return AudienceOut.model_validate(row)


@router.post("", response_model=AudienceCreated, status_code=status.HTTP_201_CREATED)
def create_audience(
    body: AudienceCreate, runtime: RuntimeDep, principal: Writer
) -> AudienceCreated:
    """Creates a rule audience (`rule`: the profiles it matches when an execution reads it) or
    a list audience, with up to 10,000 members given by identity. Identities that are invalid
    or that no profile of the workspace has are listed in `rejected`, not created. A rule that
    does not parse is a `422` naming `rule`, with the line and column of the problem."""
    row, result = service.create(runtime.db, principal.workspace_id, body)
    return AudienceCreated.model_validate({**row, "rejected": result.rejected})


@router.get("", response_model=AudienceList)
def list_audiences(
    runtime: RuntimeDep,
    principal: Reader,
    cursor: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
) -> AudienceList:
    rows, next_cursor = service.list_page(
        runtime.db, principal.workspace_id, cursor=cursor, limit=limit
    )
    return AudienceList(items=[_out(row) for row in rows], next_cursor=next_cursor)


@router.post("/estimate", response_model=Estimate)
def estimate_rule(body: RuleBody, runtime: RuntimeDep, principal: Reader) -> Estimate:
    """How many profiles a rule matches now, without saving it: exact up to 100,000, else
    `exact: false` and at least `count`."""
    return Estimate.model_validate(service.estimate(runtime.db, principal.workspace_id, body.rule))


@router.get("/{audience_id}", response_model=AudienceOut)
def get_audience(audience_id: str, runtime: RuntimeDep, principal: Reader) -> AudienceOut:
    """The audience; a rule audience comes with its `estimate`."""
    return _out(service.get(runtime.db, principal.workspace_id, audience_id))


@router.patch("/{audience_id}", response_model=AudienceOut)
def update_audience(
    audience_id: str, body: AudienceUpdate, runtime: RuntimeDep, principal: Writer
) -> AudienceOut:
    """Changes the name, the description, or the rule of a rule audience (`409` on a list
    audience). An execution fanning out reads the new rule from its next page."""
    return _out(service.update(runtime.db, principal.workspace_id, audience_id, body))


@router.delete("/{audience_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_audience(audience_id: str, runtime: RuntimeDep, principal: Writer) -> Response:
    """Removes the audience and its memberships, never the profiles. `409` while a live or
    scheduled campaign targets it."""
    service.delete(runtime.db, principal.workspace_id, audience_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{audience_id}/members", response_model=MembersChanged, response_model_exclude_none=True
)
def add_members(
    audience_id: str, body: MembersChange, runtime: RuntimeDep, principal: Writer
) -> MembersChanged:
    """Adds up to 10,000 profiles by identity; adding a member again changes nothing.
    `added` counts new members; `rejected` lists identities that are invalid or unknown.
    `409` on a rule audience."""
    result = service.add_members(runtime.db, principal.workspace_id, audience_id, body.members)
    return MembersChanged.model_validate({"added": result.count, "rejected": result.rejected})


@router.post(
    "/{audience_id}/members/remove",
    response_model=MembersChanged,
    response_model_exclude_none=True,
)
def remove_members(
    audience_id: str, body: MembersChange, runtime: RuntimeDep, principal: Writer
) -> MembersChanged:
    """Removes up to 10,000 profiles by identity; identities that are not members are no
    error. `removed` counts memberships removed. `409` on a rule audience."""
    result = service.remove_members(runtime.db, principal.workspace_id, audience_id, body.members)
    return MembersChanged.model_validate({"removed": result.count, "rejected": result.rejected})
