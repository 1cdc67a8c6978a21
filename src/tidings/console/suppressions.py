"""Console pages of the suppression list: search, add an address or a domain, remove."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tidings.console.auth import Editor, Member
from tidings.console.forms import field_errors, form_fields, problems, unplaced
from tidings.console.templating import render
from tidings.errors import FieldError, NotFound, TidingsError
from tidings.suppressions import service as suppressions
from tidings.suppressions.schemas import (
    SuppressionChannel,
    SuppressionEntry,
    SuppressionKind,
    SuppressionType,
)
from tidings.users.schemas import ConsoleSession
from tidings.web import runtime_of

router = APIRouter(include_in_schema=False)
SuppressionId = Path(min_length=1, max_length=64)
CONSOLE_SOURCE = "console"
FIELDS = {"channel", "value", "kind", "reason"}
LISTED = 50


def _enum(kind: type[Any], raw: str | None) -> Any:
    try:
        return kind(raw) if raw else None
    except ValueError:
        return None


async def _list_page(
    request: Request,
    session: ConsoleSession,
    status_code: int = 200,
    error: str | None = None,
    errors: list[FieldError] | None = None,
    values: dict[str, str] | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    query = request.query_params
    filters = {
        "channel": _enum(SuppressionChannel, query.get("channel")),
        "type": _enum(SuppressionType, query.get("type")),
        "kind": _enum(SuppressionKind, query.get("kind")),
        "prefix": (query.get("q") or "")[:320] or None,
    }
    found, next_cursor = await run_in_threadpool(
        lambda: suppressions.list_page(
            runtime_of(request).db,
            session.workspace_id,
            cursor=query.get("cursor") or None,
            limit=LISTED,
            **filters,
        )
    )
    errors = errors or []
    return render(
        request,
        "suppressions/list.html",
        status_code,
        suppressions=found,
        next_cursor=next_cursor,
        filters=query,
        channels=[channel.value for channel in SuppressionChannel],
        types=[kind.value for kind in SuppressionType],
        kinds=[kind.value for kind in SuppressionKind],
        values=values or {},
        error=error,
        errors=unplaced(errors, FIELDS),
        field_errors=field_errors(errors),
        notice=notice,
    )


@router.get("/suppressions", response_class=HTMLResponse)
async def suppression_list(request: Request, session: Member) -> Response:
    return await _list_page(request, session)


@router.post("/suppressions", response_class=HTMLResponse)
async def add_suppression(request: Request, session: Editor) -> Response:
    form = await form_fields(request)
    try:
        entry = SuppressionEntry(
            channel=form.get("channel") or SuppressionChannel.EMAIL,
            value=form.get("value", ""),
            kind=form.get("kind") or None,
            type=SuppressionType.MANUAL,
            source=CONSOLE_SOURCE,
            reason=form.get("reason") or None,
        )
        row, added = await run_in_threadpool(
            suppressions.add_one, runtime_of(request).db, session.workspace_id, entry
        )
    except (TidingsError, ValidationError) as exc:
        detail, errors = problems(exc)
        return await _list_page(request, session, 422, detail, errors, form)
    verb = "suppressed" if added else "was suppressed already; its entry is now manual"
    return await _list_page(
        request, session, 201 if added else 200, notice=f"{row['value']} {verb}."
    )


@router.post("/suppressions/{suppression_id}/remove", response_class=HTMLResponse)
async def remove_suppression(
    request: Request, session: Editor, suppression_id: str = SuppressionId
) -> Response:
    try:
        await run_in_threadpool(
            suppressions.remove, runtime_of(request).db, session.workspace_id, suppression_id
        )
    except NotFound as exc:
        return await _list_page(request, session, 404, exc.detail)
    return RedirectResponse("/suppressions", status_code=303)
