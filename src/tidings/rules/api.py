"""Routes of /v1/rule-sets, and of the rule sets a campaign follows."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response, status

from tidings.rules import service
from tidings.rules.schemas import (
    CampaignRuleSets,
    CampaignRuleSetsOut,
    RuleSetCreate,
    RuleSetList,
    RuleSetOut,
    RuleSetPatch,
)
from tidings.web import PROBLEM_RESPONSES, RuntimeDep, require
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(tags=["business rules"], responses=PROBLEM_RESPONSES)
Reader = Annotated[Principal, Depends(require(Scope.CAMPAIGNS_READ))]
Writer = Annotated[Principal, Depends(require(Scope.CAMPAIGNS_WRITE))]
Id = Annotated[str, Path(min_length=1, max_length=64)]


def _out(row: dict[str, Any]) -> RuleSetOut:
    return RuleSetOut.model_validate(row)


@router.post("/v1/rule-sets", response_model=RuleSetOut, status_code=status.HTTP_201_CREATED)
def create_rule_set(body: RuleSetCreate, runtime: RuntimeDep, principal: Writer) -> RuleSetOut:
    """Frequency caps and quiet hours for marketing messages. A `default` rule set applies to
    every marketing campaign of the workspace; others to the campaigns that name them."""
    return _out(service.create(runtime.db, principal.workspace_id, body))


@router.get("/v1/rule-sets", response_model=RuleSetList)
def list_rule_sets(runtime: RuntimeDep, principal: Reader) -> RuleSetList:
    return RuleSetList(
        items=[_out(row) for row in service.list_all(runtime.db, principal.workspace_id)]
    )


@router.get("/v1/rule-sets/{rule_set_id}", response_model=RuleSetOut)
def get_rule_set(rule_set_id: Id, runtime: RuntimeDep, principal: Reader) -> RuleSetOut:
    return _out(service.get(runtime.db, principal.workspace_id, rule_set_id))


@router.patch("/v1/rule-sets/{rule_set_id}", response_model=RuleSetOut)
def update_rule_set(
    rule_set_id: Id, body: RuleSetPatch, runtime: RuntimeDep, principal: Writer
) -> RuleSetOut:
    """Applies to the next message claimed, on live campaigns too."""
    return _out(service.update(runtime.db, principal.workspace_id, rule_set_id, body))


@router.delete("/v1/rule-sets/{rule_set_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_rule_set(rule_set_id: Id, runtime: RuntimeDep, principal: Writer) -> Response:
    """`409` while a campaign names it."""
    service.delete(runtime.db, principal.workspace_id, rule_set_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/campaigns/{campaign_id}/rule-sets", response_model=CampaignRuleSetsOut)
def get_campaign_rule_sets(
    campaign_id: Id, runtime: RuntimeDep, principal: Reader
) -> CampaignRuleSetsOut:
    ids = service.campaign_rule_sets(runtime.db, principal.workspace_id, campaign_id)
    return CampaignRuleSetsOut(campaign_id=campaign_id, rule_set_ids=ids)


@router.put("/v1/campaigns/{campaign_id}/rule-sets", response_model=CampaignRuleSetsOut)
def set_campaign_rule_sets(
    campaign_id: Id, body: CampaignRuleSets, runtime: RuntimeDep, principal: Writer
) -> CampaignRuleSetsOut:
    """The rule sets of a marketing campaign, beside the workspace's defaults: replaces the
    list, and applies at once to its live version (rules are read at each claim)."""
    ids = service.attach(runtime.db, principal.workspace_id, campaign_id, body.rule_set_ids)
    return CampaignRuleSetsOut(campaign_id=campaign_id, rule_set_ids=ids)
