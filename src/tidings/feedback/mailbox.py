"""The bounce mailbox: an SMTP endpoint that takes bounce and complaint mail and applies it.

The MTA that receives mail for the sender's bounce address (the Return-Path of what Tidings
sends) forwards it here, e.g. a Postfix transport to 127.0.0.1:TIDINGS_BOUNCE_SMTP_PORT.
Every message is accepted (250) once read, whether or not it is a report Tidings understands:
refusing it would make the forwarding MTA bounce a bounce. A failure to store what was read is
a 451, so the MTA tries again later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.controller import Controller

from tidings.db import Database
from tidings.feedback import service
from tidings.feedback.dsn import MAX_REPORT_BYTES, parse_report
from tidings.runtime import Runtime

log = logging.getLogger("tidings.feedback.mailbox")


class BounceHandler:
    """aiosmtpd handler: parses each message's report and applies its events."""

    def __init__(self, db: Database, *, soft_bounce_threshold: int) -> None:
        self.db = db
        self.soft_bounce_threshold = soft_bounce_threshold

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode("utf-8", "replace")
        try:
            events = parse_report(raw, envelope_recipients=list(envelope.rcpt_tos))
        except Exception:
            # Mail from anywhere: a report the parser chokes on is dropped, not retried forever.
            log.warning("a bounce message could not be parsed", exc_info=True)
            return "250 2.0.0 OK (not understood)"
        if events:
            try:
                await asyncio.to_thread(
                    service.apply_events,
                    self.db,
                    events,
                    soft_bounce_threshold=self.soft_bounce_threshold,
                )
            except Exception:
                log.exception("a bounce report could not be applied")
                return "451 4.3.0 could not store the report; try again later"
        return "250 2.0.0 OK"


class BounceMailbox:
    """The SMTP listener, in a thread of its own (aiosmtpd's Controller)."""

    def __init__(self, db: Database, *, host: str, port: int, soft_bounce_threshold: int) -> None:
        handler = BounceHandler(db, soft_bounce_threshold=soft_bounce_threshold)
        self._controller = Controller(
            handler, hostname=host, port=port, data_size_limit=MAX_REPORT_BYTES, timeout=60
        )

    def start(self) -> None:
        self._controller.start()
        log.info(
            "bounce mailbox listening on %s:%s", self._controller.hostname, self._controller.port
        )

    def stop(self) -> None:
        self._controller.stop()


def bounce_mailbox(runtime: Runtime) -> BounceMailbox | None:
    """The mailbox TIDINGS_BOUNCE_SMTP_PORT asks for, not yet started; None when unset."""
    settings = runtime.settings
    if settings.bounce_smtp_port is None:
        return None
    return BounceMailbox(
        runtime.db,
        host=settings.bounce_smtp_host,
        port=settings.bounce_smtp_port,
        soft_bounce_threshold=settings.soft_bounce_threshold,
    )
