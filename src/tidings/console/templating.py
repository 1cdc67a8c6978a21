"""Renders the console's Jinja2 templates into responses that load nothing from elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

environment = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

# Only this origin's scripts, styles and images. Inline styles are allowed for the email
# previews (sandboxed frames inherit the page's policy, and emails carry inline CSS).
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; connect-src 'self'"
)


def secure_headers(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    session = getattr(request.state, "console_session", None)
    body = environment.get_template(name).render(
        request=request, session=session, path=request.url.path, **context
    )
    return secure_headers(HTMLResponse(body, status_code=status_code))
