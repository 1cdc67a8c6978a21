"""Routes of proofs (/v1/campaigns/{id}/proofs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, status

from tidings.clock import utcnow
from tidings.proofs import service
from tidings.proofs.schemas import ProofAccepted, ProofCreate
from tidings.web import PROBLEM_RESPONSES, RuntimeDep, require
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], responses=PROBLEM_RESPONSES)
Writer = Annotated[Principal, Depends(require(Scope.CAMPAIGNS_WRITE))]
CampaignId = Annotated[str, Path(min_length=1, max_length=64)]


@router.post(
    "/{campaign_id}/proofs",
    response_model=ProofAccepted,
    status_code=status.HTTP_202_ACCEPTED,
)
def send_proof(
    campaign_id: CampaignId, body: ProofCreate, runtime: RuntimeDep, principal: Writer
) -> ProofAccepted:
    """Queues one message of the campaign to a tester, marked as a proof: consent, quiet hours
    and frequency caps do not apply (the suppression list does), email subjects start with
    "[Proof] ", and reports leave it out. Works on drafts."""
    if body.profile_identity is not None:
        # As for preview: a proof for a stored profile discloses its attributes.
        principal.require(Scope.PROFILES_READ)
    accepted = service.send(
        runtime.db,
        runtime.templates,
        runtime.settings.resolved_public_url,
        principal.workspace_id,
        campaign_id,
        body,
        utcnow(),
    )
    runtime.work.notify()
    return ProofAccepted.model_validate(accepted)
