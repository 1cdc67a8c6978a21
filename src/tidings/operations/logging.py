"""Structured logs: one JSON object a line on stderr, with request ids and personal data masked.

`configure_logging` routes every log line of the process (Tidings' own `logging.getLogger`
calls, uvicorn's, SQLAlchemy's, structlog's) through one pipeline: context variables (the
request id, bound per request by tidings.operations.requests) and `extra={...}` fields are
merged in, then `redact` masks email addresses, E.164 phone numbers and the values of keys that
name personal data, then the line is rendered as JSON (or for a terminal, `console`).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console"]
# The id of the request being served (tidings.operations.requests sets it): one plain context
# variable, cheaper to set per request than structlog's bound context variables.
REQUEST_ID: ContextVar[str | None] = ContextVar("tidings_request_id", default=None)
REDACTED = "[redacted]"
EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"
# Values under these keys are personal data or carry it, whatever they look like.
SENSITIVE_KEYS = frozenset(
    {
        "address",
        "attributes",
        "context",
        "email",
        "identity",
        "phone",
        "profile",
        "profile_data",
        "recipient",
        "recipient_id",
        "to",
    }
)
# An address as it appears in text or in a URL path or query (`%40`), and an E.164 number
# (`+` and 7 to 15 digits, `%2B` URL-encoded).
_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_PHONE = re.compile(r"(?:\+|%2[Bb])[1-9][0-9]{6,14}(?![0-9])")
# Loggers whose own handlers would print lines beside the pipeline's.
_OWN_HANDLERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "sqlalchemy", "alembic")


def mask(text: str) -> str:
    """`text` with email addresses and E.164 phone numbers masked."""
    if "@" in text or "%40" in text:
        text = _EMAIL.sub(EMAIL_MASK, text)
    if "+" in text or "%2" in text:
        text = _PHONE.sub(PHONE_MASK, text)
    return text


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {
            key: REDACTED if str(key).lower() in SENSITIVE_KEYS else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item) for item in value]
    return value


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: no email address, phone number or personal field gets out."""
    for key, value in list(event_dict.items()):
        if key.lower() in SENSITIVE_KEYS:
            event_dict[key] = REDACTED
        elif key != "_record":
            event_dict[key] = redact_value(value)
    return event_dict


def add_request_id(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def _drop_color_message(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # uvicorn passes a copy of its message with terminal colors in `extra`.
    event_dict.pop("color_message", None)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def formatter(log_format: LogFormat) -> structlog.stdlib.ProcessorFormatter:
    """The formatter of the pipeline, for a handler of the root logger."""
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=str)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *_shared_processors(),
            structlog.stdlib.ExtraAdder(),
            _drop_color_message,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )


def configure_logging(
    level: str = "info", log_format: LogFormat = "json", stream: TextIO | None = None
) -> logging.Handler:
    """Sends every log line of the process through the pipeline to `stream` (stderr); returns
    the handler installed on the root logger."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _OWN_HANDLERS:
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return handler
