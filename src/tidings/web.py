"""HTTP plumbing shared by every api.py: RFC 9457 problems, the runtime, auth dependencies."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from tidings.content.schemas import field_path
from tidings.errors import AuthenticationFailed, FieldError, RateLimited, TidingsError
from tidings.runtime import Runtime
from tidings.workspaces.limits import retry_after_header
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

log = logging.getLogger("tidings.web")
PROBLEM_JSON = "application/problem+json"


class FieldProblem(BaseModel):
    field: str
    message: str
    line: int | None = None
    column: int | None = None


class Problem(BaseModel):
    """RFC 9457 problem details, with `errors` naming each offending field; some answers add
    extension members (a failed profile import: `import_id`)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] = Field(default_factory=list)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}}
    for status in (400, 401, 403, 404, 409, 422, 503)
}


# What RFC 9457 defines, with Tidings' `errors`: no extension member may take these names.
_STANDARD_MEMBERS = frozenset(Problem.model_fields)


def problem_response(
    status: int,
    title: str,
    detail: str | None,
    errors: Sequence[FieldError] = (),
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    extensions: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body["errors"] = [error.as_dict() for error in errors]
    # After the standard members, and never one of their names, even where a standard member
    # is left out: a client reading `detail` must get the problem's, or none.
    body.update(
        (name, value) for name, value in (extensions or {}).items() if name not in _STANDARD_MEMBERS
    )
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _location_to_field(location: Sequence[int | str]) -> str:
    parts = list(location)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        source = parts.pop(0)
        if not parts:
            return str(source)
    return field_path(tuple(parts))


ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_body(model: type[ModelT], raw: bytes) -> ModelT:
    """Validates a JSON body straight from its bytes (pydantic's own parser, no dict in
    between), with the same errors FastAPI gives a declared body parameter."""
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None


# Bodies that routes read from raw bytes (see parse_body), documented in the OpenAPI schema
# all the same.
_RAW_BODIES: dict[str, type[BaseModel]] = {}


def raw_body_openapi(model: type[BaseModel], **extra: Any) -> dict[str, Any]:
    """`openapi_extra` for a route that takes `model` as its JSON body through parse_body."""
    _RAW_BODIES[model.__name__] = model
    reference = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": reference}}},
        **extra,
    }


def install_raw_body_schemas(app: FastAPI) -> None:
    """Adds the models of raw_body_openapi routes to the schema's components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, model in _RAW_BODIES.items():
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for definition, value in body.pop("$defs", {}).items():
                    components.setdefault(definition, value)
                components.setdefault(name, body)
            _document_problems(schema)
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# FastAPI's own 422 body, which Tidings never sends: its handler answers with a Problem.
_FASTAPI_ERROR_REFS = (
    "#/components/schemas/HTTPValidationError",
    "#/components/schemas/Problem",
)


def _document_problems(schema: dict[str, Any]) -> None:
    """Says in the schema what error answers are: problem+json `Problem` bodies.

    FastAPI files a declared error model under application/json and documents its own 422
    body on every route with parameters; each such answer becomes a Problem in
    application/problem+json, and every operation gets a `4XX` answer of that shape (401, 403,
    404, 413 and 429 can come from any route), so clients and schema checks know them.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for definition, value in problem.pop("$defs", {}).items():
        components.setdefault(definition, value)
    components.setdefault("Problem", problem)
    problem_content = {PROBLEM_JSON: {"schema": dict(_PROBLEM_REF)}}
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses")
            if not isinstance(responses, dict):
                continue
            for status, response in responses.items():
                content = response.get("content") or {}
                json_ref = content.get("application/json", {}).get("schema", {}).get("$ref")
                if str(status)[0] in "45" and (
                    PROBLEM_JSON in content or json_ref in _FASTAPI_ERROR_REFS
                ):
                    response["content"] = dict(problem_content)
            # A route with errors of its own shape (AJO's) keeps it; problems can come from
            # the plumbing in front of any route all the same (401, 413, 429).
            fallback = responses.setdefault("4XX", {"description": "A problem (RFC 9457)"})
            fallback.setdefault("content", {}).update(problem_content)
    # FastAPI's error models, once no answer names them any more.
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in components and f"#/components/schemas/{unused}'" not in str(schema):
            del components[unused]


def retry_headers(exc: TidingsError) -> dict[str, str] | None:
    """Retry-After for a retryable error: the rate limit's own wait, else 5 seconds."""
    if not exc.retryable:
        return None
    wait = exc.retry_after if isinstance(exc, RateLimited) else 5.0
    return {"Retry-After": retry_after_header(wait)}


async def tidings_error(request: Request, exc: TidingsError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationFailed) else None
    headers = retry_headers(exc) or headers
    return problem_response(
        exc.status, exc.title, exc.detail, exc.errors, request.url.path, headers, exc.extensions
    )


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    status = 422
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            status = 400
            errors.append(FieldError("body", "is not valid JSON"))
            continue
        message = str(error.get("msg", "is invalid"))
        errors.append(FieldError(_location_to_field(error.get("loc", ())), message))
    title = "Malformed request body" if status == 400 else "Invalid input"
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    return problem_response(status, title, detail, errors, request.url.path)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    title = HTTP_TITLES.get(exc.status_code, "HTTP error")
    # FastAPI answers a body it cannot decode (bad UTF-8, JSON nested too deep) with a
    # bare 400; say which field is wrong, as every other malformed body does.
    errors = [FieldError("body", str(exc.detail))] if exc.status_code in (400, 413) else []
    return problem_response(
        exc.status_code,
        title,
        str(exc.detail),
        errors,
        instance=request.url.path,
        headers=getattr(exc, "headers", None),
    )


async def integrity_error(request: Request, exc: IntegrityError) -> JSONResponse:
    # Services check uniqueness first; this answers the rare race that slips between the
    # check and the insert (two requests creating the same name at once). Any other
    # integrity error is a bug and is answered as one.
    if not _is_unique_violation(exc):
        return await unexpected_error(request, exc)
    log.info("unique violation on %s %s", request.method, request.url.path)
    return problem_response(
        409,
        "Conflict",
        "the request conflicts with a concurrent change; retry it",
        instance=request.url.path,
    )


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        500, "Internal error", "an unexpected error was logged", instance=request.url.path
    )


async def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The problem+json answer to any exception, as the app's handlers give it."""
    if isinstance(exc, TidingsError):
        return await tidings_error(request, exc)
    if isinstance(exc, RequestValidationError):
        return await validation_error(request, exc)
    if isinstance(exc, StarletteHTTPException):
        return await http_error(request, exc)
    if isinstance(exc, IntegrityError):
        return await integrity_error(request, exc)
    return await unexpected_error(request, exc)


def install_error_handlers(app: Starlette) -> None:
    app.add_exception_handler(TidingsError, tidings_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(IntegrityError, integrity_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_error)


HTTP_TITLES = {
    400: "Malformed request body",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
}


def _is_unique_violation(exc: IntegrityError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate == "23505" or "UNIQUE constraint failed" in str(exc.orig)


class BodySizeLimit:
    """Refuses request bodies over a size with a 413 problem, before anything parses them.

    Checks Content-Length up front and counts the bytes of bodies sent without one.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        overrides: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # (method, path) -> limit, for routes that stream large bodies (file imports).
        self.overrides = dict(overrides or {})

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get((scope["method"], scope["path"]), self.max_bytes)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise StarletteHTTPException(413, self._detail(limit))
            return message

        await self.app(scope, counted, send)

    @staticmethod
    def _detail(limit: int) -> str:
        return f"the body is larger than {limit} bytes"

    async def _refuse(self, scope: AsgiScope, receive: Receive, send: Send, limit: int) -> None:
        response = problem_response(
            413,
            HTTP_TITLES[413],
            self._detail(limit),
            [FieldError("body", self._detail(limit))],
            instance=scope.get("path"),
        )
        await response(scope, receive, send)


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    # Async: a sync dependency would cost every request a thread-pool hop.
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


bearer_scheme = HTTPBearer(auto_error=False, description="A Tidings API key")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def bearer_secret(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials.strip():
        raise AuthenticationFailed("send an API key as 'Authorization: Bearer <key>'")
    return credentials.credentials.strip()


async def principal_for(runtime: Runtime, secret: str) -> Principal:
    """A cached key costs no thread-pool hop; only a cache miss reads the database, on a
    worker thread."""
    principal = runtime.authenticator.cached(secret)
    if principal is None:
        principal = await run_in_threadpool(runtime.authenticator.authenticate, secret)
    runtime.key_limiter.take(principal.key_id)
    return principal


async def principal_of(request: Request) -> Principal:
    """The caller of a route that reads `Authorization: Bearer <key>` itself."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationFailed("send an API key as 'Authorization: Bearer <key>'")
    return await principal_for(runtime_of(request), secret.strip())


async def authenticated(credentials: BearerDep, runtime: RuntimeDep) -> Principal:
    """A dependency for routes any valid key may call, whatever its scopes."""
    return await principal_for(runtime, bearer_secret(credentials))


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and checks one scope."""

    async def dependency(credentials: BearerDep, runtime: RuntimeDep) -> Principal:
        principal = await authenticated(credentials, runtime)
        principal.require(scope)
        return principal

    dependency.__name__ = f"require_{scope.value.replace(':', '_')}"
    return dependency


HotHandler = Callable[[Request], Awaitable[Response]]


class HotPaths:
    """Serves a few hot routes (the trigger endpoints) straight from ASGI, ahead of FastAPI.

    FastAPI's per-request machinery (its middleware stack, route matching over every route,
    dependency solving, response models) cost the trigger path more CPU than the trigger
    itself. These routes are declared in FastAPI all the same, for the OpenAPI schema, and run
    the same code there; `TidingsApp` hands them here first, behind the same body-size limit.
    Errors become the same problem+json answers.
    """

    def __init__(self, routes: Mapping[tuple[str, str], HotHandler], max_body_bytes: int) -> None:
        self.routes = dict(routes)
        self._limited = BodySizeLimit(self._serve, max_body_bytes)

    def handles(self, scope: AsgiScope) -> bool:
        return scope["type"] == "http" and (scope["method"], scope["path"]) in self.routes

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        await self._limited(scope, receive, send)

    async def _serve(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        handler = self.routes[(scope["method"], scope["path"])]
        request = Request(scope, receive)
        try:
            response: Response = await handler(request)
        except Exception as exc:
            response = await error_response(request, exc)
        await response(scope, receive, send)


class TidingsApp(FastAPI):
    """FastAPI, with the hot routes answered before its middleware stack."""

    hot_paths: HotPaths | None = None

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if self.hot_paths is not None and self.hot_paths.handles(scope):
            scope["app"] = self
            await self.hot_paths(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
