"""The dev mailbox: the console page listing what the dev sink kept, for `make run`.

Served only while the in-process worker has a dev sink, which the app creates only when it
listens on a loopback host (TIDINGS_HOST) with TIDINGS_DEV_MAILBOX on; elsewhere it is a 404.
Behind the console's sign-in (any role): the sink keeps the messages of every workspace, and a
member sees only those of the workspace signed in to (the sink does not tag them: their ids
are looked up in `messages`, one query for the page). These messages carry whatever the
campaigns rendered. The page makes no request of its own beyond itself; an email's HTML is
shown in a sandboxed frame (no scripts, no forms, no navigation) under a policy that loads no
remote image.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from tidings.channels.dev import DevMessage, DevSinkAdapter
from tidings.channels.email.mime import html_to_text
from tidings.console.auth import Member
from tidings.db import Database
from tidings.errors import NotFound
from tidings.executions.models import messages
from tidings.web import runtime_of

router = APIRouter(prefix="/dev/mailbox", include_in_schema=False)

# No script, no remote resource: inline styles for the page, data: images for the emails.
POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Tidings dev mailbox</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1b1f23}}
table{{border-collapse:collapse;width:100%}}
th,td{{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e5e7eb;
vertical-align:top}}
code,pre{{background:#f3f4f6;border-radius:4px;padding:.1rem .3rem}}
pre{{padding:.75rem;overflow-x:auto;white-space:pre-wrap}}
iframe{{width:100%;height:32rem;border:1px solid #e5e7eb;border-radius:4px}}
.muted{{color:#6b7280}}
</style></head>
<body>
{body}
</body></html>
"""


def _sink(request: Request) -> DevSinkAdapter:
    sink: DevSinkAdapter | None = getattr(request.app.state, "dev_sink", None)
    if sink is None:
        raise NotFound(
            "the dev mailbox is served by `tidings serve` on a loopback host only "
            "(TIDINGS_HOST=127.0.0.1, TIDINGS_DEV_MAILBOX=true)"
        )
    return sink


Sink = Annotated[DevSinkAdapter, Depends(_sink)]


def _of_workspace(
    db: Database, workspace_id: str, entries: Sequence[DevMessage]
) -> list[DevMessage]:
    """The entries whose message belongs to the workspace, in their order."""
    ids = sorted({entry.message.message_id for entry in entries})
    if not ids:
        return []
    with db.read() as conn:
        mine = set(
            conn.scalars(
                sa.select(messages.c.id).where(
                    messages.c.workspace_id == workspace_id, messages.c.id.in_(ids)
                )
            )
        )
    return [entry for entry in entries if entry.message.message_id in mine]


def _page(title: str, body: str) -> HTMLResponse:
    response = HTMLResponse(PAGE.format(title=escape(title), body=body))
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["Cache-Control"] = "no-store"
    return response


def _summary(entry: DevMessage) -> str:
    content = entry.message.content
    text = content.get("subject") or content.get("title") or content.get("body") or ""
    return str(text)


# The sink comes first: without one the mailbox is a 404, signed in or not.
@router.get("", response_class=HTMLResponse)
async def mailbox(request: Request, sink: Sink, session: Member) -> HTMLResponse:
    entries = await run_in_threadpool(
        _of_workspace, runtime_of(request).db, session.workspace_id, sink.newest_first()
    )
    rows = "".join(
        "<tr>"
        f"<td class=muted>{escape(entry.received_at.strftime('%Y-%m-%d %H:%M:%S'))}</td>"
        f"<td>{escape(entry.channel)}</td>"
        f"<td>{escape(entry.message.to)}</td>"
        f'<td><a href="/dev/mailbox/{escape(entry.message.message_id)}">'
        f"{escape(_summary(entry)) or '(empty)'}</a></td>"
        "</tr>"
        for entry in entries
    )
    table = (
        "<table><thead><tr><th>Received (UTC)</th><th>Channel</th><th>To</th>"
        f"<th>Subject or body</th></tr></thead><tbody>{rows}</tbody></table>"
        if entries
        else "<p>No message yet. Trigger a campaign whose configuration has no provider "
        "(an email configuration with no SMTP relay, or the <code>dev</code> provider).</p>"
    )
    body = (
        "<h1>Dev mailbox</h1>"
        f"<p class=muted>The last {len(entries)} messages the dev sink kept for "
        f"{escape(session.workspace_name)}, newest first; kept in memory, gone when the "
        "server stops. <a href=/campaigns>Console</a></p>" + table
    )
    return _page("Dev mailbox", body)


def _field(name: str, value: Any) -> str:
    return f"<tr><th>{escape(name)}</th><td>{escape(str(value))}</td></tr>"


@router.get("/{message_id}", response_class=HTMLResponse)
async def message(
    request: Request, sink: Sink, session: Member, message_id: str = Path(max_length=64)
) -> HTMLResponse:
    found = sink.find(message_id)
    entries = [] if found is None else [found]
    mine = await run_in_threadpool(
        _of_workspace, runtime_of(request).db, session.workspace_id, entries
    )
    if not mine:
        raise NotFound("the dev mailbox has no such message (it keeps the last ones only)")
    entry = mine[0]
    outbound, content = entry.message, entry.message.content
    settings = outbound.settings
    fields = [_field("Channel", entry.channel), _field("To", outbound.to)]
    if entry.channel == "email":
        sender = settings.get("from_address", "")
        if settings.get("from_name"):
            sender = f"{settings['from_name']} <{sender}>"
        fields += [_field("From", sender), _field("Subject", content.get("subject") or "")]
        fields += [_field(name, value) for name, value in outbound.headers.items()]
    fields.append(_field("Received (UTC)", entry.received_at.strftime("%Y-%m-%d %H:%M:%S")))
    parts = [f"<table>{''.join(fields)}</table>"]
    if entry.channel == "email":
        html = str(content.get("html") or "")
        text = str(content.get("text") or "") or (html_to_text(html) if html else "")
        if html:
            # srcdoc with an empty sandbox: the email's HTML runs no script and reaches
            # nothing of this origin.
            parts.append(
                f'<h2>HTML</h2><iframe sandbox="" srcdoc="{escape(html, quote=True)}" '
                'title="HTML part"></iframe>'
            )
        parts.append(f"<h2>Text</h2><pre>{escape(text)}</pre>")
    else:
        shown = {key: value for key, value in content.items() if value is not None}
        parts += [
            f"<h2>{escape(key)}</h2><pre>{escape(str(value))}</pre>" for key, value in shown.items()
        ]
    body = (
        f"<p><a href=/dev/mailbox>← Dev mailbox</a></p><h1>{escape(_summary(entry))}</h1>"
        + "".join(parts)
    )
    return _page(_summary(entry) or "Message", body)
