"""Checks on free-form JSON (attributes, context): what every backend can store and return."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from tidings.errors import FieldError


def unstorable(value: Any, path: str) -> FieldError | None:
    """The first value PostgreSQL would refuse or JSON could not carry back, if any.

    NUL characters are refused by PostgreSQL's text and JSONB; infinities and NaN (which
    Python's JSON parser reads from 1e400 or NaN) are not JSON, so no response could hold them.
    """
    if isinstance(value, str):
        return FieldError(path, "contains a NUL character") if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else FieldError(path, "is not a finite number")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if "\x00" in str(key):
                return FieldError(path, "has a key with a NUL character")
            found = unstorable(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = unstorable(item, f"{path}.{index}")
            if found is not None:
                return found
    return None


def plainly_storable(json_text: bytes) -> bool:
    """True when every value parsed from `json_text` is storable, judged from the text alone:
    no NUL, escaped or not, and a parse by orjson, which refuses NaN, Infinity and numbers that
    overflow to an infinity. A False only means the walk above must decide."""
    if b"\\u0000" in json_text or b"\x00" in json_text:
        return False
    try:
        orjson.loads(json_text)
    except orjson.JSONDecodeError:
        return False
    return True
