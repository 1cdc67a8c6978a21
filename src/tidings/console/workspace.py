"""Console pages of the workspace: API keys and users (admins only change them)."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tidings.clock import utcnow
from tidings.console.auth import Admin, Member
from tidings.console.templating import render
from tidings.errors import InvalidInput, TidingsError
from tidings.users import service as users
from tidings.users.schemas import ConsoleSession, Role
from tidings.web import runtime_of
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

router = APIRouter(include_in_schema=False)


async def _keys_page(
    request: Request,
    session: ConsoleSession,
    status_code: int = 200,
    secret: str | None = None,
    error: str | None = None,
) -> HTMLResponse:
    keys = await run_in_threadpool(
        workspaces.list_api_keys, runtime_of(request).db, session.workspace_id
    )
    return render(
        request,
        "api_keys.html",
        status_code,
        keys=keys,
        scopes=[scope.value for scope in Scope],
        secret=secret,
        error=error,
    )


@router.get("/api-keys", response_class=HTMLResponse)
async def api_keys(request: Request, session: Member) -> Response:
    return await _keys_page(request, session)


@router.post("/api-keys", response_class=HTMLResponse)
async def create_api_key(request: Request, session: Admin) -> Response:
    form = await request.form()
    name = str(form.get("name") or "").strip()
    chosen = [str(value) for value in form.getlist("scope")]
    try:
        if not name or len(name) > 200:
            raise InvalidInput.on("name", "give the key a name (up to 200 characters)")
        scopes = [Scope(value) for value in chosen] or [Scope.EXECUTIONS_TRIGGER]
    except (TidingsError, ValueError) as exc:
        detail = exc.detail if isinstance(exc, TidingsError) else "unknown scope"
        return await _keys_page(request, session, 422, error=detail)
    _, secret = await run_in_threadpool(
        workspaces.create_api_key, runtime_of(request).db, session.workspace_id, name, scopes
    )
    # The secret is in this one answer only: it is stored hashed.
    return await _keys_page(request, session, 201, secret=secret)


@router.post("/api-keys/{key_id}/revoke", response_class=HTMLResponse)
async def revoke_api_key(
    request: Request, session: Admin, key_id: str = Path(max_length=64)
) -> Response:
    await run_in_threadpool(
        workspaces.revoke_api_key, runtime_of(request).db, session.workspace_id, key_id
    )
    return RedirectResponse("/api-keys", status_code=303)


async def _users_page(
    request: Request, session: ConsoleSession, status_code: int = 200, error: str | None = None
) -> HTMLResponse:
    members = await run_in_threadpool(
        users.list_members, runtime_of(request).db, session.workspace_id
    )
    return render(
        request,
        "users.html",
        status_code,
        members=members,
        roles=[role.value for role in Role],
        error=error,
    )


@router.get("/users", response_class=HTMLResponse)
async def users_page(request: Request, session: Member) -> Response:
    return await _users_page(request, session)


@router.post("/users", response_class=HTMLResponse)
async def create_user(request: Request, session: Admin) -> Response:
    form = await request.form()
    try:
        role = Role(str(form.get("role") or ""))
    except ValueError:
        return await _users_page(request, session, 422, "choose a role")
    try:
        await run_in_threadpool(
            users.create_user,
            runtime_of(request).db,
            str(form.get("email") or ""),
            str(form.get("password") or ""),
            session.workspace_id,
            role,
            utcnow(),
        )
    except TidingsError as exc:
        detail = "; ".join(f"{e.field} {e.message}" for e in exc.errors) or exc.detail
        return await _users_page(request, session, 422, detail)
    return RedirectResponse("/users", status_code=303)
