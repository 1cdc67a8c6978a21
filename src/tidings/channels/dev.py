"""Adapters for `make run` and for providers not built yet: a sink that keeps what it gets."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from tidings.channels.adapters import Accepted, OutboundMessage, SendFailed, SendOutcome

DEV_PROVIDER = "dev"


class DevSinkAdapter:
    """Accepts every message of configurations whose provider is `dev`, and keeps the last
    ones in memory so a first look needs no provider. Other providers are refused permanently
    until their adapter exists, with a reason that says so."""

    def __init__(self, keep: int = 1000) -> None:
        self.received: deque[OutboundMessage] = deque(maxlen=keep)

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        outcomes: list[SendOutcome] = []
        for message in messages:
            provider = message.settings.get("provider", DEV_PROVIDER)
            if provider == DEV_PROVIDER:
                self.received.append(message)
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

    async def close(self) -> None:
        self.received.clear()
