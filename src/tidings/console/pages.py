"""The console's router: sign-in, campaigns, the workspace's other pages, static files."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Path
from fastapi.responses import FileResponse

from tidings.console import (
    audiences,
    auth,
    campaigns,
    channels,
    profiles,
    rules,
    suppressions,
    webhooks,
)
from tidings.console import workspace as workspace_pages
from tidings.console.templating import STATIC_DIR
from tidings.errors import NotFound

router = APIRouter(include_in_schema=False)
# Every console router; tests walk them to check each changing route's role check.
SECTIONS = (
    auth.router,
    campaigns.router,
    workspace_pages.router,
    profiles.router,
    audiences.router,
    rules.router,
    suppressions.router,
    channels.router,
    webhooks.router,
)
for section in SECTIONS:
    router.include_router(section)

STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


@router.get("/static/{name}")
def static_file(name: str = Path(pattern=r"^[a-z0-9_-]+\.(css|js|svg)$")) -> FileResponse:
    """The console's own styles and scripts: nothing is fetched from another origin."""
    path = STATIC_DIR / name
    if not path.is_file():
        raise NotFound("no such static file")
    response = FileResponse(path, media_type=STATIC_TYPES[path.suffix])
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def install(app: FastAPI) -> None:
    """What the console needs beyond its routes: its redirect and refusal handlers."""
    auth.install(app)
