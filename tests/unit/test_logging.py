"""JSON logs: request ids on every line, no email address, phone number or context in any."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from fastapi import Request
from fastapi.testclient import TestClient

from tidings.operations.logging import configure_logging, mask
from tidings.operations.requests import ObservedApp, RequestLog


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The process's logging sent to a buffer through the pipeline, restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_addresses_phone_numbers_and_personal_fields_are_masked(log_stream: io.StringIO):
    stdlib = logging.getLogger("tidings.test")
    stdlib.warning(
        "could not send to %s (%s)",
        "ada.lovelace+news@example.com",
        "+14155550123",
        extra={"context": {"order": "A-1"}, "execution_id": "e-1"},
    )
    structlog.get_logger("tidings.test").info(
        "triggered",
        path="/v1/profiles/email/bob%40example.org",
        profile={"firstName": "Bob"},
        detail={"to": "carol@example.net", "phone": "+33612345678", "count": 2},
    )
    found = lines(log_stream)
    text = log_stream.getvalue()
    for secret in (
        "ada.lovelace",
        "example.com",
        "+14155550123",
        "A-1",
        "bob%40",
        "Bob",
        "carol@",
        "+33612345678",
    ):
        assert secret not in text
    assert found[0]["event"] == "could not send to [email] ([phone])"
    assert found[0]["context"] == "[redacted]"
    assert found[0]["execution_id"] == "e-1"
    assert found[0]["level"] == "warning"
    assert found[0]["logger"] == "tidings.test"
    assert found[1]["path"] == "/v1/profiles/email/[email]"
    assert found[1]["detail"] == {"to": "[redacted]", "phone": "[redacted]", "count": 2}


def test_masking_keeps_ordinary_text():
    assert (
        mask("batch of 200 sent in 1.5 s, id 0193-abcd")
        == "batch of 200 sent in 1.5 s, id 0193-abcd"
    )
    assert mask("tel:+4915123456789;") == "tel:[phone];"


def observed_app(request_log: RequestLog) -> ObservedApp:
    app = ObservedApp()
    app.request_log = request_log

    @app.get("/hello")
    async def hello(request: Request) -> dict[str, str]:
        logging.getLogger("tidings.test").info("inside %s", "a request")
        return {"ok": "yes"}

    @app.get("/boom/{address}")
    async def boom(address: str) -> dict[str, str]:
        raise RuntimeError("broken")

    return app


def test_each_request_has_an_id_in_its_lines_and_its_answer(log_stream: io.StringIO):
    with TestClient(observed_app(RequestLog()), raise_server_exceptions=False) as client:
        given = client.get("/hello", headers={"X-Request-Id": "abc-123"})
        made = client.get("/hello")
        refused = client.get("/hello", headers={"X-Request-Id": "<script>"})
        failed = client.get("/boom/ada@example.com")
    assert given.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 24  # 12 hex digits of process, 12 of sequence
    assert refused.headers["x-request-id"] not in ("<script>", made.headers["x-request-id"])
    found = lines(log_stream)
    inside = [line for line in found if line["event"] == "inside a request"]
    assert [line["request_id"] for line in inside] == [
        "abc-123",
        made.headers["x-request-id"],
        refused.headers["x-request-id"],
    ]
    # Only the failed request has a request line (no access log by default), with its id.
    requests = [line for line in found if line["event"] == "request"]
    assert len(requests) == 1
    assert requests[0]["status"] == 500
    assert requests[0]["path"] == "/boom/[email]"
    assert requests[0]["request_id"] == failed.headers["x-request-id"]
    assert all("ada@" not in json.dumps(line) for line in found)


def test_the_access_log_writes_every_request_when_asked(log_stream: io.StringIO):
    with TestClient(observed_app(RequestLog(every_request=True))) as client:
        client.get("/hello")
        client.get("/hello")
    requests = [line for line in lines(log_stream) if line["event"] == "request"]
    assert [(line["method"], line["status"]) for line in requests] == [("GET", 200)] * 2
    assert all(line["duration_ms"] >= 0 for line in requests)
