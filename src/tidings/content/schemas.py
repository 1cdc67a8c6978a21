"""Per-channel content shapes as the API accepts and returns them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidings.errors import FieldError, InvalidInput
from tidings.vocabulary import Channel

MAX_TEXT = 1_000_000


class _Content(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmailContent(_Content):
    subject: str | None = Field(default=None, max_length=2000)
    html: str | None = Field(default=None, max_length=MAX_TEXT)
    text: str | None = Field(default=None, max_length=MAX_TEXT)


class SmsContent(_Content):
    body: str | None = Field(default=None, max_length=10_000)


class PushContent(_Content):
    title: str | None = Field(default=None, max_length=1000)
    body: str | None = Field(default=None, max_length=4000)
    data: dict[str, str] | None = Field(default=None, max_length=100)
    deeplink: str | None = Field(default=None, max_length=2000)


Content = EmailContent | SmsContent | PushContent

CONTENT_MODELS: dict[Channel, type[_Content]] = {
    Channel.EMAIL: EmailContent,
    Channel.SMS: SmsContent,
    Channel.PUSH: PushContent,
}


def field_path(location: tuple[int | str, ...], prefix: str = "") -> str:
    """Dotted field name from a pydantic error location (`[key]` marks a bad dict key)."""
    parts = [str(part) for part in location if part != "[key]"]
    return ".".join([prefix, *parts] if prefix else parts)


def parse_content(channel: Channel, raw: dict[str, Any] | None) -> Content | None:
    """Validates raw content against the channel's shape; errors name `content.<field>`."""
    if raw is None:
        return None
    model = CONTENT_MODELS[channel]
    try:
        return model.model_validate(raw)  # type: ignore[return-value]
    except ValidationError as exc:
        errors = [
            FieldError(field_path(error["loc"], "content"), error["msg"]) for error in exc.errors()
        ]
        raise InvalidInput(f"content does not fit the {channel} channel", errors=errors) from None


MAX_CONTEXT_BYTES = 200_000
