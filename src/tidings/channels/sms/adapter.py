"""The SMS channel's one adapter: checks the number, measures the body, sends through the
provider its configuration names (twilio, generic, dev), and records encoding and segments.

Messages of a batch go out concurrently, at most MAX_CONCURRENT at a time over one shared
HTTP client (the providers take one message per request). The encoding and segment count of
each accepted message are written beside its row by a SegmentRecorder, apart from the
deliverer's own record of outcomes: they are facts about the body, not about its state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import httpx
import sqlalchemy as sa

from tidings.channels.adapters import (
    Accepted,
    ChannelAdapter,
    OutboundMessage,
    SendFailed,
    SendOutcome,
)
from tidings.channels.dev import DEV_PROVIDER, DevSinkAdapter
from tidings.channels.sms.encoding import SmsLength, measure
from tidings.channels.sms.generic import GenericSender
from tidings.channels.sms.http import MAX_CONNECTIONS, new_client
from tidings.channels.sms.twilio import TwilioSender
from tidings.db import Database
from tidings.executions.models import messages
from tidings.vocabulary import E164_PATTERN

MAX_CONCURRENT = MAX_CONNECTIONS

log = logging.getLogger("tidings.sms")


class SegmentRecorder(Protocol):
    """Where the encoding and segment count of sent messages go."""

    async def record(self, lengths: Sequence[tuple[str, SmsLength]]) -> None: ...


class DatabaseSegmentRecorder:
    """Writes them on the messages' rows (sms_encoding, sms_segments), one UPDATE a batch."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, lengths: Sequence[tuple[str, SmsLength]]) -> None:
        if lengths:
            await asyncio.to_thread(self._write, lengths)

    def _write(self, lengths: Sequence[tuple[str, SmsLength]]) -> None:
        with self.db.write() as conn:
            conn.execute(
                messages.update()
                .where(messages.c.id == sa.bindparam("message_id"))
                .values(sms_encoding=sa.bindparam("e"), sms_segments=sa.bindparam("s")),
                [
                    {"message_id": message_id, "e": length.encoding.value, "s": length.segments}
                    for message_id, length in lengths
                ],
            )


class SmsAdapter:
    def __init__(
        self,
        *,
        public_url: str,
        twilio_api_base: str = "https://api.twilio.com",
        recorder: SegmentRecorder | None = None,
        dev: ChannelAdapter | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.client = client or new_client()
        self.twilio = TwilioSender(self.client, twilio_api_base, public_url)
        self.generic = GenericSender(self.client)
        self.dev = dev or DevSinkAdapter()
        self.recorder = recorder
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    async def send(self, batch: Sequence[OutboundMessage]) -> list[SendOutcome]:
        lengths = {m.message_id: measure(m.content.get("body") or "") for m in batch}
        outcomes = await asyncio.gather(*(self._send_one(message) for message in batch))
        accepted = [
            (outcome.message_id, lengths[outcome.message_id])
            for outcome in outcomes
            if isinstance(outcome, Accepted)
        ]
        if self.recorder is not None and accepted:
            try:
                await self.recorder.record(accepted)
            except Exception:
                # The messages are sent either way: losing their segment count must not make
                # the deliverer think otherwise.
                log.exception("recording SMS segments failed")
        return list(outcomes)

    async def _send_one(self, message: OutboundMessage) -> SendOutcome:
        if not E164_PATTERN.match(message.to):
            return SendFailed(
                message.message_id,
                "malformed_address",
                f"{message.to!r} is not an E.164 phone number",
                retryable=False,
            )
        provider = message.settings.get("provider", DEV_PROVIDER)
        if provider == DEV_PROVIDER:
            [outcome] = await self.dev.send([message])
            return outcome
        async with self._slots:
            if provider == "twilio":
                return await self.twilio.send(message)
            if provider == "generic":
                return await self.generic.send(message)
        return SendFailed(
            message.message_id,
            "provider_not_available",
            f"the {provider} SMS provider is not available in this version",
            retryable=False,
        )

    async def close(self) -> None:
        await self.client.aclose()
