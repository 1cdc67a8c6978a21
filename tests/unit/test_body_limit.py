"""The body-size limit: one for every route, a larger one for the routes that stream files."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tidings.web import BodySizeLimit, install_error_handlers


async def echo_size(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


def client() -> TestClient:
    app = Starlette(routes=[Route(path, echo_size, methods=["POST"]) for path in ("/a", "/big")])
    install_error_handlers(app)
    limited = BodySizeLimit(app, max_bytes=10, overrides={("POST", "/big"): 100})
    return TestClient(limited)


@pytest.mark.parametrize(
    ("path", "size", "status"),
    [("/a", 10, 200), ("/a", 11, 413), ("/big", 100, 200), ("/big", 101, 413)],
)
def test_each_route_gets_its_limit(path: str, size: int, status: int):
    declared = client().post(path, content=b"x" * size)
    assert declared.status_code == status

    def chunks():  # no Content-Length: the bytes are counted as they come
        yield b"x" * (size - 1)
        yield b"x"

    streamed = client().post(path, content=chunks())
    assert streamed.status_code == status
    if status == 413:
        assert streamed.json()["errors"][0]["field"] == "body"
