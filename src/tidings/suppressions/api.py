"""Routes of /v1/suppressions: list, add, read, remove, and CSV import."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from tidings.db import Database
from tidings.pagination import DEFAULT_LIMIT, MAX_LIMIT
from tidings.suppressions import service
from tidings.suppressions.schemas import (
    ImportReport,
    SuppressionAdd,
    SuppressionBatch,
    SuppressionChannel,
    SuppressionEntry,
    SuppressionKind,
    SuppressionList,
    SuppressionOut,
    SuppressionsAdded,
    SuppressionType,
)
from tidings.web import PROBLEM_RESPONSES, RuntimeDep, parse_body, raw_body_openapi, require
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"], responses=PROBLEM_RESPONSES)
Reader = Annotated[Principal, Depends(require(Scope.PROFILES_READ))]
Writer = Annotated[Principal, Depends(require(Scope.PROFILES_WRITE))]
SuppressionId = Annotated[str, Path(min_length=1, max_length=64)]

CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {
                "schema": {"type": "string"},
                "example": "value,type,reason\nada@example.com,hard_bounce,550 5.1.1\n"
                "example.org,manual,\n",
            }
        },
    }
}


def _out(row: dict[str, Any]) -> SuppressionOut:
    return SuppressionOut.model_validate(row)


@router.get("", response_model=SuppressionList)
def list_suppressions(
    runtime: RuntimeDep,
    principal: Reader,
    channel: SuppressionChannel | None = None,
    type: SuppressionType | None = None,
    kind: SuppressionKind | None = None,
    prefix: Annotated[
        str | None, Query(max_length=320, description="Values that start with this")
    ] = None,
    cursor: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
) -> SuppressionList:
    """Suppressions of the workspace, newest first."""
    rows, next_cursor = service.list_page(
        runtime.db,
        principal.workspace_id,
        channel=channel,
        type=type,
        kind=kind,
        prefix=prefix,
        cursor=cursor,
        limit=limit,
    )
    return SuppressionList(items=[_out(row) for row in rows], next_cursor=next_cursor)


def _is_batch(raw: bytes) -> bool:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False  # parse_body answers the 400
    return isinstance(data, dict) and "entries" in data


def _add(db: Database, workspace_id: str, raw: bytes) -> dict[str, Any]:
    if _is_batch(raw):
        batch = parse_body(SuppressionBatch, raw)
        result = service.add_many(db, workspace_id, batch.entries)
        return {"added": result.added, "updated": result.updated, "rejected": result.rejected}
    entry = parse_body(SuppressionEntry, raw)
    row, created = service.add_one(db, workspace_id, entry)
    return {
        "added": int(created),
        "updated": int(not created),
        "rejected": [],
        "suppression": row,
    }


@router.post(
    "",
    response_model=SuppressionsAdded,
    response_model_exclude_unset=True,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=raw_body_openapi(SuppressionAdd),
)
async def add_suppressions(
    request: Request, runtime: RuntimeDep, principal: Writer
) -> SuppressionsAdded:
    """Suppresses one entry, or `{"entries": [...]}` with up to 10,000. Adding a value that is
    suppressed already updates its type, source and reason. One entry that is invalid is a
    `422` naming `value`; in `entries`, invalid ones are listed in `rejected` with their index
    and the others are added."""
    raw = await request.body()
    answer = await run_in_threadpool(_add, runtime.db, principal.workspace_id, raw)
    return SuppressionsAdded.model_validate(answer)


@router.post("/import", response_model=ImportReport, openapi_extra=CSV_BODY)
async def import_suppressions(
    request: Request,
    runtime: RuntimeDep,
    principal: Writer,
    channel: SuppressionChannel = SuppressionChannel.EMAIL,
) -> ImportReport:
    """Imports a CSV body (`value,type,reason` with a header line), read as it arrives and
    written 1,000 rows per transaction. Rows that cannot be used are reported with their line
    number (the first 1,000; `rejected_count` counts them all). Not atomic: the rows before a
    failure stay imported, and importing again is safe."""
    job = service.SuppressionImport(
        runtime.db, principal.workspace_id, channel=channel, source="csv"
    )
    async for chunk in request.stream():
        if chunk:
            await run_in_threadpool(job.feed, chunk)
    report = await run_in_threadpool(job.finish)
    return ImportReport.model_validate(report)


@router.get("/{suppression_id}", response_model=SuppressionOut)
def get_suppression(
    suppression_id: SuppressionId, runtime: RuntimeDep, principal: Reader
) -> SuppressionOut:
    return _out(service.get(runtime.db, principal.workspace_id, suppression_id))


@router.delete("/{suppression_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_suppression(
    suppression_id: SuppressionId, runtime: RuntimeDep, principal: Writer
) -> Response:
    """Lifts a suppression: messages go to the address or domain again."""
    service.remove(runtime.db, principal.workspace_id, suppression_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
def delete_suppression_of_value(
    runtime: RuntimeDep,
    principal: Writer,
    value: Annotated[str, Query(min_length=1, max_length=320)],
    channel: SuppressionChannel = SuppressionChannel.EMAIL,
    kind: SuppressionKind | None = None,
) -> Response:
    """Lifts the suppression of a value, normalized as adding normalizes it (`kind` inferred
    as adding infers it); `404` when the value is not suppressed."""
    service.remove_value(runtime.db, principal.workspace_id, channel, value, kind)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
