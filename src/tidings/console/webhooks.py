"""Console pages of feedback webhooks: endpoints, their secret (shown once), the delivery log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tidings.console.auth import Admin, Member
from tidings.console.forms import field_errors, form_lists, problems, unplaced
from tidings.console.templating import render
from tidings.errors import FieldError, NotFound, TidingsError
from tidings.runtime import Runtime
from tidings.users.schemas import ConsoleSession
from tidings.web import runtime_of
from tidings.webhooks import service as webhooks
from tidings.webhooks.client import AddressPolicy
from tidings.webhooks.schemas import (
    DeliveryState,
    WebhookCreate,
    WebhookEventType,
    WebhookFormat,
    WebhookPatch,
)

router = APIRouter(include_in_schema=False)
WebhookId = Path(min_length=1, max_length=64)
DeliveryId = Path(min_length=1, max_length=64)
FIELDS = {"url", "description", "event_types", "format", "enabled"}
DELIVERIES_LISTED = 50


def _policy(runtime: Runtime) -> AddressPolicy:
    return AddressPolicy.from_settings(runtime.settings)


def _first(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[-1]


def body_of(form: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "url": _first(form, "url").strip(),
        "description": _first(form, "description") or None,
        "event_types": form.get("event_types", []),
        "format": _first(form, "format") or WebhookFormat.STANDARD.value,
        "enabled": _first(form, "enabled") == "on",
    }


def _choices() -> dict[str, Any]:
    return {
        "event_types": [event.value for event in WebhookEventType],
        "formats": [kind.value for kind in WebhookFormat],
        "states": [state.value for state in DeliveryState],
    }


async def _list_page(
    request: Request,
    session: ConsoleSession,
    status_code: int = 200,
    error: str | None = None,
    errors: list[FieldError] | None = None,
    values: dict[str, Any] | None = None,
) -> HTMLResponse:
    runtime = runtime_of(request)
    rows, next_cursor = await run_in_threadpool(
        lambda: webhooks.list_page(
            runtime.db,
            session.workspace_id,
            cursor=request.query_params.get("cursor") or None,
            limit=100,
        )
    )
    errors = errors or []
    return render(
        request,
        "webhooks/list.html",
        status_code,
        webhooks=[webhooks.to_public(row) for row in rows],
        next_cursor=next_cursor,
        values=values or {"event_types": [], "enabled": True, "format": "standard"},
        error=error,
        errors=unplaced(errors, FIELDS),
        field_errors=field_errors(errors),
        **_choices(),
    )


@router.get("/webhooks", response_class=HTMLResponse)
async def webhook_list(request: Request, session: Member) -> Response:
    return await _list_page(request, session)


@router.post("/webhooks", response_class=HTMLResponse)
async def create_webhook(request: Request, session: Admin) -> Response:
    body = body_of(await form_lists(request))
    runtime = runtime_of(request)
    try:
        row, secret = await run_in_threadpool(
            webhooks.create,
            runtime.db,
            session.workspace_id,
            WebhookCreate.model_validate(body),
            _policy(runtime),
        )
    except (TidingsError, ValidationError) as exc:
        detail, errors = problems(exc)
        return await _list_page(request, session, 422, detail, errors, body)
    # The secret is in this one answer only.
    return await _detail_page(request, session, row["id"], 201, secret=secret)


async def _detail_page(
    request: Request,
    session: ConsoleSession,
    webhook_id: str,
    status_code: int = 200,
    error: str | None = None,
    errors: list[FieldError] | None = None,
    values: dict[str, Any] | None = None,
    secret: str | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    runtime = runtime_of(request)
    raw_state = request.query_params.get("state") or ""
    state = DeliveryState(raw_state) if raw_state in DeliveryState.__members__.values() else None
    try:
        row = await run_in_threadpool(webhooks.get, runtime.db, session.workspace_id, webhook_id)
        deliveries, next_cursor = await run_in_threadpool(
            lambda: webhooks.list_deliveries(
                runtime.db,
                session.workspace_id,
                webhook_id,
                state=state,
                cursor=request.query_params.get("cursor") or None,
                limit=DELIVERIES_LISTED,
            )
        )
    except NotFound as exc:
        return render(request, "error.html", 404, title="No such webhook", message=exc.detail)
    webhook = webhooks.to_public(row)
    errors = errors or []
    return render(
        request,
        "webhooks/detail.html",
        status_code,
        webhook=webhook,
        values=values or webhook,
        deliveries=deliveries,
        next_cursor=next_cursor,
        state=state.value if state else "",
        secret=secret,
        error=error,
        errors=unplaced(errors, FIELDS),
        field_errors=field_errors(errors),
        notice=notice,
        **_choices(),
    )


@router.get("/webhooks/{webhook_id}", response_class=HTMLResponse)
async def webhook_page(request: Request, session: Member, webhook_id: str = WebhookId) -> Response:
    notice = "Saved." if request.query_params.get("saved") else None
    return await _detail_page(request, session, webhook_id, notice=notice)


@router.post("/webhooks/{webhook_id}", response_class=HTMLResponse)
async def update_webhook(request: Request, session: Admin, webhook_id: str = WebhookId) -> Response:
    body = body_of(await form_lists(request))
    runtime = runtime_of(request)
    try:
        await run_in_threadpool(
            webhooks.update,
            runtime.db,
            session.workspace_id,
            webhook_id,
            WebhookPatch.model_validate(body),
            _policy(runtime),
        )
    except NotFound as exc:
        return render(request, "error.html", 404, title="No such webhook", message=exc.detail)
    except (TidingsError, ValidationError) as exc:
        detail, errors = problems(exc)
        return await _detail_page(request, session, webhook_id, 422, detail, errors, body)
    return RedirectResponse(f"/webhooks/{webhook_id}?saved=1", status_code=303)


@router.post("/webhooks/{webhook_id}/rotate-secret", response_class=HTMLResponse)
async def rotate_secret(request: Request, session: Admin, webhook_id: str = WebhookId) -> Response:
    try:
        _, secret = await run_in_threadpool(
            webhooks.rotate_secret, runtime_of(request).db, session.workspace_id, webhook_id
        )
    except NotFound as exc:
        return render(request, "error.html", 404, title="No such webhook", message=exc.detail)
    return await _detail_page(request, session, webhook_id, secret=secret)


@router.post("/webhooks/{webhook_id}/delete", response_class=HTMLResponse)
async def delete_webhook(request: Request, session: Admin, webhook_id: str = WebhookId) -> Response:
    try:
        await run_in_threadpool(
            webhooks.delete, runtime_of(request).db, session.workspace_id, webhook_id
        )
    except NotFound as exc:
        return render(request, "error.html", 404, title="No such webhook", message=exc.detail)
    return RedirectResponse("/webhooks", status_code=303)


@router.get("/webhooks/{webhook_id}/deliveries/{delivery_id}", response_class=HTMLResponse)
async def delivery_page(
    request: Request,
    session: Member,
    webhook_id: str = WebhookId,
    delivery_id: str = DeliveryId,
) -> Response:
    try:
        delivery = await run_in_threadpool(
            webhooks.get_delivery,
            runtime_of(request).db,
            session.workspace_id,
            webhook_id,
            delivery_id,
        )
    except NotFound as exc:
        return render(request, "error.html", 404, title="No such delivery", message=exc.detail)
    return render(request, "webhooks/delivery.html", webhook_id=webhook_id, delivery=delivery)


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/replay", response_class=HTMLResponse)
async def replay_delivery(
    request: Request,
    session: Admin,
    webhook_id: str = WebhookId,
    delivery_id: str = DeliveryId,
) -> Response:
    try:
        replayed = await run_in_threadpool(
            webhooks.replay, runtime_of(request).db, session.workspace_id, webhook_id, delivery_id
        )
    except NotFound as exc:
        return render(request, "error.html", 404, title="No such delivery", message=exc.detail)
    except TidingsError as exc:
        return await _detail_page(request, session, webhook_id, 409, exc.detail)
    return await _detail_page(
        request, session, webhook_id, 202, notice=f"Replay queued as delivery {replayed['id']}."
    )
