"""Routes of the AJO-compatible execution API under /ajo/im.

The same service as /v1/executions behind AJO's wire format: an integration written for AJO
works by changing its base URL and key. `Authorization: Bearer <Tidings API key>`;
`x-sandbox-name` names the key's workspace; `x-api-key` and `x-gw-ims-org-id` are accepted and
not checked. Errors use AJO's errorResponse shape, with AJO's 400 for invalid requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tidings.ajo.schemas import (
    AjoAudienceRequest,
    AjoError,
    AjoErrorReport,
    AjoExecutionResponse,
    AjoExecutionStatus,
    AjoScheduledExecution,
    AjoUnitaryRequest,
)
from tidings.clock import utcnow
from tidings.content.schemas import field_path
from tidings.errors import (
    FieldError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    TidingsError,
)
from tidings.executions import service as executions
from tidings.executions.schemas import ExecutionCreate
from tidings.executions.state import ExecutionKind
from tidings.web import principal_of, retry_headers, runtime_of
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(
    prefix="/ajo/im",
    tags=["AJO-compatible execution API"],
    responses={"4XX": {"model": AjoError, "description": "AJO's errorResponse"}},
)
ERROR_TYPE = "urn:tidings:ajo:error:{status}"
Wire = TypeVar("Wire")


def _error(
    status: int, title: str, context: dict[str, str], headers: dict[str, str] | None = None
) -> JSONResponse:
    body = AjoError(
        type=ERROR_TYPE.format(status=status),
        title=title,
        status=status,
        report=AjoErrorReport(additional_context=context),
    )
    return JSONResponse(body.model_dump(by_alias=True), status_code=status, headers=headers)


async def _principal(request: Request) -> Principal:
    principal = await principal_of(request)
    sandbox = request.headers.get("x-sandbox-name")
    if not sandbox:
        raise InvalidInput.on("x-sandbox-name", "is required: the name of the workspace")
    if sandbox != principal.workspace_name:
        raise PermissionDenied("x-sandbox-name is not the workspace of this API key")
    return principal


def _status_of(exc: TidingsError) -> int:
    # AJO answers invalid requests with 400 where Tidings' native API says 422.
    return 400 if isinstance(exc, InvalidInput) else exc.status


def _parse(body: bytes, parse: Callable[[Any], Wire], context: dict[str, str]) -> Wire:
    try:
        # orjson: strict JSON, and a nesting limit where json.loads would recurse until
        # Python's stack gives out.
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput.on("body", "is not valid JSON") from None
    if isinstance(raw, dict):
        # Echoed in errors, as AJO's additionalContext does.
        context.update(
            {name: str(raw[name])[:200] for name in ("requestId", "campaignId") if name in raw}
        )
    try:
        return parse(raw)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> InvalidInput:
    errors = [FieldError(field_path(e["loc"]) or "body", e["msg"]) for e in exc.errors()]
    return InvalidInput("the request is invalid", errors=errors)


def _execution(wire: AjoUnitaryRequest | AjoAudienceRequest) -> ExecutionCreate:
    """The native request; AJO's looser fields (any namespace text) are checked here."""
    try:
        return wire.to_execution()
    except ValidationError as exc:
        raise _invalid(exc) from None


def _failure(exc: TidingsError, context: dict[str, str]) -> JSONResponse:
    for error in exc.errors:
        context[error.field] = error.message
    context.setdefault("detail", exc.detail)
    return _error(_status_of(exc), exc.title, context, retry_headers(exc))


async def _handle(
    request: Request,
    parse: Callable[[Any], AjoUnitaryRequest | AjoAudienceRequest],
    high_throughput: bool = False,
) -> JSONResponse:
    context: dict[str, str] = {}
    try:
        principal = await _principal(request)
        principal.require(Scope.EXECUTIONS_TRIGGER)
        wire = _parse(await request.body(), parse, context)
        now = utcnow()
        job = executions.prepare(
            principal.workspace_id, _execution(wire), now, high_throughput=high_throughput
        )
        triggered = await runtime_of(request).acceptor.accept(job)
    except TidingsError as exc:
        return _failure(exc, context)
    if isinstance(wire, AjoAudienceRequest) and wire.schedule and wire.schedule.execute_at:
        scheduled = AjoScheduledExecution(
            schedule_id=triggered.response["execution_id"],
            audience={"id": wire.audience.id} if wire.audience else None,
            campaign_id=wire.campaign_id,
            execute_at=wire.schedule.execute_at,
            schedule_status="Scheduled",
        )
        return JSONResponse(scheduled.model_dump(mode="json", by_alias=True), status_code=202)
    actor = f"api-key:{principal.key_id}"
    response = AjoExecutionResponse(
        execution_id=triggered.response["execution_id"],
        request_id=triggered.response["request_id"],
        created_at=now,
        created_by=actor,
        modified_at=now,
        modified_by=actor,
    )
    return JSONResponse(response.model_dump(mode="json", by_alias=True), status_code=202)


@router.post("/executions/unitary", status_code=202, response_model=AjoExecutionResponse)
async def unitary(request: Request) -> JSONResponse:
    """AJO's postIMUnitaryMessageExecution: `aep` and `external` recipients, 1 to 20."""
    return await _handle(request, AjoUnitaryRequest.model_validate)


def _external_only(raw: Any) -> AjoUnitaryRequest:
    wire = AjoUnitaryRequest.model_validate(raw)
    errors = [
        FieldError(f"recipients.{index}.type", "the high-throughput API takes external only")
        for index, recipient in enumerate(wire.recipients)
        if recipient.type != "external"
    ]
    if errors:
        raise InvalidInput("only external recipients", errors=errors)
    return wire


@router.post("/executions/highthroughput", status_code=202, response_model=AjoExecutionResponse)
async def high_throughput(request: Request) -> JSONResponse:
    """AJO's postIMUnitaryHAMessageExecution: `external` recipients only, personalized from
    the call's data (no stored profile is read)."""
    return await _handle(request, _external_only, high_throughput=True)


@router.post("/executions/audience", status_code=202, response_model=AjoExecutionResponse)
async def audience(request: Request) -> JSONResponse:
    """AJO's postIMAudienceMessageExecution: a marketing campaign to its audience (or
    `audience.id`), now or at `schedule.executeAt` (then answered with the schedule, whose id
    is the execution id)."""
    return await _handle(request, AjoAudienceRequest.model_validate)


async def _reader(request: Request) -> Principal:
    principal = await _principal(request)
    if not (principal.allows(Scope.EXECUTIONS_TRIGGER) or principal.allows(Scope.REPORTS_READ)):
        raise PermissionDenied("this API key needs 'executions:trigger' or 'reports:read'")
    return principal


def _status_view(execution: dict[str, Any]) -> AjoExecutionStatus:
    status = execution["status"]
    return AjoExecutionStatus(
        execution_id=execution["id"],
        campaign_id=execution["campaign_id"],
        audience_id=execution["audience_id"],
        status="Succeeded"
        if status == "completed"
        else "Failed"
        if status in ("failed", "cancelled")
        else "InProgress",
        targeted_profile_count=execution["recipients"],
        created_at=execution["created_at"],
    )


async def _audience_execution(request: Request, execution_id: str) -> dict[str, Any]:
    principal = await _reader(request)
    runtime = runtime_of(request)
    execution: dict[str, Any] = await run_in_threadpool(
        executions.get, runtime.db, principal.workspace_id, execution_id
    )
    if execution["kind"] != ExecutionKind.AUDIENCE:
        raise NotFound("no such audience execution in this workspace")
    return execution


@router.get("/executions/audience/{execution_id}", response_model=AjoExecutionStatus)
async def audience_status(request: Request, execution_id: str) -> JSONResponse:
    """AJO's getBatchExecutionStatusByExecutionId."""
    try:
        execution = await _audience_execution(request, execution_id)
    except TidingsError as exc:
        return _failure(exc, {})
    return JSONResponse(_status_view(execution).model_dump(mode="json", by_alias=True))


def _schedule_view(execution: dict[str, Any]) -> AjoScheduledExecution:
    return AjoScheduledExecution(
        schedule_id=execution["id"],
        audience={"id": execution["audience_id"]} if execution["audience_id"] else None,
        campaign_id=execution["campaign_id"],
        execute_at=execution["execute_at"],
        schedule_status="Scheduled" if execution["status"] == "scheduled" else "Triggered",
        execution_details=_status_view(execution),
    )


@router.get("/executions/schedules/{schedule_id}", response_model=AjoScheduledExecution)
async def schedule_status(request: Request, schedule_id: str) -> JSONResponse:
    """AJO's getBatchExecutionStatusByScheduleId; a deleted (cancelled) schedule is gone."""
    try:
        execution = await _audience_execution(request, schedule_id)
        if execution["status"] == "cancelled":
            raise NotFound("no such schedule in this workspace")
    except TidingsError as exc:
        return _failure(exc, {})
    return JSONResponse(_schedule_view(execution).model_dump(mode="json", by_alias=True))


@router.delete("/executions/schedules/{schedule_id}")
async def delete_schedule(request: Request, schedule_id: str) -> JSONResponse:
    """AJO's deleteScheduledExecution: before it has fired; afterwards a 409."""
    try:
        principal = await _principal(request)
        principal.require(Scope.EXECUTIONS_TRIGGER)
        await _audience_execution(request, schedule_id)
        await run_in_threadpool(
            executions.cancel, runtime_of(request).db, principal.workspace_id, schedule_id, utcnow()
        )
    except TidingsError as exc:
        return _failure(exc, {})
    return JSONResponse({})


@router.get("/health")
async def health() -> dict[str, str]:
    """AJO's health of the unitary API service."""
    return {"status": "UP"}


# Served by web.HotPaths ahead of FastAPI, as /v1/executions is.
HOT_ROUTES = {
    ("POST", "/ajo/im/executions/unitary"): unitary,
    ("POST", "/ajo/im/executions/highthroughput"): high_throughput,
}
