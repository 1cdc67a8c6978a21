"""Checks on free-form JSON (attributes, context): what every backend can store and return."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from tidings.errors import FieldError

# Contexts (the call's and each recipient's) nest at most this many objects and lists deep.
# Templates address data by dotted paths a person writes; nothing a real integration sends
# needs more, and a bound of our own gives a clear error far below the parsers' limits.
MAX_CONTEXT_DEPTH = 32


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


def nesting_depth(value: Any, cap: int) -> int:
    """How deeply objects and lists nest in `value` (a scalar is 0, `{}` is 1), counted to `cap`
    at most: a document nested hundreds of levels deep, which the JSON parser takes, ends the
    walk there instead of in a RecursionError."""
    # Level by level, without recursion: a trigger's contexts are walked on every call, and
    # this takes a third of the time of a recursive walk.
    depth = 0
    level = [value]
    while depth < cap:
        children: list[Any] = []
        nested = False
        for item in level:
            if isinstance(item, Mapping):
                children.extend(item.values())
                nested = True
            elif isinstance(item, list):
                children.extend(item)
                nested = True
        if not nested:
            break
        depth += 1
        level = children
    return depth


def text_nests_within(json_text: bytes, depth: int) -> bool:
    """True when the text alone shows nothing in it nests deeper than `depth`: it holds no
    more opening brackets than that (quoted ones included, so a False only means the parsed
    documents must be walked)."""
    return json_text.count(b"{") + json_text.count(b"[") <= depth
