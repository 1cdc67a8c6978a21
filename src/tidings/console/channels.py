"""Console pages of channel configurations: the list, and a form per channel (admins change).

The form's fields come from the channel's settings schema, so a setting added there shows up
here. Secrets are write-only: their inputs start empty and say whether a value is stored; left
empty, the stored value stays (the SMTP password rides inside smtp_url, shown without it).
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tidings.channels import service as channels
from tidings.channels.schemas import (
    SETTINGS_MODELS,
    ChannelConfigurationCreate,
    ChannelConfigurationPatch,
)
from tidings.console.auth import Admin, Member
from tidings.console.forms import field_errors, form_fields, problems, unplaced
from tidings.console.templating import render
from tidings.errors import FieldError, InvalidInput, NotFound, TidingsError
from tidings.vocabulary import Category, Channel
from tidings.web import runtime_of

router = APIRouter(include_in_schema=False)
ConfigurationId = Path(min_length=1, max_length=64)
# Secrets too long for a one-line input: PEM keys and a service account's JSON.
LONG_SECRETS = frozenset({"dkim_private_key", "fcm_service_account_json", "apns_private_key"})


@dataclass(frozen=True)
class SettingField:
    """One input of a channel's settings form."""

    name: str
    kind: str  # text, number, checkbox, select, json, secret, secret_text
    description: str
    options: tuple[str, ...] = ()
    default: Any = None


def _plain(annotation: Any) -> Any:
    """The type under Optional[...] and Annotated[...]."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            kept = [arg for arg in get_args(annotation) if arg is not type(None)]
            annotation = kept[0] if len(kept) == 1 else str
        else:
            return annotation


def setting_fields(channel: Channel) -> list[SettingField]:
    model = SETTINGS_MODELS[channel]
    fields = []
    for name, info in model.model_fields.items():
        plain = _plain(info.annotation)
        options: tuple[str, ...] = ()
        if name in model.SECRET_FIELDS:
            kind = "secret_text" if name in LONG_SECRETS else "secret"
        elif plain is bool:
            kind = "checkbox"
        elif get_origin(plain) is Literal:
            kind, options = "select", tuple(str(value) for value in get_args(plain))
        elif plain is dict or get_origin(plain) is dict:
            kind = "json"
        elif plain in (int, float):
            kind = "number"
        else:
            kind = "text"
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        fields.append(SettingField(name, kind, info.description or "", options, default))
    return fields


def settings_of(
    channel: Channel, form: dict[str, str], editing: bool
) -> tuple[dict[str, Any], list[FieldError]]:
    """The channel's settings from the form: blank secrets left out (kept when editing), a
    blank optional field null, JSON fields parsed."""
    settings: dict[str, Any] = {}
    errors: list[FieldError] = []
    for spec in setting_fields(channel):
        key = f"{channel.value}.{spec.name}"
        raw = form.get(key, "")
        if spec.kind == "checkbox":
            settings[spec.name] = raw == "on"
        elif spec.kind in ("secret", "secret_text"):
            if raw.strip():
                settings[spec.name] = raw.strip() if spec.kind == "secret_text" else raw
        elif not raw.strip():
            if spec.default is None:
                settings[spec.name] = None
            elif not editing:
                continue
        elif spec.kind == "json":
            try:
                settings[spec.name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                errors.append(FieldError(key, f"is not JSON: {exc.msg}", exc.lineno, exc.colno))
        else:
            settings[spec.name] = raw.strip()
    return settings, errors


def shown_values(channel: Channel, public: dict[str, Any]) -> dict[str, str]:
    """The form's values for stored settings (never a secret)."""
    values = {}
    for spec in setting_fields(channel):
        value = public.get(spec.name)
        if spec.kind in ("secret", "secret_text") or value is None:
            continue
        key = f"{channel.value}.{spec.name}"
        if spec.kind == "checkbox":
            values[key] = "on" if value else ""
        elif spec.kind == "json":
            values[key] = json.dumps(value, indent=2) if value else ""
        else:
            values[key] = str(value)
    return values


def _channel(raw: str | None) -> Channel:
    try:
        return Channel(raw or Channel.EMAIL.value)
    except ValueError:
        raise InvalidInput.on("channel", "choose email, sms or push") from None


@router.get("/channels", response_class=HTMLResponse)
async def configuration_list(request: Request, session: Member) -> Response:
    found, next_cursor = await run_in_threadpool(
        lambda: channels.list_page(
            runtime_of(request).db,
            session.workspace_id,
            channel=None,
            category=None,
            cursor=request.query_params.get("cursor") or None,
            limit=100,
        )
    )
    return render(
        request,
        "channels/list.html",
        configurations=[channels.to_public(row) for row in found],
        next_cursor=next_cursor,
    )


def _editor(
    request: Request,
    channel: Channel,
    configuration: dict[str, Any] | None,
    values: dict[str, str],
    status_code: int = 200,
    error: str | None = None,
    errors: list[FieldError] | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    errors = errors or []
    fields = setting_fields(channel)
    placed = {"name", "category", "channel", channel.value}
    placed |= {f"{channel.value}.{spec.name}" for spec in fields}
    # Values typed into secrets are not sent back to the browser.
    secrets = {f"{channel.value}.{spec.name}" for spec in fields if spec.kind.startswith("secret")}
    return render(
        request,
        "channels/edit.html",
        status_code,
        channel=channel.value,
        configuration=configuration,
        fields=fields,
        values={key: value for key, value in values.items() if key not in secrets},
        categories=[category.value for category in Category],
        channels=[option.value for option in Channel],
        error=error,
        errors=unplaced(errors, placed),
        field_errors=field_errors(errors),
        notice=notice,
    )


@router.get("/channels/new", response_class=HTMLResponse)
async def new_configuration(request: Request, session: Member) -> Response:
    try:
        channel = _channel(request.query_params.get("channel"))
    except InvalidInput:
        channel = Channel.EMAIL
    return _editor(request, channel, None, {"category": Category.MARKETING.value})


@router.post("/channels/new", response_class=HTMLResponse)
async def create_configuration(request: Request, session: Admin) -> Response:
    form = await form_fields(request)
    try:
        channel = _channel(form.get("channel"))
    except InvalidInput as exc:
        return _editor(request, Channel.EMAIL, None, form, 422, exc.detail, list(exc.errors))
    settings, errors = settings_of(channel, form, editing=False)
    if errors:
        return _editor(request, channel, None, form, 422, "Some fields are not valid.", errors)
    try:
        body = ChannelConfigurationCreate.model_validate(
            {
                "name": form.get("name", "").strip(),
                "channel": channel.value,
                "category": form.get("category", ""),
                channel.value: settings,
            }
        )
        row = await run_in_threadpool(
            channels.create, runtime_of(request).db, session.workspace_id, body
        )
    except (TidingsError, ValidationError) as exc:
        detail, found = problems(exc)
        return _editor(request, channel, None, form, 422, detail, found)
    return RedirectResponse(f"/channels/{row['id']}?saved=1", status_code=303)


def _not_found(request: Request, exc: NotFound) -> HTMLResponse:
    message = exc.detail
    return render(request, "error.html", 404, title="No such configuration", message=message)


async def _stored(request: Request, workspace_id: str, configuration_id: str) -> Any:
    row = await run_in_threadpool(
        channels.get, runtime_of(request).db, workspace_id, configuration_id
    )
    return channels.to_public(row)


def _stored_values(configuration: dict[str, Any]) -> dict[str, str]:
    channel = Channel(configuration["channel"])
    values = shown_values(channel, configuration[channel.value] or {})
    return {"name": configuration["name"], "category": configuration["category"], **values}


@router.get("/channels/{configuration_id}", response_class=HTMLResponse)
async def configuration_page(
    request: Request, session: Member, configuration_id: str = ConfigurationId
) -> Response:
    try:
        configuration = await _stored(request, session.workspace_id, configuration_id)
    except NotFound as exc:
        return _not_found(request, exc)
    notice = "Saved." if request.query_params.get("saved") else None
    channel = Channel(configuration["channel"])
    return _editor(request, channel, configuration, _stored_values(configuration), notice=notice)


@router.post("/channels/{configuration_id}", response_class=HTMLResponse)
async def update_configuration(
    request: Request, session: Admin, configuration_id: str = ConfigurationId
) -> Response:
    form = await form_fields(request)
    try:
        configuration = await _stored(request, session.workspace_id, configuration_id)
    except NotFound as exc:
        return _not_found(request, exc)
    channel = Channel(configuration["channel"])
    settings, errors = settings_of(channel, form, editing=True)
    if errors:
        return _editor(
            request, channel, configuration, form, 422, "Some fields are not valid.", errors
        )
    try:
        patch = ChannelConfigurationPatch.model_validate(
            {
                "name": form.get("name", "").strip(),
                "category": form.get("category") or None,
                channel.value: settings,
            }
        )
        await run_in_threadpool(
            channels.update, runtime_of(request).db, session.workspace_id, configuration_id, patch
        )
    except (TidingsError, ValidationError) as exc:
        detail, found = problems(exc)
        return _editor(request, channel, configuration, form, 422, detail, found)
    return RedirectResponse(f"/channels/{configuration_id}?saved=1", status_code=303)
