"""Routes of the AJO-compatible execution API under /ajo/im.

The same service as /v1/executions behind AJO's wire format: an integration written for AJO
works by changing its base URL and key. `Authorization: Bearer <Tidings API key>`;
`x-sandbox-name` names the key's workspace; `x-api-key` and `x-gw-ims-org-id` are accepted and
not checked. Errors use AJO's errorResponse shape, with AJO's 400 for invalid requests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tidings.ajo.schemas import (
    AjoError,
    AjoErrorReport,
    AjoExecutionResponse,
    AjoUnitaryRequest,
)
from tidings.clock import utcnow
from tidings.content.schemas import field_path
from tidings.errors import (
    FieldError,
    InvalidInput,
    PermissionDenied,
    TidingsError,
)
from tidings.web import principal_of, runtime_of
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(prefix="/ajo/im", tags=["AJO-compatible execution API"])
ERROR_TYPE = "urn:tidings:ajo:error:{status}"
Wire = TypeVar("Wire")


def _error(status: int, title: str, context: dict[str, str]) -> JSONResponse:
    body = AjoError(
        type=ERROR_TYPE.format(status=status),
        title=title,
        status=status,
        report=AjoErrorReport(additional_context=context),
    )
    return JSONResponse(body.model_dump(by_alias=True), status_code=status)


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
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInput.on("body", "is not valid JSON") from None
    if isinstance(raw, dict):
        # Echoed in errors, as AJO's additionalContext does.
        context.update(
            {name: str(raw[name])[:200] for name in ("requestId", "campaignId") if name in raw}
        )
    try:
        return parse(raw)
    except ValidationError as exc:
        errors = [FieldError(field_path(e["loc"]) or "body", e["msg"]) for e in exc.errors()]
        raise InvalidInput("the request is invalid", errors=errors) from None


def _failure(exc: TidingsError, context: dict[str, str]) -> JSONResponse:
    for error in exc.errors:
        context[error.field] = error.message
    context.setdefault("detail", exc.detail)
    return _error(_status_of(exc), exc.title, context)


async def _handle(request: Request, parse: Callable[[Any], AjoUnitaryRequest]) -> JSONResponse:
    context: dict[str, str] = {}
    try:
        principal = await _principal(request)
        principal.require(Scope.EXECUTIONS_TRIGGER)
        wire = _parse(await request.body(), parse, context)
        now = utcnow()
        triggered = await runtime_of(request).acceptor.trigger(
            principal.workspace_id, wire.to_execution(), now
        )
    except TidingsError as exc:
        return _failure(exc, context)
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
    return await _handle(request, _external_only)


@router.get("/health")
async def health() -> dict[str, str]:
    """AJO's health of the unitary API service."""
    return {"status": "UP"}


# Served by web.HotPaths ahead of FastAPI, as /v1/executions is.
HOT_ROUTES = {
    ("POST", "/ajo/im/executions/unitary"): unitary,
    ("POST", "/ajo/im/executions/highthroughput"): high_throughput,
}
