"""Routes of /v1/webhooks: endpoints, secret rotation, and the delivery log with replay."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, status

from tidings.pagination import DEFAULT_LIMIT, MAX_LIMIT
from tidings.runtime import Runtime
from tidings.web import PROBLEM_RESPONSES, RuntimeDep, require
from tidings.webhooks import service
from tidings.webhooks.client import AddressPolicy
from tidings.webhooks.schemas import (
    DeliveryDetail,
    DeliveryList,
    DeliveryOut,
    DeliveryState,
    SecretRotated,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookOut,
    WebhookPatch,
)
from tidings.workspaces.schemas import Scope
from tidings.workspaces.service import Principal

router = APIRouter(prefix="/v1/webhooks", tags=["feedback webhooks"], responses=PROBLEM_RESPONSES)
# Webhooks send a workspace's events anywhere and hold signing secrets: an admin's job.
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
WebhookId = Annotated[str, Path(min_length=1, max_length=64)]
DeliveryId = Annotated[str, Path(min_length=1, max_length=64)]


def _policy(runtime: Runtime) -> AddressPolicy:
    return AddressPolicy.from_settings(runtime.settings)


def _out(row: dict[str, Any]) -> WebhookOut:
    return WebhookOut.model_validate(service.to_public(row))


@router.post("", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED)
def create_webhook(body: WebhookCreate, runtime: RuntimeDep, principal: Admin) -> WebhookCreated:
    row, secret = service.create(runtime.db, principal.workspace_id, body, _policy(runtime))
    return WebhookCreated.model_validate({**service.to_public(row), "secret": secret})


@router.get("", response_model=WebhookList)
def list_webhooks(
    runtime: RuntimeDep,
    principal: Admin,
    cursor: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
) -> WebhookList:
    rows, next_cursor = service.list_page(
        runtime.db, principal.workspace_id, cursor=cursor, limit=limit
    )
    return WebhookList(items=[_out(row) for row in rows], next_cursor=next_cursor)


@router.get("/{webhook_id}", response_model=WebhookOut)
def get_webhook(webhook_id: WebhookId, runtime: RuntimeDep, principal: Admin) -> WebhookOut:
    return _out(service.get(runtime.db, principal.workspace_id, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookOut)
def update_webhook(
    webhook_id: WebhookId, body: WebhookPatch, runtime: RuntimeDep, principal: Admin
) -> WebhookOut:
    row = service.update(runtime.db, principal.workspace_id, webhook_id, body, _policy(runtime))
    return _out(row)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(webhook_id: WebhookId, runtime: RuntimeDep, principal: Admin) -> Response:
    service.delete(runtime.db, principal.workspace_id, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhook_id}/rotate-secret", response_model=SecretRotated)
def rotate_secret(webhook_id: WebhookId, runtime: RuntimeDep, principal: Admin) -> SecretRotated:
    row, secret = service.rotate_secret(runtime.db, principal.workspace_id, webhook_id)
    return SecretRotated.model_validate({**service.to_public(row), "secret": secret})


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList)
def list_deliveries(
    webhook_id: WebhookId,
    runtime: RuntimeDep,
    principal: Admin,
    state: DeliveryState | None = None,
    cursor: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
) -> DeliveryList:
    rows, next_cursor = service.list_deliveries(
        runtime.db, principal.workspace_id, webhook_id, state=state, cursor=cursor, limit=limit
    )
    return DeliveryList(
        items=[DeliveryOut.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.get("/{webhook_id}/deliveries/{delivery_id}", response_model=DeliveryDetail)
def get_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, runtime: RuntimeDep, principal: Admin
) -> DeliveryDetail:
    row = service.get_delivery(runtime.db, principal.workspace_id, webhook_id, delivery_id)
    return DeliveryDetail.model_validate(row)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/replay",
    response_model=DeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
)
def replay_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, runtime: RuntimeDep, principal: Admin
) -> DeliveryOut:
    row = service.replay(runtime.db, principal.workspace_id, webhook_id, delivery_id)
    return DeliveryOut.model_validate(row)
