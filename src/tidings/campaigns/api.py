"""Routes of /v1/campaigns: authoring, review, lifecycle, versions, preview."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, status

from tidings.campaigns import service
from tidings.campaigns.schemas import (
    CampaignCreate,
    CampaignList,
    CampaignOut,
    CampaignPatch,
    ContentVariables,
    PreviewOut,
    PreviewRequest,
    ReviewOut,
    VersionList,
    VersionOut,
)
from tidings.campaigns.state import CampaignStatus
from tidings.pagination import DEFAULT_LIMIT, MAX_LIMIT
from tidings.vocabulary import Category, Channel
from tidings.web import PROBLEM_RESPONSES, FieldProblem, RuntimeDep, require
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], responses=PROBLEM_RESPONSES)
Reader = Annotated[Principal, Depends(require(Scope.CAMPAIGNS_READ))]
Writer = Annotated[Principal, Depends(require(Scope.CAMPAIGNS_WRITE))]
CampaignId = Annotated[str, Path(min_length=1, max_length=64)]


def _out(view: dict[str, Any]) -> CampaignOut:
    return CampaignOut.model_validate(view)


@router.post("", response_model=CampaignOut, status_code=status.HTTP_201_CREATED)
def create_campaign(body: CampaignCreate, runtime: RuntimeDep, principal: Writer) -> CampaignOut:
    return _out(service.create(runtime.db, principal.workspace_id, body, runtime.templates))


@router.get("", response_model=CampaignList)
def list_campaigns(
    runtime: RuntimeDep,
    principal: Reader,
    status_: Annotated[CampaignStatus | None, Query(alias="status")] = None,
    category: Category | None = None,
    channel: Channel | None = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Name contains")] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> CampaignList:
    filters = service.CampaignFilters(
        status=status_, category=category, channel=channel, tag=tag, search=q
    )
    views, next_cursor = service.list_page(
        runtime.db, principal.workspace_id, filters, cursor, limit
    )
    return CampaignList(items=[_out(view) for view in views], next_cursor=next_cursor)


@router.get("/{campaign_id}", response_model=CampaignOut)
def get_campaign(campaign_id: CampaignId, runtime: RuntimeDep, principal: Reader) -> CampaignOut:
    return _out(service.get(runtime.db, principal.workspace_id, campaign_id))


@router.patch("/{campaign_id}", response_model=CampaignOut)
def update_campaign(
    campaign_id: CampaignId, body: CampaignPatch, runtime: RuntimeDep, principal: Writer
) -> CampaignOut:
    return _out(
        service.update(runtime.db, principal.workspace_id, campaign_id, body, runtime.templates)
    )


@router.delete("/{campaign_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_campaign(campaign_id: CampaignId, runtime: RuntimeDep, principal: Writer) -> Response:
    service.delete(runtime.db, principal.workspace_id, campaign_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{campaign_id}/review", response_model=ReviewOut, response_model_exclude_none=True)
def review_campaign(campaign_id: CampaignId, runtime: RuntimeDep, principal: Reader) -> ReviewOut:
    result, number = service.review(
        runtime.db,
        runtime.templates,
        principal.workspace_id,
        campaign_id,
        runtime.settings.smtp_url,
    )
    return ReviewOut(
        ready=result.ready,
        version=number,
        errors=[FieldProblem.model_validate(e.as_dict()) for e in result.errors],
        warnings=[FieldProblem.model_validate(w.as_dict()) for w in result.warnings],
        variables=ContentVariables(profile=result.profile_paths, context=result.context_paths),
    )


@router.post("/{campaign_id}/activate", response_model=CampaignOut)
def activate_campaign(
    campaign_id: CampaignId, runtime: RuntimeDep, principal: Writer
) -> CampaignOut:
    return _out(
        service.activate(
            runtime.db,
            runtime.templates,
            principal.workspace_id,
            campaign_id,
            runtime.settings.smtp_url,
        )
    )


@router.post("/{campaign_id}/stop", response_model=CampaignOut)
def stop_campaign(campaign_id: CampaignId, runtime: RuntimeDep, principal: Writer) -> CampaignOut:
    return _out(service.stop(runtime.db, principal.workspace_id, campaign_id))


@router.post("/{campaign_id}/archive", response_model=CampaignOut)
def archive_campaign(
    campaign_id: CampaignId, runtime: RuntimeDep, principal: Writer
) -> CampaignOut:
    return _out(service.archive(runtime.db, principal.workspace_id, campaign_id))


@router.post(
    "/{campaign_id}/duplicate", response_model=CampaignOut, status_code=status.HTTP_201_CREATED
)
def duplicate_campaign(
    campaign_id: CampaignId, runtime: RuntimeDep, principal: Writer
) -> CampaignOut:
    return _out(service.duplicate(runtime.db, principal.workspace_id, campaign_id))


@router.get("/{campaign_id}/versions", response_model=VersionList)
def list_versions(campaign_id: CampaignId, runtime: RuntimeDep, principal: Reader) -> VersionList:
    views = service.list_versions(runtime.db, principal.workspace_id, campaign_id)
    return VersionList(items=[VersionOut.model_validate(view) for view in views])


@router.post("/{campaign_id}/versions", response_model=VersionOut)
def open_draft_version(
    campaign_id: CampaignId, runtime: RuntimeDep, principal: Writer
) -> VersionOut:
    """Opens a draft version of a live or scheduled campaign (returns the open one if any)."""
    view = service.open_draft_version(runtime.db, principal.workspace_id, campaign_id)
    return VersionOut.model_validate(view)


@router.delete("/{campaign_id}/versions/draft", response_model=CampaignOut)
def discard_draft_version(
    campaign_id: CampaignId, runtime: RuntimeDep, principal: Writer
) -> CampaignOut:
    return _out(service.discard_draft_version(runtime.db, principal.workspace_id, campaign_id))


@router.get("/{campaign_id}/versions/{number}", response_model=VersionOut)
def get_version(
    campaign_id: CampaignId,
    number: Annotated[int, Path(ge=1, le=1_000_000)],
    runtime: RuntimeDep,
    principal: Reader,
) -> VersionOut:
    view = service.get_version(runtime.db, principal.workspace_id, campaign_id, number)
    return VersionOut.model_validate(view)


@router.post("/{campaign_id}/preview", response_model=PreviewOut)
def preview_campaign(
    campaign_id: CampaignId, body: PreviewRequest, runtime: RuntimeDep, principal: Reader
) -> PreviewOut:
    if body.identity is not None:
        # Rendering for a stored profile discloses its attributes.
        principal.require(Scope.PROFILES_READ)
    view = service.preview(
        runtime.db,
        runtime.templates,
        runtime.settings.resolved_public_url,
        principal.workspace_id,
        campaign_id,
        body,
    )
    return PreviewOut.model_validate(view)
