"""Form helpers the workspace pages share: reading a form, and errors shown beside fields."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import ValidationError

from tidings.errors import FieldError, TidingsError

Problem = TidingsError | ValidationError


async def form_fields(request: Request) -> dict[str, str]:
    """The form's text fields (a repeated name keeps its last value)."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def form_lists(request: Request) -> dict[str, list[str]]:
    """Every text value of each name, for checkbox groups."""
    form = await request.form()
    values: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            values.setdefault(key, []).append(value)
    return values


def _dotted(location: tuple[Any, ...]) -> str:
    # pydantic names a failing model validator's location by the model alone ("body"): keep
    # what names a field.
    return ".".join(str(part) for part in location)


def problems(exc: Problem, prefix: str = "") -> tuple[str, list[FieldError]]:
    """A summary and the field errors of a service's refusal or a schema's validation."""
    if isinstance(exc, ValidationError):
        errors = []
        for error in exc.errors():
            field = _dotted(error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            errors.append(FieldError(f"{prefix}{field}" if field else prefix.rstrip("."), message))
        return "Some fields are not valid.", errors
    return exc.detail, list(exc.errors)


def field_errors(errors: list[FieldError]) -> dict[str, str]:
    """The first message for each field, with the line and column where there are some."""
    shown: dict[str, str] = {}
    for error in errors:
        # A rule's errors say where already ("… at line 2, column 19").
        said = "column" in error.message
        where = f" (line {error.line}, column {error.column})" if error.line and not said else ""
        shown.setdefault(error.field, error.message + where)
    return shown


def unplaced(errors: list[FieldError], placed: set[str]) -> list[FieldError]:
    """Errors of fields the form has no input for: listed in the page's alert instead."""
    return [error for error in errors if error.field not in placed]
