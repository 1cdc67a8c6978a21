"""Builds the ASGI application: routers, error handlers, and the in-process worker if asked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from tidings import __version__
from tidings.ajo.api import HOT_ROUTES as AJO_HOT_ROUTES
from tidings.ajo.api import router as ajo_router
from tidings.audiences.api import router as audiences_router
from tidings.campaigns.api import router as campaigns_router
from tidings.channels.api import router as channels_router
from tidings.channels.dev import DevSinkAdapter, is_loopback
from tidings.channels.sms.api import router as sms_webhooks_router
from tidings.console.mailbox import router as mailbox_router
from tidings.console.pages import install as install_console
from tidings.console.pages import router as console_router
from tidings.delivery.worker import Worker, default_adapters
from tidings.executions.api import HOT_ROUTES as EXECUTION_HOT_ROUTES
from tidings.executions.api import router as executions_router
from tidings.feedback.api import router as feedback_router
from tidings.feedback.mailbox import bounce_mailbox
from tidings.operations.api import router as operations_router
from tidings.operations.metrics import Metrics, bind
from tidings.operations.requests import ObservedApp, RequestLog
from tidings.operations.service import ReadinessProbe, WorkerState
from tidings.profiles.api import imports_router as profile_imports_router
from tidings.profiles.api import router as profiles_router
from tidings.proofs.api import router as proofs_router
from tidings.reports.api import router as reports_router
from tidings.rules.api import router as rules_router
from tidings.runtime import Runtime
from tidings.suppressions.api import router as suppressions_router
from tidings.tracking.api import router as tracking_router
from tidings.unsubscribe.api import router as unsubscribe_router
from tidings.web import (
    BodySizeLimit,
    HotPaths,
    install_error_handlers,
    install_raw_body_schemas,
)
from tidings.webhooks.api import router as webhooks_router
from tidings.workspaces.api import router as workspaces_router

# Routes that stream files row by row: TIDINGS_MAX_IMPORT_BYTES instead of the body limit.
IMPORT_PATHS = ("/v1/profiles/imports", "/v1/suppressions/import", "/profiles/imports")


def create_app(runtime: Runtime, *, with_worker: bool = False) -> FastAPI:
    worker = WorkerState()
    settings = runtime.settings
    # The dev mailbox: only with the in-process worker (its sink is in this process) and only
    # on a loopback host: it is not behind the console's sign-in.
    dev_sink = (
        DevSinkAdapter()
        if with_worker and settings.dev_mailbox and is_loopback(settings.host)
        else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = (
            asyncio.create_task(
                Worker(runtime, default_adapters(runtime, dev_sink=dev_sink)).run(stop)
            )
            if with_worker
            else None
        )
        worker.task = task
        # The bounce mailbox goes with the in-process worker (`tidings serve`); scale-out
        # shapes run `tidings bounces serve` once instead of one per API process.
        mailbox = bounce_mailbox(runtime) if with_worker else None
        if mailbox is not None:
            await asyncio.to_thread(mailbox.start)
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task
            if mailbox is not None:
                await asyncio.to_thread(mailbox.stop)

    app = ObservedApp(
        title="Tidings",
        version=__version__,
        summary="API-triggered campaigns over email, SMS and push",
        lifespan=lifespan,
        # FastAPI's OpenTelemetry hooks check for providers on every request; Tidings' metrics
        # are its own (Prometheus), so they stay off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    app.state.dev_sink = dev_sink
    app.state.readiness = ReadinessProbe(runtime.db, worker)
    # This process's metrics, counting what commits on its database (the worker's too).
    app.state.metrics = app.metrics = Metrics(runtime.db)
    bind(runtime.db, app.metrics)
    app.request_log = RequestLog(settings.access_log, settings.slow_request_seconds)
    install_error_handlers(app)
    install_console(app)
    install_raw_body_schemas(app)
    imports = {("POST", path): settings.max_import_bytes for path in IMPORT_PATHS}
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, overrides=imports)
    app.hot_paths = HotPaths(
        {**EXECUTION_HOT_ROUTES, **AJO_HOT_ROUTES}, runtime.settings.max_body_bytes
    )
    # Routes are matched in this order: the probes first, as load balancers call them often.
    for router in (
        operations_router,
        workspaces_router,
        channels_router,
        campaigns_router,
        proofs_router,
        executions_router,
        reports_router,
        ajo_router,
        profiles_router,
        profile_imports_router,
        audiences_router,
        suppressions_router,
        rules_router,
        unsubscribe_router,
        feedback_router,
        sms_webhooks_router,
        tracking_router,
        console_router,
        mailbox_router,
        webhooks_router,
    ):
        app.include_router(router)

    return app
