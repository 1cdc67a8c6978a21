"""Routes of the native execution API (/v1/executions)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from tidings.clock import utcnow
from tidings.errors import InvalidInput, PermissionDenied
from tidings.executions import service
from tidings.executions.schemas import (
    ExecutionAccepted,
    ExecutionCreate,
    ExecutionOut,
    MessageList,
    MessageOut,
)
from tidings.pagination import DEFAULT_LIMIT, MAX_LIMIT
from tidings.runtime import Runtime
from tidings.web import (
    PROBLEM_RESPONSES,
    RuntimeDep,
    authenticated,
    parse_body,
    principal_of,
    raw_body_openapi,
    require,
    runtime_of,
)
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(prefix="/v1/executions", tags=["executions"], responses=PROBLEM_RESPONSES)
Trigger = Annotated[Principal, Depends(require(Scope.EXECUTIONS_TRIGGER))]
AnyKey = Annotated[Principal, Depends(authenticated)]
ExecutionId = Annotated[str, Path(min_length=1, max_length=64)]
IDEMPOTENCY_KEY_MAX = 200


def _require_reader(principal: Principal) -> None:
    # The system that triggers an execution may follow it; so may a reporting key.
    if not (principal.allows(Scope.EXECUTIONS_TRIGGER) or principal.allows(Scope.REPORTS_READ)):
        raise PermissionDenied("this API key needs 'executions:trigger' or 'reports:read'")


@router.post(
    "",
    response_model=ExecutionAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=raw_body_openapi(
        ExecutionCreate,
        parameters=[
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX},
                "description": "Same as `request_id`",
            }
        ],
    ),
)
async def create_execution(request: Request, runtime: RuntimeDep, principal: Trigger) -> Response:
    """Accepts an execution: unitary (1 to 20 recipients, each with its own context merged
    over the shared one) or, without recipients, an audience execution of a marketing campaign
    (its audience or `audience_id`), now or at `execute_at`.

    The execution and its messages are on disk when this answers 202. The same `request_id`
    (or `Idempotency-Key`) with the same body answers the original response again (202, with
    the header `Idempotent-Replayed: true`) and sends nothing more; with another body it is a
    422; while the first is in progress, a 409.
    """
    return await _accept(request, runtime, principal)


async def create_execution_hot(request: Request) -> Response:
    """create_execution, served by web.HotPaths before FastAPI sees the request."""
    principal = await principal_of(request)
    principal.require(Scope.EXECUTIONS_TRIGGER)
    return await _accept(request, runtime_of(request), principal)


async def _accept(request: Request, runtime: Runtime, principal: Principal) -> Response:
    # The body is validated from its bytes and the answer written without a response model;
    # the database work happens on the acceptor's writer thread, committed together with
    # concurrent requests.
    raw = await request.body()
    body = parse_body(ExecutionCreate, raw)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= IDEMPOTENCY_KEY_MAX:
        raise InvalidInput.on(
            "Idempotency-Key", f"must be 1 to {IDEMPOTENCY_KEY_MAX} characters long"
        )
    job = service.prepare(principal.workspace_id, body, utcnow(), idempotency_key, raw)
    triggered = await runtime.acceptor.accept(job)
    headers = {"Idempotent-Replayed": "true"} if triggered.replayed else None
    return Response(
        orjson.dumps(triggered.response),
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
        headers=headers,
    )


HOT_ROUTES = {("POST", "/v1/executions"): create_execution_hot}


@router.get("/{execution_id}", response_model=ExecutionOut)
def get_execution(
    execution_id: ExecutionId, runtime: RuntimeDep, principal: AnyKey
) -> ExecutionOut:
    _require_reader(principal)
    return ExecutionOut.model_validate(
        service.get(runtime.db, principal.workspace_id, execution_id)
    )


@router.delete("/{execution_id}", response_model=ExecutionOut)
def cancel_execution(
    execution_id: ExecutionId, runtime: RuntimeDep, principal: Trigger
) -> ExecutionOut:
    """Cancels an execution before it fires: a scheduled audience execution, or a unitary one
    whose `execute_at` has not come (its messages become `cancelled`). 409 once it has fired;
    cancelling a cancelled execution answers it again."""
    return ExecutionOut.model_validate(
        service.cancel(runtime.db, principal.workspace_id, execution_id, utcnow())
    )


@router.get("/{execution_id}/messages", response_model=MessageList)
def list_messages(
    execution_id: ExecutionId,
    runtime: RuntimeDep,
    principal: AnyKey,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> MessageList:
    _require_reader(principal)
    rows, next_cursor = service.list_messages(
        runtime.db, principal.workspace_id, execution_id, cursor, limit
    )
    return MessageList(
        items=[MessageOut.model_validate(row) for row in rows], next_cursor=next_cursor
    )
