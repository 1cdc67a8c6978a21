"""Routes of /healthz (alive) and /readyz (ready to serve and to deliver)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

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
