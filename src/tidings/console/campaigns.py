"""Console pages of campaigns: the list, the seven steps, live preview, the campaign page."""

from __future__ import annotations

import importlib
import importlib.util
import json
import secrets
import shlex
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tidings.audiences import service as audiences
from tidings.campaigns import service as campaigns
from tidings.campaigns.schemas import CampaignCreate, CampaignPatch, PreviewRequest
from tidings.campaigns.state import CampaignStatus
from tidings.channels import service as channels
from tidings.channels.sms.encoding import measure
from tidings.clock import utcnow
from tidings.console import profiles as console_profiles
from tidings.console.auth import Editor, Member
from tidings.console.charts import bar_chart
from tidings.console.templating import render
from tidings.content.schemas import parse_content
from tidings.content.service import check_content
from tidings.errors import FieldError, InvalidInput, TidingsError
from tidings.executions import service as executions
from tidings.profiles.schemas import Identity
from tidings.proofs import service as proofs
from tidings.proofs.schemas import ProofCreate
from tidings.runtime import Runtime
from tidings.users.schemas import ConsoleSession
from tidings.vocabulary import Category, Channel
from tidings.web import runtime_of

router = APIRouter(include_in_schema=False)
CampaignId = Path(min_length=1, max_length=64)
STEPS = (
    "Properties",
    "Action",
    "Content",
    "Audience",
    "Schedule",
    "Review and activate",
    "Trigger",
)
CATEGORY_HELP = {
    "transactional": "Confirmations, alerts, password resets: sent to whoever the call names, "
    "not subject to marketing consent.",
    "marketing": "Promotions and newsletters: need opt-in, carry an unsubscribe link and obey "
    "business rules.",
}
CONTENT_FIELDS = {
    "email": (("subject", "Subject"), ("html", "HTML body"), ("text", "Text body (optional)")),
    "sms": (("body", "Message"),),
    "push": (("title", "Title"), ("body", "Body"), ("deeplink", "Deep link (optional)")),
}
LATEST_MESSAGES = 20


# ---------------------------------------------------------------- helpers


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _field_errors(errors: list[FieldError]) -> dict[str, str]:
    shown: dict[str, str] = {}
    for error in errors:
        where = f" (line {error.line}, column {error.column})" if error.line else ""
        shown.setdefault(error.field, error.message + where)
    return shown


def _problems(exc: TidingsError | ValidationError) -> tuple[str, list[FieldError]]:
    if isinstance(exc, ValidationError):
        errors = [
            FieldError(".".join(str(part) for part in error["loc"]), error["msg"])
            for error in exc.errors()
        ]
        return "Some fields are not valid.", errors
    return exc.detail, list(exc.errors)


def _campaign(runtime: Runtime, session: ConsoleSession, campaign_id: str) -> dict[str, Any]:
    return campaigns.get(runtime.db, session.workspace_id, campaign_id)


def _report_service() -> Any:
    """tidings.reports.service when this build has it (the reports issue), else None."""
    if importlib.util.find_spec("tidings.reports.service") is None:
        return None
    module = importlib.import_module("tidings.reports.service")
    return module if hasattr(module, "campaign_report") else None


# ---------------------------------------------------------------- list


@router.get("/campaigns", response_class=HTMLResponse)
async def campaign_list(request: Request, session: Member) -> Response:
    runtime = runtime_of(request)
    query = request.query_params
    try:
        filters = campaigns.CampaignFilters(
            status=CampaignStatus(query["status"]) if query.get("status") else None,
            category=Category(query["category"]) if query.get("category") else None,
            channel=Channel(query["channel"]) if query.get("channel") else None,
            tag=query.get("tag") or None,
            search=(query.get("q") or "")[:200] or None,
        )
    except ValueError:
        filters = campaigns.CampaignFilters()
    views, next_cursor = await run_in_threadpool(
        campaigns.list_page,
        runtime.db,
        session.workspace_id,
        filters,
        query.get("cursor") or None,
        50,
    )
    return render(
        request,
        "campaigns/list.html",
        campaigns=views,
        next_cursor=next_cursor,
        filters=query,
        statuses=[status.value for status in CampaignStatus],
    )


# ---------------------------------------------------------------- steps


def _step_context(
    runtime: Runtime, session: ConsoleSession, campaign: dict[str, Any], step: int
) -> dict[str, Any]:
    context: dict[str, Any] = {"campaign": campaign, "step": step, "steps": STEPS}
    if step == 2:
        configurations, _ = channels.list_page(
            runtime.db,
            session.workspace_id,
            channel=None,
            category=campaign["category"],
            cursor=None,
            limit=200,
        )
        context["configurations"] = configurations
    elif step == 3:
        context["fields"] = CONTENT_FIELDS[campaign["channel"]]
        context["content"] = campaign["content"] or {}
        # The sample data starts with every variable the saved content reads.
        result, _ = campaigns.review(
            runtime.db, runtime.templates, session.workspace_id, campaign["id"]
        )
        context["sample_profile"] = json.dumps(_nested(result.profile_paths, "profile"))
        context["sample_context"] = json.dumps(_nested(result.context_paths, "context"))
        # The preview's stored profile is picked from these (and more as one types).
        context["profile_suggestions"] = console_profiles.suggestions(
            runtime.db, session.workspace_id, ""
        )
    elif step == 4 and campaign["category"] == "marketing":
        found, _ = audiences.list_page(runtime.db, session.workspace_id, cursor=None, limit=200)
        for audience in found:
            if audience["kind"] == "rule" and audience.get("rule"):
                try:
                    audience["estimate"] = audiences.estimate(
                        runtime.db, session.workspace_id, audience["rule"]
                    )
                except InvalidInput:
                    audience["estimate"] = None
        context["audiences"] = found
    elif step == 6:
        result, number = campaigns.review(
            runtime.db,
            runtime.templates,
            session.workspace_id,
            campaign["id"],
            runtime.settings.smtp_url,
        )
        context["review"] = result
        context["review_version"] = number
    return context


def _step_page(
    request: Request,
    session: ConsoleSession,
    campaign: dict[str, Any],
    step: int,
    status_code: int = 200,
    error: str | None = None,
    errors: list[FieldError] | None = None,
) -> HTMLResponse:
    runtime = runtime_of(request)
    return render(
        request,
        "campaigns/step.html",
        status_code,
        error=error,
        errors=errors or [],
        field_errors=_field_errors(errors or []),
        category_help=CATEGORY_HELP,
        **_step_context(runtime, session, campaign, step),
    )


@router.get("/campaigns/new", response_class=HTMLResponse)
async def new_campaign(request: Request, session: Member) -> Response:
    return render(
        request,
        "campaigns/step.html",
        campaign=None,
        step=1,
        steps=STEPS,
        errors=[],
        field_errors={},
        category_help=CATEGORY_HELP,
    )


def _tags(raw: str) -> list[str]:
    return [tag.strip() for tag in raw.split(",") if tag.strip()]


@router.post("/campaigns/new", response_class=HTMLResponse)
async def create_campaign(request: Request, session: Editor) -> Response:
    form = await _form(request)
    runtime = runtime_of(request)
    try:
        body = CampaignCreate(
            name=form.get("name", ""),
            description=form.get("description", ""),
            tags=_tags(form.get("tags", "")),
            category=form.get("category", ""),
            channel=form.get("channel") or "email",
        )
        view = await run_in_threadpool(campaigns.create, runtime.db, session.workspace_id, body)
    except (TidingsError, ValidationError) as exc:
        detail, errors = _problems(exc)
        return render(
            request,
            "campaigns/step.html",
            422,
            campaign=None,
            step=1,
            steps=STEPS,
            error=detail,
            errors=errors,
            field_errors=_field_errors(errors),
            category_help=CATEGORY_HELP,
            values=form,
        )
    return RedirectResponse(f"/campaigns/{view['id']}/steps/2", status_code=303)


def _step_patch(step: int, campaign: dict[str, Any], form: dict[str, str]) -> CampaignPatch:
    if step == 1:
        return CampaignPatch(
            name=form.get("name", ""),
            description=form.get("description", ""),
            tags=_tags(form.get("tags", "")),
        )
    if step == 2:
        return CampaignPatch(
            channel=form.get("channel") or campaign["channel"],
            channel_configuration_id=form.get("channel_configuration_id") or None,
        )
    if step == 3:
        return CampaignPatch(content=_content_of(campaign["channel"], form))
    if step == 4:
        if campaign["category"] == "marketing":
            return CampaignPatch(audience={"audience_id": form.get("audience_id") or None})
        return CampaignPatch(
            audience={
                "identity_namespace": form.get("identity_namespace") or None,
                "create_new_profiles": form.get("create_new_profiles") == "on",
            }
        )
    if step == 5:
        rate = form.get("rate_per_second", "").strip()
        return CampaignPatch(
            schedule={
                "start_at": _utc(form.get("start_at", "")),
                "end_at": _utc(form.get("end_at", "")),
                "rate_per_second": int(rate) if rate.isdigit() else (rate or None),
            }
        )
    raise InvalidInput.on("step", "this step has nothing to save")


def _utc(value: str) -> str | None:
    # datetime-local gives no zone: the form says the times are UTC.
    value = value.strip()
    if not value:
        return None
    return value if value.endswith("Z") or "+" in value else value + "Z"


def _content_of(channel: str, form: dict[str, str]) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for name, _ in CONTENT_FIELDS[channel]:
        value = form.get(name, "")
        content[name] = value if value != "" else None
    return content


@router.get("/campaigns/{campaign_id}/steps/{step}", response_class=HTMLResponse)
async def campaign_step(
    request: Request, session: Member, step: int, campaign_id: str = CampaignId
) -> Response:
    if step == 7:
        return RedirectResponse(f"/campaigns/{campaign_id}#trigger", status_code=303)
    if not 1 <= step <= 6:
        return RedirectResponse(f"/campaigns/{campaign_id}/steps/1", status_code=303)
    runtime = runtime_of(request)
    campaign = await run_in_threadpool(_campaign, runtime, session, campaign_id)
    return await run_in_threadpool(_step_page, request, session, campaign, step)


@router.post("/campaigns/{campaign_id}/steps/{step}", response_class=HTMLResponse)
async def save_step(
    request: Request, session: Editor, step: int, campaign_id: str = CampaignId
) -> Response:
    runtime = runtime_of(request)
    form = await _form(request)
    campaign = await run_in_threadpool(_campaign, runtime, session, campaign_id)
    try:
        patch = _step_patch(step, campaign, form)
        await run_in_threadpool(
            campaigns.update,
            runtime.db,
            session.workspace_id,
            campaign_id,
            patch,
            runtime.templates,
        )
    except (TidingsError, ValidationError) as exc:
        detail, errors = _problems(exc)
        return await run_in_threadpool(
            _step_page, request, session, campaign, step, 422, detail, errors
        )
    return RedirectResponse(f"/campaigns/{campaign_id}/steps/{step + 1}", status_code=303)


# ---------------------------------------------------------------- content: autosave, preview


@router.post("/campaigns/{campaign_id}/content")
async def autosave_content(
    request: Request, session: Editor, campaign_id: str = CampaignId
) -> Response:
    """The content editor saves as you type (a draft version of a live campaign)."""
    runtime = runtime_of(request)
    body = await request.json()
    fields = body.get("content") if isinstance(body, dict) else None
    if not isinstance(fields, dict):
        raise InvalidInput.on("content", "send {content: {...}}")
    campaign = await run_in_threadpool(_campaign, runtime, session, campaign_id)
    content = _content_of(campaign["channel"], {k: str(v) for k, v in fields.items()})
    view = await run_in_threadpool(
        campaigns.update,
        runtime.db,
        session.workspace_id,
        campaign_id,
        CampaignPatch(content=content),
        runtime.templates,
    )
    return JSONResponse({"saved": True, "version": view["version"]["number"]})


def _json_object(raw: Any, field: str) -> dict[str, Any]:
    if raw in (None, ""):
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{field} is not JSON",
            errors=[FieldError(field, f"is not JSON: {exc.msg}", exc.lineno, exc.colno)],
        ) from None
    if not isinstance(value, dict):
        raise InvalidInput.on(field, "must be a JSON object")
    return value


def _preview(
    runtime: Runtime, session: ConsoleSession, campaign_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    campaign = campaigns.get(runtime.db, session.workspace_id, campaign_id)
    result, _ = campaigns.review(
        runtime.db,
        runtime.templates,
        session.workspace_id,
        campaign_id,
        runtime.settings.smtp_url,
    )
    errors = [error for error in result.errors if error.field.startswith("content")]
    warnings = [error for error in result.warnings if error.field.startswith("content")]
    answer: dict[str, Any] = {
        "channel": campaign["channel"],
        "variables": {"profile": result.profile_paths, "context": result.context_paths},
        "content": None,
    }
    try:
        context = _json_object(body.get("context"), "context")
        identity = body.get("identity") or {}
        request = PreviewRequest(
            context=context,
            profile=None if identity.get("id") else _json_object(body.get("profile"), "profile"),
            identity=Identity(namespace=identity.get("namespace") or "email", id=identity["id"])
            if identity.get("id")
            else None,
        )
        if not any(error.line for error in errors):
            rendered = campaigns.preview(
                runtime.db,
                runtime.templates,
                runtime.settings.resolved_public_url,
                session.workspace_id,
                campaign_id,
                request,
            )
            answer["content"] = rendered["content"]
    except (TidingsError, ValidationError) as exc:
        _, problems = _problems(exc)
        errors += [problem for problem in problems if problem not in errors]
    if campaign["channel"] == "sms" and answer["content"]:
        length = measure(str(answer["content"].get("body") or ""))
        answer["sms"] = {
            "segments": length.segments,
            "encoding": str(length.encoding),
            "units": length.units,
        }
    answer["errors"] = [error.as_dict() for error in errors]
    answer["warnings"] = [warning.as_dict() for warning in warnings]
    return answer


@router.post("/campaigns/{campaign_id}/preview")
async def preview_campaign(
    request: Request, session: Member, campaign_id: str = CampaignId
) -> Response:
    """Renders the saved content for a test profile and a sample context (reads only)."""
    runtime = runtime_of(request)
    try:
        body = await request.json()
    except json.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    answer = await run_in_threadpool(_preview, runtime, session, campaign_id, body)
    return JSONResponse(answer)


# ---------------------------------------------------------------- lifecycle


@router.post("/campaigns/{campaign_id}/activate", response_class=HTMLResponse)
async def activate(request: Request, session: Editor, campaign_id: str = CampaignId) -> Response:
    runtime = runtime_of(request)
    try:
        await run_in_threadpool(
            campaigns.activate,
            runtime.db,
            runtime.templates,
            session.workspace_id,
            campaign_id,
            runtime.settings.smtp_url,
        )
    except TidingsError as exc:
        campaign = await run_in_threadpool(_campaign, runtime, session, campaign_id)
        return await run_in_threadpool(
            _step_page, request, session, campaign, 6, 422, exc.detail, list(exc.errors)
        )
    return RedirectResponse(f"/campaigns/{campaign_id}", status_code=303)


def _lifecycle(action: str) -> Any:
    async def move(request: Request, session: Editor, campaign_id: str = CampaignId) -> Response:
        runtime = runtime_of(request)
        call = {
            "stop": campaigns.stop,
            "archive": campaigns.archive,
            "duplicate": campaigns.duplicate,
            "open-draft": campaigns.open_draft_version,
            "discard-draft": campaigns.discard_draft_version,
        }[action]
        try:
            view = await run_in_threadpool(call, runtime.db, session.workspace_id, campaign_id)
        except TidingsError as exc:
            return await _detail_page(request, session, campaign_id, 409, exc.detail)
        if action == "duplicate":
            return RedirectResponse(f"/campaigns/{view['id']}/steps/1", status_code=303)
        if action == "open-draft":
            return RedirectResponse(f"/campaigns/{campaign_id}/steps/1", status_code=303)
        return RedirectResponse(f"/campaigns/{campaign_id}", status_code=303)

    move.__name__ = f"campaign_{action.replace('-', '_')}"
    return move


for _action in ("stop", "archive", "duplicate", "open-draft", "discard-draft"):
    router.add_api_route(
        f"/campaigns/{{campaign_id}}/{_action}",
        _lifecycle(_action),
        methods=["POST"],
        response_class=HTMLResponse,
    )


@router.post("/campaigns/{campaign_id}/proofs", response_class=HTMLResponse)
async def send_proof(request: Request, session: Editor, campaign_id: str = CampaignId) -> Response:
    runtime = runtime_of(request)
    form = await _form(request)
    try:
        body = ProofCreate(
            to=form.get("to", ""),
            profile=_json_object(form.get("profile"), "profile"),
            context=_json_object(form.get("context"), "context"),
        )
        accepted = await run_in_threadpool(
            proofs.send,
            runtime.db,
            runtime.templates,
            runtime.settings.resolved_public_url,
            session.workspace_id,
            campaign_id,
            body,
            utcnow(),
        )
    except (TidingsError, ValidationError) as exc:
        detail, _ = _problems(exc)
        return await _detail_page(request, session, campaign_id, 422, f"Proof not sent: {detail}")
    runtime.work.notify()
    return await _detail_page(
        request,
        session,
        campaign_id,
        notice=f"Proof queued to {body.to} ({accepted['message_id']}).",
    )


# ---------------------------------------------------------------- the campaign page (step 7)


def _nested(paths: list[str], prefix: str) -> dict[str, Any]:
    """Sample data with every path a template reads, each value naming its path."""
    data: dict[str, Any] = {}
    for path in paths:
        parts = path.split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node.setdefault(parts[-1], f"{prefix}.{path}")
    return data


def _sample_recipient(namespace: str) -> str:
    return {"email": "someone@example.com", "phone": "+15555550100"}.get(namespace, "RECIPIENT-ID")


def trigger_commands(
    base_url: str,
    workspace_name: str,
    campaign: dict[str, Any],
    profile_paths: list[str],
    context_paths: list[str],
) -> dict[str, str]:
    """Ready-to-run curl commands for the native and the AJO-compatible trigger APIs."""
    namespace = campaign["audience"]["identity_namespace"]
    recipient_id = _sample_recipient(namespace)
    profile = _nested(profile_paths, "profile")
    context = _nested(context_paths, "context")
    recipient: dict[str, Any] = {"identity": {"namespace": namespace, "id": recipient_id}}
    if profile:
        recipient["profile"] = profile
    native = {"campaign_id": campaign["id"], "recipients": [recipient], "context": context}
    ajo_recipient: dict[str, Any] = {
        "type": "external" if campaign["audience"].get("high_throughput") else "aep",
        "userId": recipient_id,
        "namespace": namespace,
        "context": context,
    }
    if profile:
        ajo_recipient["profile"] = profile
    if namespace == "email":
        ajo_recipient["channelData"] = {"emailAddress": recipient_id}
    elif namespace == "phone":
        ajo_recipient["channelData"] = {"mobilePhoneNumber": recipient_id}
    ajo = {
        "requestId": f"console-{secrets.token_hex(6)}",
        "campaignId": campaign["id"],
        "recipients": [ajo_recipient],
    }
    auth = '-H "Authorization: Bearer $TIDINGS_API_KEY"'
    json_header = "-H 'Content-Type: application/json'"
    return {
        "native": (
            f"curl -sS -X POST {shlex.quote(base_url + '/v1/executions')} \\\n"
            f"  {auth} \\\n  {json_header} \\\n"
            f"  -d {shlex.quote(json.dumps(native, indent=2))}"
        ),
        "ajo": (
            f"curl -sS -X POST {shlex.quote(base_url + '/ajo/im/executions/unitary')} \\\n"
            f"  {auth} \\\n  -H {shlex.quote('x-sandbox-name: ' + workspace_name)} \\\n"
            f"  {json_header} \\\n"
            f"  -d {shlex.quote(json.dumps(ajo, indent=2))}"
        ),
    }


def _detail_context(runtime: Runtime, session: ConsoleSession, campaign_id: str) -> dict[str, Any]:
    campaign = campaigns.get(runtime.db, session.workspace_id, campaign_id)
    versions = campaigns.list_versions(runtime.db, session.workspace_id, campaign_id)
    context: dict[str, Any] = {"campaign": campaign, "versions": versions, "steps": STEPS}
    live_number = campaign["live_version"]
    if live_number is not None:
        live = campaigns.get_version(runtime.db, session.workspace_id, campaign_id, live_number)
        channel, category = Channel(campaign["channel"]), Category(campaign["category"])
        try:
            content = parse_content(channel, live["content"])
        except InvalidInput:
            content = None
        check = check_content(runtime.templates, channel, category, content)
        profile_paths, context_paths = sorted(check.profile_paths), sorted(check.context_paths)
        context["variables"] = {"profile": profile_paths, "context": context_paths}
        if category is Category.TRANSACTIONAL:
            context["commands"] = trigger_commands(
                runtime.settings.resolved_public_url,
                session.workspace_name,
                {**campaign, "audience": live["audience"]},
                profile_paths,
                context_paths,
            )
        context["sample_profile"] = json.dumps(_nested(profile_paths, "profile"))
        context["sample_context"] = json.dumps(_nested(context_paths, "context"))
    by_state, by_reason, latest = executions.campaign_messages(
        runtime.db, session.workspace_id, campaign_id, LATEST_MESSAGES
    )
    summary = {
        "total": sum(by_state.values()),
        "sent": by_state.get("sent", 0) + by_state.get("delivered", 0),
        "excluded": by_state.get("excluded", 0),
        "failed": by_state.get("failed", 0) + by_state.get("bounced", 0),
    }
    bars = [(state, by_state.get(state, 0)) for state in REPORT_STATES]
    reasons = dict(by_reason)
    engagement: dict[str, int] | None = None
    reports = _report_service()
    report = (
        reports.campaign_report(runtime.db, session.workspace_id, campaign_id) if reports else None
    )
    if report is not None:
        buckets = report.buckets
        summary = {
            "total": report.targeted,
            "sent": buckets.sent + buckets.delivered,
            "excluded": buckets.excluded,
            "failed": buckets.failed + buckets.bounced,
        }
        bars = [(name, getattr(buckets, name)) for name in REPORT_BUCKETS]
        reasons = {**report.excluded_by_reason, **report.failed_by_reason}
        engagement = {
            "opened (unique)": report.opened.unique,
            "clicked (unique)": report.clicked.unique,
            "unsubscribed": report.unsubscribed,
            "complained": report.complained,
        }
    context.update(
        summary=summary,
        latest=latest,
        from_reports=report is not None,
        engagement=engagement,
        chart=bar_chart(bars, title="Messages by state"),
        reason_chart=bar_chart(sorted(reasons.items()), title="Exclusion and failure reasons")
        if reasons
        else None,
    )
    return context


REPORT_STATES = ("queued", "sent", "delivered", "bounced", "excluded", "failed", "cancelled")
# The buckets of tidings.reports (each targeted message in exactly one).
REPORT_BUCKETS = ("pending", "sent", "delivered", "bounced", "excluded", "failed", "cancelled")


async def _detail_page(
    request: Request,
    session: ConsoleSession,
    campaign_id: str,
    status_code: int = 200,
    error: str | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    runtime = runtime_of(request)
    context = await run_in_threadpool(_detail_context, runtime, session, campaign_id)
    return render(
        request, "campaigns/detail.html", status_code, error=error, notice=notice, **context
    )


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
async def campaign_page(
    request: Request, session: Member, campaign_id: str = CampaignId
) -> Response:
    return await _detail_page(request, session, campaign_id)
