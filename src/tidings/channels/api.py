"""Routes of /v1/channel-configurations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from tidings.channels import service
from tidings.channels.schemas import (
    ChannelConfigurationCreate,
    ChannelConfigurationList,
    ChannelConfigurationOut,
    ChannelConfigurationPatch,
)
from tidings.pagination import DEFAULT_LIMIT, MAX_LIMIT
from tidings.vocabulary import Category, Channel
from tidings.web import PROBLEM_RESPONSES, RuntimeDep, require
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(
    prefix="/v1/channel-configurations",
    tags=["channel configurations"],
    responses=PROBLEM_RESPONSES,
)
Reader = Annotated[Principal, Depends(require(Scope.CAMPAIGNS_READ))]
# Configurations carry provider credentials: changing them is an administrator's job.
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]


@router.post("", response_model=ChannelConfigurationOut, status_code=status.HTTP_201_CREATED)
def create_configuration(
    body: ChannelConfigurationCreate, runtime: RuntimeDep, principal: Admin
) -> ChannelConfigurationOut:
    row = service.create(runtime.db, principal.workspace_id, body)
    return ChannelConfigurationOut.model_validate(service.to_public(row))


@router.get("", response_model=ChannelConfigurationList)
def list_configurations(
    runtime: RuntimeDep,
    principal: Reader,
    channel: Channel | None = None,
    category: Category | None = None,
    cursor: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
) -> ChannelConfigurationList:
    rows, next_cursor = service.list_page(
        runtime.db,
        principal.workspace_id,
        channel=channel,
        category=category.value if category else None,
        cursor=cursor,
        limit=limit,
    )
    return ChannelConfigurationList(
        items=[ChannelConfigurationOut.model_validate(service.to_public(r)) for r in rows],
        next_cursor=next_cursor,
    )


@router.get("/{configuration_id}", response_model=ChannelConfigurationOut)
def get_configuration(
    configuration_id: str, runtime: RuntimeDep, principal: Reader
) -> ChannelConfigurationOut:
    row = service.get(runtime.db, principal.workspace_id, configuration_id)
    return ChannelConfigurationOut.model_validate(service.to_public(row))


@router.patch("/{configuration_id}", response_model=ChannelConfigurationOut)
def update_configuration(
    configuration_id: str, body: ChannelConfigurationPatch, runtime: RuntimeDep, principal: Admin
) -> ChannelConfigurationOut:
    row = service.update(runtime.db, principal.workspace_id, configuration_id, body)
    return ChannelConfigurationOut.model_validate(service.to_public(row))
