"""Per request: a request id in every log line and in the answer, trigger latency, slow requests.

`ObservedApp` wraps the whole application, the hot trigger routes included (they are served
ahead of FastAPI's middleware stack). It takes the caller's `X-Request-Id` (or makes one),
binds it for the log lines of the request and returns it in the `X-Request-Id` header.

There is no line per request by default: one cost the trigger path about a tenth of its time
(docs/operations.md). Requests that fail with a 5xx or take longer than
TIDINGS_SLOW_REQUEST_SECONDS are logged; TIDINGS_ACCESS_LOG=true logs every one.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from dataclasses import dataclass

from starlette.types import Message, Receive, Send
from starlette.types import Scope as AsgiScope

from tidings.operations.logging import REQUEST_ID
from tidings.operations.metrics import Metrics
from tidings.web import TidingsApp

REQUEST_ID_HEADER = b"x-request-id"
# A caller's id is kept when it is short and plain; anything else is replaced, not echoed.
_ACCEPTABLE_ID = re.compile(rb"[A-Za-z0-9._:/=+-]{1,128}")

log = logging.getLogger("tidings.access")


@dataclass(frozen=True)
class RequestLog:
    # Every request, or only 5xx answers and requests slower than slow_seconds (0: none).
    every_request: bool = False
    slow_seconds: float = 1.0


# Request ids: a random prefix per process and a counter, unique across processes and
# restarts without a call to the OS per request.
_PROCESS_PREFIX = secrets.token_hex(6)
_sequence = itertools.count(1)


def new_request_id() -> str:
    return f"{_PROCESS_PREFIX}{next(_sequence):012x}"


def incoming_request_id(scope: AsgiScope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _ACCEPTABLE_ID.fullmatch(value) else None
    return None


class ObservedApp(TidingsApp):
    """The Tidings application with request ids, trigger latency and request logs."""

    metrics: Metrics | None = None
    request_log: RequestLog = RequestLog()

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = incoming_request_id(scope) or new_request_id()
        token = REQUEST_ID.set(request_id)
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await super().__call__(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            hot = self.hot_paths is not None and self.hot_paths.handles(scope)
            if hot and status < 400 and self.metrics is not None:
                self.metrics.trigger_latency.observe(elapsed)
            settings = self.request_log
            slow = 0 < settings.slow_seconds <= elapsed
            if status >= 500 or slow or settings.every_request:
                level = (
                    logging.ERROR if status >= 500 else logging.WARNING if slow else logging.INFO
                )
                # The path is masked by the pipeline's redaction (addresses in profile paths).
                log.log(
                    level,
                    "request",
                    extra={
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            REQUEST_ID.reset(token)
