"""Console pages of business rule sets: frequency caps, quiet hours, the campaigns using one.

Quiet-hour windows are written one a line, `mon,tue,wed 21:00-08:00` (or `every day
22:00-07:00`), and dates one a line: plain text a keyboard edits quickly, turned into the
API's shape here and checked by the service's schemas, whose errors come back by line.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tidings.campaigns.models import campaigns
from tidings.console.auth import Editor, Member
from tidings.console.forms import field_errors, form_lists, problems, unplaced
from tidings.console.profiles import campaign_names
from tidings.console.templating import render
from tidings.db import Database
from tidings.errors import FieldError, NotFound, TidingsError
from tidings.rules import service as rule_sets
from tidings.rules.schemas import (
    ALL_CHANNELS,
    RECIPIENT_ZONE,
    Period,
    QuietAction,
    RuleSetCreate,
    RuleSetPatch,
    Weekday,
)
from tidings.web import runtime_of

router = APIRouter(include_in_schema=False)
RuleSetId = Path(min_length=1, max_length=64)
# Blank cap rows the form offers beyond the set's own.
SPARE_CAPS = 2
WINDOW = re.compile(
    r"^\s*(?P<days>.*?)\s*(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)
EVERY_DAY = ("every day", "daily", "all", "")


def campaigns_using(db: Database, workspace_id: str) -> dict[str, list[tuple[str, str]]]:
    """For each rule set id, the campaigns (id, name) that name it."""
    with db.read() as conn:
        rows = conn.execute(
            sa.select(campaigns.c.id, campaigns.c.rule_set_ids).where(
                campaigns.c.workspace_id == workspace_id, campaigns.c.rule_set_ids.is_not(None)
            )
        ).all()
        names = campaign_names(conn, {campaign_id for campaign_id, ids in rows if ids})
    using: dict[str, list[tuple[str, str]]] = {}
    for campaign_id, ids in rows:
        for rule_set_id in ids or ():
            using.setdefault(rule_set_id, []).append((campaign_id, names.get(campaign_id, "")))
    return using


@router.get("/rules", response_class=HTMLResponse)
async def rule_set_list(request: Request, session: Member) -> Response:
    db = runtime_of(request).db
    found = await run_in_threadpool(rule_sets.list_all, db, session.workspace_id)
    using = await run_in_threadpool(campaigns_using, db, session.workspace_id)
    return render(request, "rules/list.html", rule_sets=found, using=using)


# ---------------------------------------------------------------- the form


def _windows_text(quiet_hours: dict[str, Any] | None) -> str:
    lines = []
    for window in (quiet_hours or {}).get("windows", []):
        days = window["days"]
        named = "every day" if len(days) == 7 else ",".join(days)
        lines.append(f"{named} {str(window['start'])[:5]}-{str(window['end'])[:5]}")
    return "\n".join(lines)


def form_values(rule_set: dict[str, Any] | None) -> dict[str, Any]:
    """What the form shows for a stored set (or a new one)."""
    if rule_set is None:
        return {
            "name": "",
            "description": "",
            "default": False,
            "caps": [],
            "quiet": False,
            "timezone": RECIPIENT_ZONE,
            "action": QuietAction.QUEUE.value,
            "quiet_channels": [channel.value for channel in ALL_CHANNELS],
            "windows": "",
            "dates": "",
        }
    quiet = rule_set["quiet_hours"]
    return {
        "name": rule_set["name"],
        "description": rule_set["description"],
        "default": rule_set["default"],
        "caps": [
            {
                "channels": cap["channels"],
                "limit": str(cap["limit"]),
                "period": cap["period"],
                "every": str(cap.get("every", 1)),
            }
            for cap in rule_set["frequency_caps"]
        ],
        "quiet": quiet is not None,
        "timezone": (quiet or {}).get("timezone", RECIPIENT_ZONE),
        "action": (quiet or {}).get("action", QuietAction.QUEUE.value),
        "quiet_channels": (quiet or {}).get(
            "channels", [channel.value for channel in ALL_CHANNELS]
        ),
        "windows": _windows_text(quiet),
        "dates": "\n".join(str(day) for day in (quiet or {}).get("dates", [])),
    }


def _first(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[-1]


def values_of(form: dict[str, list[str]]) -> dict[str, Any]:
    """The form as sent, caps with no limit left out (a blank row)."""
    caps = []
    index = 0
    while f"caps.{index}.limit" in form:
        limit = _first(form, f"caps.{index}.limit").strip()
        if limit:
            caps.append(
                {
                    "channels": form.get(f"caps.{index}.channels", []),
                    "limit": limit,
                    "period": _first(form, f"caps.{index}.period"),
                    "every": _first(form, f"caps.{index}.every").strip() or "1",
                }
            )
        index += 1
    return {
        "name": _first(form, "name").strip(),
        "description": _first(form, "description"),
        "default": _first(form, "default") == "on",
        "caps": caps,
        "quiet": _first(form, "quiet") == "on",
        "timezone": _first(form, "timezone").strip() or RECIPIENT_ZONE,
        "action": _first(form, "action"),
        "quiet_channels": form.get("quiet_channels", []),
        "windows": _first(form, "windows"),
        "dates": _first(form, "dates"),
    }


def _parse_windows(text: str) -> tuple[list[dict[str, Any]], list[FieldError]]:
    windows, errors = [], []
    weekdays = [day.value for day in Weekday]
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = WINDOW.match(line)
        if match is None:
            errors.append(
                FieldError("windows", "write days then a time range: mon,tue 21:00-08:00", number)
            )
            continue
        named = match["days"].lower().strip()
        days = weekdays if named in EVERY_DAY else [d.strip() for d in named.split(",")]
        wrong = [day for day in days if day not in weekdays]
        if wrong:
            message = f"'{wrong[0]}' is not a day; use mon, tue, wed, thu, fri, sat, sun"
            errors.append(FieldError("windows", message, number))
            continue
        windows.append({"days": days, "start": match["start"], "end": match["end"]})
    return windows, errors


def body_of(values: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """The API body for the form's values, and the errors of its free-text fields."""
    windows, errors = _parse_windows(values["windows"])
    body: dict[str, Any] = {
        "name": values["name"],
        "description": values["description"],
        "default": values["default"],
        "frequency_caps": [
            {
                "channels": cap["channels"],
                "limit": cap["limit"],
                "period": cap["period"],
                "every": cap["every"],
            }
            for cap in values["caps"]
        ],
        "quiet_hours": None,
    }
    if values["quiet"]:
        body["quiet_hours"] = {
            "timezone": values["timezone"],
            "action": values["action"] or QuietAction.QUEUE.value,
            "channels": values["quiet_channels"],
            "windows": windows,
            "dates": [line.strip() for line in values["dates"].splitlines() if line.strip()],
        }
    return body, errors


def _placed(errors: list[FieldError]) -> list[FieldError]:
    """Schema errors renamed after the form's fields: caps.N.x, windows (with its line)."""
    placed = []
    for error in errors:
        parts = error.field.split(".")
        if parts[0] == "frequency_caps" and len(parts) >= 2:
            field = ".".join(["caps", *parts[1:3]]) if len(parts) >= 3 else f"caps.{parts[1]}"
            placed.append(FieldError(field, error.message))
        elif parts[0] == "quiet_hours" and len(parts) >= 2 and parts[1] in ("windows", "dates"):
            line = int(parts[2]) + 1 if len(parts) >= 3 and parts[2].isdigit() else None
            placed.append(FieldError(parts[1], error.message, line))
        elif parts[0] == "quiet_hours" and len(parts) >= 2:
            name = {"channels": "quiet_channels"}.get(parts[1], parts[1])
            placed.append(FieldError(name, error.message))
        else:
            placed.append(FieldError(parts[0] if parts[0] else "quiet_hours", error.message))
    return placed


def _editor(
    request: Request,
    rule_set: dict[str, Any] | None,
    values: dict[str, Any],
    using: list[tuple[str, str]],
    status_code: int = 200,
    error: str | None = None,
    errors: list[FieldError] | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    errors = errors or []
    messages = field_errors(errors)
    # A field's several line errors all show beside it.
    for name in ("windows", "dates"):
        lines = [f"line {e.line}: {e.message}" for e in errors if e.field == name and e.line]
        if lines:
            messages[name] = "; ".join(lines)
    caps = list(values["caps"])
    caps += [{"channels": [], "limit": "", "period": "day", "every": "1"}] * SPARE_CAPS
    placed = {"name", "description", "default", "timezone", "action", "quiet_channels"}
    placed |= {"windows", "dates", "quiet_hours"}
    placed |= {e.field for e in errors if e.field.startswith("caps.")}
    return render(
        request,
        "rules/edit.html",
        status_code,
        rule_set=rule_set,
        values=values,
        caps=caps,
        using=using,
        channels=[channel.value for channel in ALL_CHANNELS],
        periods=[period.value for period in Period],
        actions=[action.value for action in QuietAction],
        error=error,
        errors=unplaced(errors, placed),
        field_errors=messages,
        notice=notice,
    )


@router.get("/rules/new", response_class=HTMLResponse)
async def new_rule_set(request: Request, session: Member) -> Response:
    return _editor(request, None, form_values(None), [])


@router.post("/rules/new", response_class=HTMLResponse)
async def create_rule_set(request: Request, session: Editor) -> Response:
    values = values_of(await form_lists(request))
    body, errors = body_of(values)
    try:
        if errors:
            return _editor(request, None, values, [], 422, "Some lines are not valid.", errors)
        created = await run_in_threadpool(
            rule_sets.create,
            runtime_of(request).db,
            session.workspace_id,
            RuleSetCreate.model_validate(body),
        )
    except (TidingsError, ValidationError) as exc:
        detail, found = problems(exc)
        return _editor(request, None, values, [], 422, detail, _placed(found))
    return RedirectResponse(f"/rules/{created['id']}?saved=1", status_code=303)


async def _stored(request: Request, workspace_id: str, rule_set_id: str) -> Any:
    db = runtime_of(request).db
    rule_set = await run_in_threadpool(rule_sets.get, db, workspace_id, rule_set_id)
    using = await run_in_threadpool(campaigns_using, db, workspace_id)
    return rule_set, using.get(rule_set_id, [])


def _not_found(request: Request, exc: NotFound) -> HTMLResponse:
    return render(request, "error.html", 404, title="No such rule set", message=exc.detail)


@router.get("/rules/{rule_set_id}", response_class=HTMLResponse)
async def rule_set_page(
    request: Request, session: Member, rule_set_id: str = RuleSetId
) -> Response:
    try:
        rule_set, using = await _stored(request, session.workspace_id, rule_set_id)
    except NotFound as exc:
        return _not_found(request, exc)
    notice = "Saved." if request.query_params.get("saved") else None
    return _editor(request, rule_set, form_values(rule_set), using, notice=notice)


@router.post("/rules/{rule_set_id}", response_class=HTMLResponse)
async def update_rule_set(
    request: Request, session: Editor, rule_set_id: str = RuleSetId
) -> Response:
    values = values_of(await form_lists(request))
    try:
        rule_set, using = await _stored(request, session.workspace_id, rule_set_id)
    except NotFound as exc:
        return _not_found(request, exc)
    body, errors = body_of(values)
    try:
        if errors:
            return _editor(
                request, rule_set, values, using, 422, "Some lines are not valid.", errors
            )
        await run_in_threadpool(
            rule_sets.update,
            runtime_of(request).db,
            session.workspace_id,
            rule_set_id,
            RuleSetPatch.model_validate(body),
        )
    except (TidingsError, ValidationError) as exc:
        detail, found = problems(exc)
        return _editor(request, rule_set, values, using, 422, detail, _placed(found))
    return RedirectResponse(f"/rules/{rule_set_id}?saved=1", status_code=303)


@router.post("/rules/{rule_set_id}/delete", response_class=HTMLResponse)
async def delete_rule_set(
    request: Request, session: Editor, rule_set_id: str = RuleSetId
) -> Response:
    try:
        rule_set, using = await _stored(request, session.workspace_id, rule_set_id)
        await run_in_threadpool(
            rule_sets.delete, runtime_of(request).db, session.workspace_id, rule_set_id
        )
    except NotFound as exc:
        return _not_found(request, exc)
    except TidingsError as exc:
        return _editor(request, rule_set, form_values(rule_set), using, 409, exc.detail)
    return RedirectResponse("/rules", status_code=303)
