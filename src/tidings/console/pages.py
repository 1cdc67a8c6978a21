"""The console's routes: a start page until the console issue builds the real one."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

START_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tidings</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;
color:#1b1f23}}
code,pre{{background:#f3f4f6;border-radius:4px;padding:.1rem .3rem}}
pre{{padding:.75rem;overflow-x:auto}}
</style></head>
<body>
<h1>Tidings</h1>
<p>API-triggered campaigns over email, SMS and push. The console is coming; the API is here.</p>
<ul>
<li><a href="/docs">API reference</a> (<a href="/openapi.json">OpenAPI</a>)</li>
<li><a href="/healthz">Health</a></li>
</ul>
<p>Authenticate with an API key of your workspace:</p>
<pre>curl -H "Authorization: Bearer $TIDINGS_KEY" {base}/v1/campaigns</pre>
</body></html>
"""


@router.get("/", response_class=HTMLResponse)
def start_page(request: Request) -> HTMLResponse:
    base = escape(request.app.state.runtime.settings.resolved_public_url)
    return HTMLResponse(START_PAGE.format(base=base))
