"""Per-channel content shapes as the API accepts and returns them."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from tidings.errors import FieldError, InvalidInput
from tidings.vocabulary import Channel

MAX_TEXT = 1_000_000


class _Content(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmailContent(_Content):
    subject: str | None = Field(default=None, max_length=2000)
    html: str | None = Field(default=None, max_length=MAX_TEXT)
    text: str | None = Field(default=None, max_length=MAX_TEXT)


def _check_media_url(value: str) -> str:
    # Twilio fetches it from the internet: only https, and a host to fetch it from.
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("must be an https:// URL")
    return value


MediaUrl = Annotated[str, Field(max_length=2000), AfterValidator(_check_media_url)]


class SmsContent(_Content):
    body: str | None = Field(default=None, max_length=10_000)
    media_urls: list[MediaUrl] | None = Field(
        default=None,
        max_length=10,
        description="Images and other media sent with the text (MMS), as authored: no templates",
    )


def _check_push_data(value: dict[str, str]) -> dict[str, str]:
    # Keys the providers keep for themselves: FCM refuses a message that uses them, and APNs
    # reads `aps` as its own dictionary.
    for key in value:
        if not key or key in ("aps", "from", "message_type") or key.startswith(("google", "gcm")):
            raise ValueError(f"'{key}' is reserved by the push providers; choose another key")
    return value


class PushContent(_Content):
    title: str | None = Field(default=None, max_length=1000)
    body: str | None = Field(default=None, max_length=4000)
    data: Annotated[dict[str, str], AfterValidator(_check_push_data)] | None = Field(
        default=None, max_length=100
    )
    deeplink: str | None = Field(default=None, max_length=2000)
    badge: int | None = Field(
        default=None, ge=0, le=99_999, description="App icon badge count, as authored"
    )
    sound: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description='Sound to play ("default" or a sound file of the app), as authored',
    )


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
