"""Console sign-in: session cookies, the CSRF check of every POST, and role checks."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tidings.clock import utcnow
from tidings.console.templating import render
from tidings.errors import AuthenticationFailed, RateLimited, TidingsError
from tidings.users import service as users
from tidings.users.schemas import ConsoleSession, Role
from tidings.web import runtime_of, tidings_error

router = APIRouter(include_in_schema=False)
SESSION_COOKIE = "tidings_session"
# Sign-in has no session yet: its form carries a token that must equal this cookie's
# (double submit), so another site cannot sign a browser in to an account of its choosing.
SIGN_IN_COOKIE = "tidings_sign_in"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class SignInRequired(Exception):
    """A page asked for by a browser with no live session: it goes to the sign-in page."""


class ConsoleForbidden(Exception):
    """A console request its session may not make: a missing CSRF token or too small a role."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _secure(request: Request) -> bool:
    public_url = runtime_of(request).settings.resolved_public_url
    return request.url.scheme == "https" or public_url.startswith("https://")


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _session(request: Request) -> ConsoleSession | None:
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    runtime = runtime_of(request)
    return await run_in_threadpool(users.session_for, runtime.db, token, utcnow())


async def _sent_csrf_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def signed_in(request: Request) -> ConsoleSession:
    """Any member; a POST must also carry the session's CSRF token."""
    session = await _session(request)
    if session is None:
        raise SignInRequired()
    request.state.console_session = session
    if request.method not in ("GET", "HEAD"):
        sent = await _sent_csrf_token(request)
        if not sent or not hmac.compare_digest(sent, session.csrf_token):
            raise ConsoleForbidden("the form was not sent by this console (CSRF token missing)")
    return session


def role(needed: Role) -> Callable[[Request], Awaitable[ConsoleSession]]:
    """A dependency for routes that change something: the session's role must allow it."""

    async def dependency(request: Request) -> ConsoleSession:
        session = await signed_in(request)
        if not session.role.allows(needed):
            raise ConsoleForbidden(f"this needs the {needed} role; you are {session.role}")
        return session

    dependency.__name__ = f"requires_{needed.value}"
    return dependency


Member = Annotated[ConsoleSession, Depends(signed_in)]
Editor = Annotated[ConsoleSession, Depends(role(Role.EDITOR))]
Admin = Annotated[ConsoleSession, Depends(role(Role.ADMIN))]


def install(app: FastAPI) -> None:
    """The console's answers to a missing session (sign in) and a refused request (403)."""

    async def to_sign_in(request: Request, exc: Exception) -> Response:
        if request.method in ("GET", "HEAD"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/sign-in?next={_quote(target)}", status_code=303)
        return render(request, "error.html", 401, title="Signed out", message="Sign in again.")

    async def forbidden(request: Request, exc: Exception) -> Response:
        reason = exc.reason if isinstance(exc, ConsoleForbidden) else "forbidden"
        if request.headers.get("accept", "").startswith("application/json"):
            return Response(
                f'{{"detail": "{reason}"}}', status_code=403, media_type="application/json"
            )
        return render(request, "error.html", 403, title="Not allowed", message=reason)

    async def page_error(request: Request, exc: Exception) -> Response:
        # A console page answers a browser with a page; the API (and the console's JSON
        # endpoints, asked for JSON) keep their problem+json.
        assert isinstance(exc, TidingsError)
        if _is_console_page(request):
            return render(request, "error.html", exc.status, title=exc.title, message=exc.detail)
        return await tidings_error(request, exc)

    app.add_exception_handler(SignInRequired, to_sign_in)
    app.add_exception_handler(ConsoleForbidden, forbidden)
    app.add_exception_handler(TidingsError, page_error)


def _is_console_page(request: Request) -> bool:
    endpoint = request.scope.get("endpoint")
    module = getattr(endpoint, "__module__", "")
    return (
        module.startswith("tidings.console.")
        and module != "tidings.console.mailbox"
        and not request.headers.get("accept", "").startswith("application/json")
    )


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


def _safe_next(target: str | None) -> str:
    # Only a path of this site: `//evil.example` or a full URL would be an open redirect.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/campaigns"
    return target


def _sign_in_page(
    request: Request, status_code: int = 200, error: str | None = None, email: str = ""
) -> HTMLResponse:
    token = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        request,
        "sign_in.html",
        status_code,
        csrf_token=token,
        error=error,
        email=email,
        next=_safe_next(request.query_params.get("next")),
    )
    set_cookie(request, response, SIGN_IN_COOKIE, token, 3600)
    return response


@router.get("/", response_class=HTMLResponse)
async def start_page(request: Request) -> Response:
    if await _session(request) is not None:
        return RedirectResponse("/campaigns", status_code=303)
    return _sign_in_page(request)


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request) -> Response:
    return _sign_in_page(request)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    form = await request.form()
    fields: dict[str, Any] = {key: form.get(key) for key in ("email", "password", CSRF_FIELD)}
    email = fields["email"] if isinstance(fields["email"], str) else ""
    password = fields["password"] if isinstance(fields["password"], str) else ""
    sent = fields[CSRF_FIELD] if isinstance(fields[CSRF_FIELD], str) else ""
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise ConsoleForbidden("the sign-in form was not sent by this console (CSRF token)")
    runtime = runtime_of(request)
    now = utcnow()
    try:
        user = await run_in_threadpool(
            users.authenticate, runtime.db, email, password, _client(request), now
        )
        token = await run_in_threadpool(users.start_session, runtime.db, user["id"], now)
    except RateLimited as exc:
        return _sign_in_page(request, 429, exc.detail, email)
    except AuthenticationFailed as exc:
        return _sign_in_page(request, 401, exc.detail, email)
    target = _safe_next(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
    response = RedirectResponse(target, status_code=303)
    set_cookie(
        request, response, SESSION_COOKIE, token, int(users.SESSION_LIFETIME.total_seconds())
    )
    response.delete_cookie(SIGN_IN_COOKIE, path="/")
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: Member) -> Response:
    await run_in_threadpool(
        users.end_session, runtime_of(request).db, request.cookies.get(SESSION_COOKIE, "")
    )
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
