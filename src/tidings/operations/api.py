"""Routes of /healthz (alive), /readyz (ready to serve and to deliver) and /metrics."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from tidings.errors import AuthenticationFailed
from tidings.operations.metrics import CONTENT_TYPE, Metrics
from tidings.operations.schemas import Health, ReadinessOut
from tidings.operations.service import ReadinessProbe

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Alive: the process answers. Restart it when this fails."""
    return Health(status="ok")


@router.get("/readyz", response_model=ReadinessOut, responses={503: {"model": ReadinessOut}})
async def readyz(request: Request) -> JSONResponse:
    """Ready: the database answers, its schema is this version's, and the in-process worker
    (under `tidings serve`) runs. 503 with the failing checks otherwise: send no traffic here.
    `worker` is `absent` in a `tidings api` process, whose workers are other processes."""
    probe: ReadinessProbe = request.app.state.readiness
    result = await run_in_threadpool(probe.check)
    body = ReadinessOut(
        status="ready" if result.ready else "not ready",
        checks=result.checks,
        details=result.details,
    )
    return JSONResponse(body.model_dump(), status_code=200 if result.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    """This process's metrics in Prometheus' text format (docs/operations.md lists them). Open
    unless TIDINGS_METRICS_TOKEN is set, then `Authorization: Bearer <token>`."""
    token = request.app.state.runtime.settings.metrics_token
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise AuthenticationFailed("send TIDINGS_METRICS_TOKEN as 'Authorization: Bearer …'")
    registry: Metrics = request.app.state.metrics
    # Off the event loop: the queue gauges may read the database.
    body = await run_in_threadpool(registry.exposition)
    return Response(body, media_type=CONTENT_TYPE)
