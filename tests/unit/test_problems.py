"""RFC 9457 problem answers: standard members first, extension members after them and never
in their place."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tidings.errors import FieldError
from tidings.web import PROBLEM_JSON, problem_response


def body_of(**kwargs: Any) -> dict[str, Any]:
    response = problem_response(**kwargs)
    assert response.media_type == PROBLEM_JSON
    parsed: dict[str, Any] = json.loads(bytes(response.body))
    return parsed


def test_extension_members_follow_the_standard_ones():
    body = body_of(
        status=422,
        title="Invalid input",
        detail="the header row is invalid",
        errors=[FieldError("file", "has no header row")],
        extensions={"import_id": "01a2"},
    )
    assert list(body) == ["type", "title", "status", "detail", "errors", "import_id"]
    assert body["import_id"] == "01a2"
    assert body["errors"] == [{"field": "file", "message": "has no header row"}]


@pytest.mark.parametrize("name", ["type", "title", "status", "detail", "instance", "errors"])
def test_an_extension_member_never_takes_a_standard_members_name(name: str):
    # `detail` and `instance` are left out when empty: an extension must not fill them either.
    body = body_of(
        status=409, title="Conflict", detail=None, extensions={name: "spoofed", "kept": "yes"}
    )
    assert body.get(name) != "spoofed"
    assert body["kept"] == "yes"
    assert body["title"] == "Conflict" and body["status"] == 409
