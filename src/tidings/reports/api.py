"""Routes of reports (/v1/campaigns/{id}/report, /v1/executions/{id}/report) and message
search (/v1/messages)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from tidings.pagination import DEFAULT_LIMIT, MAX_LIMIT
from tidings.reports import service
from tidings.reports.schemas import (
    CampaignReport,
    ExecutionReport,
    FoundMessage,
    FoundMessages,
)
from tidings.web import PROBLEM_RESPONSES, RuntimeDep, require
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(tags=["reports"], responses=PROBLEM_RESPONSES)
Reader = Annotated[Principal, Depends(require(Scope.REPORTS_READ))]
Id = Annotated[str, Path(min_length=1, max_length=64)]
Since = Annotated[
    datetime | None, Query(description="The series from this time (ISO 8601, with a zone)")
]
Until = Annotated[datetime | None, Query(description="The series up to this time, excluded")]
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "The report as CSV"}
}


def _wants_csv(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def _csv(report: CampaignReport | ExecutionReport, name: str) -> Response:
    return Response(
        service.report_csv(report),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


@router.get(
    "/v1/campaigns/{campaign_id}/report",
    response_model=CampaignReport,
    responses=CSV_RESPONSE,
)
def campaign_report(
    campaign_id: Id,
    request: Request,
    runtime: RuntimeDep,
    principal: Reader,
    version_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    since: Since = None,
    until: Until = None,
) -> CampaignReport | Response:
    """The campaign's live report: every targeted message in one bucket (they add up to
    `targeted`), exclusions and failures by reason, bounces, opens and clicks (unique and
    total, per link), unsubscribes, complaints and retries; all versions together, each
    version, and over time (per minute for the last 24 hours, per day before). `Accept:
    text/csv` answers the CSV export."""
    report = service.campaign_report(
        runtime.db, principal.workspace_id, campaign_id, version_id, since=since, until=until
    )
    if _wants_csv(request):
        return _csv(report, f"campaign-{campaign_id}-report")
    return report


@router.get("/v1/campaigns/{campaign_id}/report.csv", responses=CSV_RESPONSE)
def campaign_report_csv(
    campaign_id: Id,
    runtime: RuntimeDep,
    principal: Reader,
    version_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    since: Since = None,
    until: Until = None,
) -> Response:
    """The campaign's report as CSV: version_id, period, start, metric, detail, count."""
    report = service.campaign_report(
        runtime.db, principal.workspace_id, campaign_id, version_id, since=since, until=until
    )
    return _csv(report, f"campaign-{campaign_id}-report")


@router.get(
    "/v1/executions/{execution_id}/report",
    response_model=ExecutionReport,
    responses=CSV_RESPONSE,
)
def execution_report(
    execution_id: Id,
    request: Request,
    runtime: RuntimeDep,
    principal: Reader,
    since: Since = None,
    until: Until = None,
) -> ExecutionReport | Response:
    """One execution's report, as a campaign's (`Accept: text/csv` answers CSV)."""
    report = service.execution_report(
        runtime.db, principal.workspace_id, execution_id, since=since, until=until
    )
    if _wants_csv(request):
        return _csv(report, f"execution-{execution_id}-report")
    return report


@router.get("/v1/executions/{execution_id}/report.csv", responses=CSV_RESPONSE)
def execution_report_csv(
    execution_id: Id,
    runtime: RuntimeDep,
    principal: Reader,
    since: Since = None,
    until: Until = None,
) -> Response:
    """One execution's report as CSV."""
    report = service.execution_report(
        runtime.db, principal.workspace_id, execution_id, since=since, until=until
    )
    return _csv(report, f"execution-{execution_id}-report")


@router.get("/v1/messages", response_model=FoundMessages)
def search_messages(
    runtime: RuntimeDep,
    principal: Reader,
    recipient: Annotated[
        str | None, Query(min_length=1, max_length=320, description="The recipient's id")
    ] = None,
    request_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    execution_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    campaign_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    state: Annotated[str | None, Query(min_length=1, max_length=16)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> FoundMessages:
    """Messages by recipient, trigger request id or execution (one of them is needed),
    narrowed by campaign and state; in id order, a page at a time (`next_cursor`)."""
    rows, next_cursor = service.search_messages(
        runtime.db,
        principal.workspace_id,
        recipient=recipient,
        request_id=request_id,
        execution_id=execution_id,
        campaign_id=campaign_id,
        state=state,
        cursor=cursor,
        limit=limit,
    )
    return FoundMessages(
        items=[FoundMessage.model_validate(row) for row in rows], next_cursor=next_cursor
    )
