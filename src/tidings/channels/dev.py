"""Adapters for `make run` and for providers not built yet: a sink that keeps what it gets."""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tidings.channels.adapters import (
    Accepted,
    ChannelAdapter,
    OutboundMessage,
    SendFailed,
    SendOutcome,
)
from tidings.clock import utcnow

DEV_PROVIDER = "dev"


@dataclass(frozen=True, slots=True)
class DevMessage:
    """A message the sink kept, with what the dev mailbox page shows of it."""

    message: OutboundMessage
    channel: str
    received_at: datetime


def channel_of(message: OutboundMessage) -> str:
    """The channel of a message from its content's shape (the sink serves several adapters,
    which do not say theirs): email has a subject, push a title or badge, SMS neither."""
    content = message.content
    if "subject" in content or "html" in content:
        return "email"
    if "title" in content or "badge" in content or "data" in content:
        return "push"
    return "sms"


class DevSinkAdapter:
    """Accepts every message of configurations whose provider is `dev`, and keeps the last
    ones in memory so a first look needs no provider (the console's /dev/mailbox shows them).
    Other providers are refused permanently until their adapter exists, with a reason that
    says so."""

    def __init__(self, keep: int = 1000) -> None:
        self.received: deque[OutboundMessage] = deque(maxlen=keep)
        self.mailbox: deque[DevMessage] = deque(maxlen=keep)

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        outcomes: list[SendOutcome] = []
        now = utcnow()
        for message in messages:
            provider = message.settings.get("provider", DEV_PROVIDER)
            if provider == DEV_PROVIDER:
                self.received.append(message)
                self.mailbox.append(DevMessage(message, channel_of(message), now))
                outcomes.append(Accepted(message.message_id, f"dev-{message.message_id}"))
            else:
                outcomes.append(
                    SendFailed(
                        message.message_id,
                        "provider_not_available",
                        f"the {provider} adapter is not available in this version",
                        retryable=False,
                    )
                )
        return outcomes

    def newest_first(self) -> list[DevMessage]:
        return list(reversed(self.mailbox))

    def find(self, message_id: str) -> DevMessage | None:
        return next((m for m in self.mailbox if m.message.message_id == message_id), None)

    async def close(self) -> None:
        self.received.clear()
        self.mailbox.clear()


class DevMailRoute:
    """The email adapter of the dev shape: emails whose configuration names no SMTP relay go
    to the sink (there is no TIDINGS_SMTP_URL either, or this route is not installed), the
    rest to the real adapter."""

    def __init__(self, email: ChannelAdapter, sink: DevSinkAdapter) -> None:
        self.email = email
        self.sink = sink

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        relayed = [m for m in messages if m.settings.get("smtp_url")]
        if len(relayed) == len(messages):
            return await self.email.send(messages)
        kept = [m for m in messages if not m.settings.get("smtp_url")]
        # The sink takes every message it is given: these carry no provider setting.
        outcomes = await self.sink.send(kept)
        if relayed:
            outcomes += await self.email.send(relayed)
        return outcomes

    async def close(self) -> None:
        await self.email.close()


def is_loopback(host: str) -> bool:
    """Whether a listening address only takes connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
