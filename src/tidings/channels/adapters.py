"""The one interface every channel adapter implements, and what it returns when it cannot send.

An adapter receives messages that are already rendered and addressed, sends them, and says for
each one whether it was accepted (with the provider's id) or why not, classifying the failure
where it happens: permanent (never retry) or transient (retry later, maybe after a delay the
provider asked for).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tidings.errors import TidingsError


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message ready to leave: rendered content, recipient address, sender settings."""

    message_id: str
    to: str
    # The rendered content in the channel's shape: email {subject, html, text}, sms {body},
    # push {title, body, data, deeplink}.
    content: Mapping[str, Any]
    # The channel configuration's settings with its secrets (see channels.service.join_secrets).
    settings: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    # Email: the HTML's <style> rules are in its elements already (inlined once per version).
    css_inlined: bool = False


@dataclass(frozen=True, slots=True)
class Accepted:
    message_id: str
    provider_message_id: str | None = None


class SendFailed(TidingsError):
    """The provider did not take the message; `retryable` says whether trying again may help.

    `reason` is a stable code stored with the message (e.g. smtp_550, connection_error).
    """

    title = "Send failed"

    def __init__(
        self,
        message_id: str,
        reason: str,
        detail: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.message_id = message_id
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


SendOutcome = Accepted | SendFailed

# The reason of a SendFailed for a message the adapter did not try because the channel
# configuration's own rate was reached: the deliverer postpones it by its retry_after without
# counting an attempt.
THROTTLED = "throttled"


class ChannelAdapter(Protocol):
    """Sends batches of messages of one channel. Implementations keep their connections open
    between batches and must be safe to call from one event loop."""

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        """One outcome per message, in order. Never raises for a message's own failure."""
        ...

    async def close(self) -> None: ...
