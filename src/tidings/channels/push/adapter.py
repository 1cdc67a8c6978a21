"""The push channel's one adapter: sends through the provider its configuration names (fcm,
apns, dev) and removes the device tokens the provider calls invalid.

Messages of a batch go out concurrently, at most MAX_CONCURRENT per provider at a time, each
provider over its own HTTP client (FCM over HTTP/1.1, APNs over HTTP/2 as Apple requires).
Tokens refused as invalid are handed to an InvalidTokens port once per batch, apart from the
deliverer's own record of outcomes: the message fails with `invalid_token` either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx
import sqlalchemy as sa

from tidings.channels.adapters import ChannelAdapter, OutboundMessage, SendFailed, SendOutcome
from tidings.channels.dev import DEV_PROVIDER, DevSinkAdapter
from tidings.channels.push.apns import ApnsSender
from tidings.channels.push.fcm import DEFAULT_API_BASE, FcmSender
from tidings.channels.push.http import INVALID_TOKEN, MAX_CONCURRENT, new_client
from tidings.db import Database
from tidings.executions.models import messages
from tidings.profiles.service import forget_push_token

log = logging.getLogger("tidings.push")


@dataclass(frozen=True, slots=True)
class RefusedToken:
    message_id: str
    token: str
    # The configuration's app: the token is removed for it alone, or for every app when None.
    app_id: str | None


class InvalidTokens(Protocol):
    """Where tokens the provider called invalid go."""

    async def remove(self, tokens: Sequence[RefusedToken]) -> None: ...


class DatabaseInvalidTokens:
    """Deletes them from the profiles of the workspace each message belongs to."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def remove(self, tokens: Sequence[RefusedToken]) -> None:
        if tokens:
            await asyncio.to_thread(self._remove, tokens)

    def _remove(self, tokens: Sequence[RefusedToken]) -> None:
        with self.db.write() as conn:
            rows = conn.execute(
                sa.select(messages.c.id, messages.c.workspace_id).where(
                    messages.c.id.in_(sorted({token.message_id for token in tokens}))
                )
            )
            workspaces = {row.id: row.workspace_id for row in rows}
            removed = 0
            for token in tokens:
                workspace_id = workspaces.get(token.message_id)
                if workspace_id is not None:
                    removed += forget_push_token(conn, workspace_id, token.token, token.app_id)
        if removed:
            log.info("push tokens removed as invalid: %d", removed)


class PushAdapter:
    def __init__(
        self,
        *,
        fcm_api_base: str = DEFAULT_API_BASE,
        apns_api_base: str | None = None,
        invalid_tokens: InvalidTokens | None = None,
        dev: ChannelAdapter | None = None,
        fcm_client: httpx.AsyncClient | None = None,
        apns_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.fcm_client = fcm_client or new_client()
        self.apns_client = apns_client or new_client(http2_only=True)
        self.fcm = FcmSender(self.fcm_client, fcm_api_base)
        self.apns = ApnsSender(self.apns_client, apns_api_base)
        self.dev = dev or DevSinkAdapter()
        self.invalid_tokens = invalid_tokens
        self._slots = {
            "fcm": asyncio.Semaphore(MAX_CONCURRENT),
            "apns": asyncio.Semaphore(MAX_CONCURRENT),
        }

    async def send(self, batch: Sequence[OutboundMessage]) -> list[SendOutcome]:
        outcomes = list(await asyncio.gather(*(self._send_one(message) for message in batch)))
        refused = [
            RefusedToken(message.message_id, message.to, message.settings.get("app_id"))
            for message, outcome in zip(batch, outcomes, strict=True)
            if isinstance(outcome, SendFailed) and outcome.reason == INVALID_TOKEN
        ]
        if refused and self.invalid_tokens is not None:
            try:
                await self.invalid_tokens.remove(refused)
            except Exception:
                # The next message to a dead token fails the same way and tries again.
                log.exception("removing invalid push tokens failed")
        return outcomes

    async def _send_one(self, message: OutboundMessage) -> SendOutcome:
        provider = message.settings.get("provider", DEV_PROVIDER)
        if provider == DEV_PROVIDER:
            [outcome] = await self.dev.send([message])
            return outcome
        if provider == "fcm":
            async with self._slots["fcm"]:
                return await self.fcm.send(message)
        if provider == "apns":
            async with self._slots["apns"]:
                return await self.apns.send(message)
        return SendFailed(
            message.message_id,
            "provider_not_available",
            f"the {provider} push provider is not available in this version",
            retryable=False,
        )

    async def close(self) -> None:
        await self.fcm_client.aclose()
        await self.apns_client.aclose()
