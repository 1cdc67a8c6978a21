"""Routes of the native execution API (/v1/executions)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Response, status

from tidings.clock import utcnow
from tidings.errors import PermissionDenied
from tidings.executions import service
from tidings.executions.schemas import (
    ExecutionAccepted,
    ExecutionCreate,
    ExecutionOut,
    MessageList,
    MessageOut,
)
from tidings.pagination import DEFAULT_LIMIT, MAX_LIMIT
from tidings.web import PROBLEM_RESPONSES, RuntimeDep, authenticated, require
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(prefix="/v1/executions", tags=["executions"], responses=PROBLEM_RESPONSES)
Trigger = Annotated[Principal, Depends(require(Scope.EXECUTIONS_TRIGGER))]
AnyKey = Annotated[Principal, Depends(authenticated)]
ExecutionId = Annotated[str, Path(min_length=1, max_length=64)]


def _require_reader(principal: Principal) -> None:
    # The system that triggers an execution may follow it; so may a reporting key.
    if not (principal.allows(Scope.EXECUTIONS_TRIGGER) or principal.allows(Scope.REPORTS_READ)):
        raise PermissionDenied("this API key needs 'executions:trigger' or 'reports:read'")


@router.post(
    "",
    response_model=ExecutionAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"model": ExecutionAccepted, "description": "Replayed"}},
)
def create_execution(
    body: ExecutionCreate,
    response: Response,
    runtime: RuntimeDep,
    principal: Trigger,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> ExecutionAccepted:
    """Accepts a unitary execution: 1 to 20 recipients, each with its own context.

    The execution and its messages are on disk when this answers 202. The same `request_id`
    (or `Idempotency-Key`) with the same body answers the original response again and sends
    nothing more; with another body it is a 422; while the first is in progress, a 409.
    """
    triggered = service.trigger(runtime.db, principal.workspace_id, body, utcnow(), idempotency_key)
    if triggered.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return ExecutionAccepted.model_validate(triggered.response)


@router.get("/{execution_id}", response_model=ExecutionOut)
def get_execution(
    execution_id: ExecutionId, runtime: RuntimeDep, principal: AnyKey
) -> ExecutionOut:
    _require_reader(principal)
    return ExecutionOut.model_validate(
        service.get(runtime.db, principal.workspace_id, execution_id)
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
