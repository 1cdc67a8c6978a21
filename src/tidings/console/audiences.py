"""Console pages of audiences: the list, and the rule editor with its errors and live count."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tidings.audiences import service as audiences
from tidings.audiences.schemas import AudienceCreate, AudienceUpdate
from tidings.console.auth import Editor, Member
from tidings.console.forms import field_errors, form_fields, problems, unplaced
from tidings.console.templating import render
from tidings.errors import FieldError, InvalidInput, NotFound, TidingsError
from tidings.users.schemas import ConsoleSession
from tidings.web import runtime_of

router = APIRouter(include_in_schema=False)
AudienceId = Path(min_length=1, max_length=64)
FIELDS = {"name", "description", "rule"}
RULE_EXAMPLE = 'consent.email == "in" and attributes.country in ["FR", "BE"]'


@router.get("/audiences", response_class=HTMLResponse)
async def audience_list(request: Request, session: Member) -> Response:
    cursor = request.query_params.get("cursor") or None
    found, next_cursor = await run_in_threadpool(
        lambda: audiences.list_page(
            runtime_of(request).db, session.workspace_id, cursor=cursor, limit=50
        )
    )
    return render(request, "audiences/list.html", audiences=found, next_cursor=next_cursor)


def _editor(
    request: Request,
    audience: dict[str, Any] | None,
    values: dict[str, Any],
    status_code: int = 200,
    error: str | None = None,
    errors: list[FieldError] | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    errors = errors or []
    return render(
        request,
        "audiences/edit.html",
        status_code,
        audience=audience,
        values=values,
        error=error,
        errors=unplaced(errors, FIELDS),
        field_errors=field_errors(errors),
        notice=notice,
        example=RULE_EXAMPLE,
    )


@router.get("/audiences/new", response_class=HTMLResponse)
async def new_audience(request: Request, session: Member) -> Response:
    return _editor(request, None, {"name": "", "description": "", "rule": ""})


@router.post("/audiences/new", response_class=HTMLResponse)
async def create_audience(request: Request, session: Editor) -> Response:
    form = await form_fields(request)
    try:
        body = AudienceCreate(
            name=form.get("name", "").strip(),
            description=form.get("description") or None,
            rule=form.get("rule", ""),
        )
        created, _ = await run_in_threadpool(
            audiences.create, runtime_of(request).db, session.workspace_id, body
        )
    except (TidingsError, ValidationError) as exc:
        detail, errors = problems(exc)
        return _editor(request, None, form, 422, detail, errors)
    return RedirectResponse(f"/audiences/{created['id']}?saved=1", status_code=303)


@router.post("/audiences/estimate")
async def estimate(request: Request, session: Member) -> Response:
    """How many profiles a rule (not saved) matches now, for the editor's live count: reads
    only, so any member may ask; the CSRF token comes in a header."""
    try:
        body = await request.json()
    except json.JSONDecodeError:
        body = None
    rule = body.get("rule") if isinstance(body, dict) else None
    try:
        if not isinstance(rule, str) or not rule.strip():
            raise InvalidInput.on("rule", "write a rule")
        answer = await run_in_threadpool(
            audiences.estimate, runtime_of(request).db, session.workspace_id, rule
        )
    except InvalidInput as exc:
        return JSONResponse(
            {"detail": exc.detail, "errors": [error.as_dict() for error in exc.errors]},
            status_code=422,
        )
    return JSONResponse(answer)


async def _audience(request: Request, session: ConsoleSession, audience_id: str) -> Any:
    return await run_in_threadpool(
        audiences.get, runtime_of(request).db, session.workspace_id, audience_id
    )


def _not_found(request: Request, exc: NotFound) -> HTMLResponse:
    return render(request, "error.html", 404, title="No such audience", message=exc.detail)


@router.get("/audiences/{audience_id}", response_class=HTMLResponse)
async def audience_page(
    request: Request, session: Member, audience_id: str = AudienceId
) -> Response:
    try:
        audience = await _audience(request, session, audience_id)
    except NotFound as exc:
        return _not_found(request, exc)
    notice = "Saved." if request.query_params.get("saved") else None
    return _editor(request, audience, audience, notice=notice)


@router.post("/audiences/{audience_id}", response_class=HTMLResponse)
async def update_audience(
    request: Request, session: Editor, audience_id: str = AudienceId
) -> Response:
    form = await form_fields(request)
    try:
        audience = await _audience(request, session, audience_id)
    except NotFound as exc:
        return _not_found(request, exc)
    changes: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "description": form.get("description") or None,
    }
    if audience["kind"] == "rule":
        changes["rule"] = form.get("rule", "")
    try:
        await run_in_threadpool(
            audiences.update,
            runtime_of(request).db,
            session.workspace_id,
            audience_id,
            AudienceUpdate(**changes),
        )
    except (TidingsError, ValidationError) as exc:
        detail, errors = problems(exc)
        return _editor(request, audience, {**audience, **form}, 422, detail, errors)
    return RedirectResponse(f"/audiences/{audience_id}?saved=1", status_code=303)


@router.post("/audiences/{audience_id}/delete", response_class=HTMLResponse)
async def delete_audience(
    request: Request, session: Editor, audience_id: str = AudienceId
) -> Response:
    try:
        audience = await _audience(request, session, audience_id)
        await run_in_threadpool(
            audiences.delete, runtime_of(request).db, session.workspace_id, audience_id
        )
    except NotFound as exc:
        return _not_found(request, exc)
    except TidingsError as exc:
        return _editor(request, audience, audience, 409, exc.detail)
    return RedirectResponse("/audiences", status_code=303)
