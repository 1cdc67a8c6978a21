"""Campaign authoring, review, lifecycle, versions and preview. Knows nothing of HTTP."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from tidings.audiences import service as audiences
from tidings.campaigns.models import campaign_version_tags, campaign_versions, campaigns
from tidings.campaigns.review import ReviewResult, review_version
from tidings.campaigns.schemas import (
    AudienceSpec,
    CampaignCreate,
    CampaignPatch,
    PreviewRequest,
    ScheduleSpec,
)
from tidings.campaigns.state import (
    EDITABLE,
    CampaignEvent,
    CampaignStatus,
    VersionState,
    check_version_move,
    next_status,
)
from tidings.channels import service as channels
from tidings.clock import utcnow
from tidings.content.engine import RenderingError, TemplateEngine
from tidings.content.schemas import MAX_CONTEXT_BYTES, field_path, parse_content
from tidings.content.service import (
    content_field,
    refuse_resource_bombs,
    render_content,
    template_variables,
)
from tidings.db import Database
from tidings.errors import Conflict, FieldError, InvalidInput, NotFound, NotReady
from tidings.ids import new_id
from tidings.json_data import unstorable
from tidings.pagination import keyset_page
from tidings.profiles import service as profiles
from tidings.vocabulary import EMAIL_NAMESPACE, PHONE_NAMESPACE, Category, Channel

PREVIEW_UNSUBSCRIBE_PATH = "/unsubscribe/preview"


# ---------------------------------------------------------------- reading


def load_campaign(
    conn: sa.Connection, workspace_id: str, campaign_id: str, *, for_update: bool = False
) -> dict[str, Any]:
    query = sa.select(campaigns).where(
        campaigns.c.id == campaign_id, campaigns.c.workspace_id == workspace_id
    )
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound("no such campaign in this workspace")
    return dict(row)


def _load_editable(conn: sa.Connection, workspace_id: str, campaign_id: str) -> dict[str, Any]:
    """The campaign, locked for the transaction, if its status allows authoring."""
    campaign = load_campaign(conn, workspace_id, campaign_id, for_update=True)
    status = CampaignStatus(campaign["status"])
    if status not in EDITABLE:
        raise Conflict(f"a {status} campaign cannot be changed; duplicate it instead")
    return campaign


def load_version(conn: sa.Connection, version_id: str) -> dict[str, Any]:
    row = (
        conn.execute(sa.select(campaign_versions).where(campaign_versions.c.id == version_id))
        .mappings()
        .one()
    )
    return dict(row)


def head_version_id(campaign: dict[str, Any]) -> str:
    head: str = campaign["draft_version_id"] or campaign["live_version_id"]
    return head


def _version_number(conn: sa.Connection, version_id: str | None) -> int | None:
    if version_id is None:
        return None
    number: int = conn.execute(
        sa.select(campaign_versions.c.number).where(campaign_versions.c.id == version_id)
    ).scalar_one()
    return number


def version_view(version: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": version["id"],
        "number": version["number"],
        "state": version["state"],
        "name": version["name"],
        "description": version["description"],
        "tags": version["tags"],
        "channel_configuration_id": version["channel_configuration_id"],
        "content": version["content"],
        "audience": version["audience"],
        "schedule": ScheduleSpec(
            start_at=version["start_at"],
            end_at=version["end_at"],
            rate_per_second=version["rate_per_second"],
        ),
        "created_at": version["created_at"],
        "updated_at": version["updated_at"],
        "activated_at": version["activated_at"],
    }


def _campaign_view(conn: sa.Connection, campaign: dict[str, Any]) -> dict[str, Any]:
    head = load_version(conn, head_version_id(campaign))
    view = version_view(head)
    return {
        **view,
        **{
            key: campaign[key]
            for key in (
                "id",
                "status",
                "category",
                "channel",
                "duplicated_from_id",
                "created_at",
                "updated_at",
                "activated_at",
                "stopped_at",
                "completed_at",
                "archived_at",
            )
        },
        "version": {"id": head["id"], "number": head["number"], "state": head["state"]},
        "live_version": _version_number(conn, campaign["live_version_id"]),
        "draft_version": _version_number(conn, campaign["draft_version_id"]),
        "rule_set_ids": campaign.get("rule_set_ids") or [],
    }


def get(db: Database, workspace_id: str, campaign_id: str) -> dict[str, Any]:
    with db.read() as conn:
        return _campaign_view(conn, load_campaign(conn, workspace_id, campaign_id))


@dataclass(frozen=True, slots=True)
class CampaignFilters:
    status: CampaignStatus | None = None
    category: Category | None = None
    channel: Channel | None = None
    tag: str | None = None
    search: str | None = None


def list_page(
    db: Database, workspace_id: str, filters: CampaignFilters, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    head_id = sa.func.coalesce(campaigns.c.draft_version_id, campaigns.c.live_version_id)
    query = (
        sa.select(campaigns)
        .join(campaign_versions, campaign_versions.c.id == head_id)
        .where(campaigns.c.workspace_id == workspace_id)
    )
    if filters.status is not None:
        query = query.where(campaigns.c.status == filters.status.value)
    if filters.category is not None:
        query = query.where(campaigns.c.category == filters.category.value)
    if filters.channel is not None:
        query = query.where(campaigns.c.channel == filters.channel.value)
    if filters.tag:
        query = query.where(
            sa.exists().where(
                campaign_version_tags.c.version_id == campaign_versions.c.id,
                campaign_version_tags.c.tag == filters.tag,
            )
        )
    if filters.search:
        pattern = "%" + filters.search.lower().replace("%", r"\%").replace("_", r"\_") + "%"
        query = query.where(sa.func.lower(campaign_versions.c.name).like(pattern, escape="\\"))
    with db.read() as conn:
        rows, next_cursor = keyset_page(
            conn, query, campaigns.c.id, cursor, limit, newest_first=True
        )
        return [_campaign_view(conn, dict(row)) for row in rows], next_cursor


# ---------------------------------------------------------------- authoring


def _unique_tags(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def _clean_content(
    channel: Channel, raw: dict[str, Any] | None, engine: TemplateEngine | None
) -> dict[str, Any] | None:
    content = parse_content(channel, raw)
    if content is None:
        return None
    if engine is not None:
        refuse_resource_bombs(engine, content)
    return content.model_dump(exclude_none=True)


def _write_tags(conn: sa.Connection, version_id: str, tags: list[str]) -> None:
    conn.execute(
        campaign_version_tags.delete().where(campaign_version_tags.c.version_id == version_id)
    )
    if tags:
        conn.execute(
            campaign_version_tags.insert(), [{"version_id": version_id, "tag": t} for t in tags]
        )


def _insert_version(conn: sa.Connection, values: dict[str, Any]) -> None:
    conn.execute(campaign_versions.insert().values(**values))
    _write_tags(conn, values["id"], values["tags"])


def create(
    db: Database, workspace_id: str, body: CampaignCreate, engine: TemplateEngine | None = None
) -> dict[str, Any]:
    """A new draft campaign; with an engine, templates that blow up its sandbox are refused."""
    content = _clean_content(body.channel, body.content, engine)
    schedule = body.schedule or ScheduleSpec()
    now = utcnow()
    campaign_id, version_id = new_id(), new_id()
    with db.write() as conn:
        conn.execute(
            campaigns.insert().values(
                id=campaign_id,
                workspace_id=workspace_id,
                status=CampaignStatus.DRAFT.value,
                category=body.category.value,
                channel=body.channel.value,
                live_version_id=None,
                draft_version_id=version_id,
                duplicated_from_id=None,
                created_at=now,
                updated_at=now,
            )
        )
        _insert_version(
            conn,
            {
                "id": version_id,
                "campaign_id": campaign_id,
                "number": 1,
                "state": VersionState.DRAFT.value,
                "name": body.name,
                "description": body.description,
                "tags": _unique_tags(body.tags),
                "channel_configuration_id": body.channel_configuration_id,
                "content": content,
                "audience": _audience(body.channel, (body.audience or AudienceSpec()).model_dump()),
                "start_at": schedule.start_at,
                "end_at": schedule.end_at,
                "rate_per_second": schedule.rate_per_second,
                "created_at": now,
                "updated_at": now,
            },
        )
        return _campaign_view(conn, load_campaign(conn, workspace_id, campaign_id))


DEFAULT_NAMESPACES = {Channel.EMAIL: EMAIL_NAMESPACE, Channel.SMS: PHONE_NAMESPACE}


def _audience(channel: Channel, audience: dict[str, Any]) -> dict[str, Any]:
    if not audience.get("identity_namespace"):
        audience["identity_namespace"] = DEFAULT_NAMESPACES.get(channel, EMAIL_NAMESPACE)
    return audience


def _merge(current: dict[str, Any] | None, patch: dict[str, Any]) -> dict[str, Any]:
    merged = {**(current or {}), **patch}
    return {key: value for key, value in merged.items() if value is not None}


def _open_draft(conn: sa.Connection, campaign: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The campaign's draft version, copying the live one first when none is open."""
    if campaign["draft_version_id"]:
        return load_version(conn, campaign["draft_version_id"])
    live = load_version(conn, campaign["live_version_id"])
    latest: int = conn.execute(
        sa.select(sa.func.max(campaign_versions.c.number)).where(
            campaign_versions.c.campaign_id == campaign["id"]
        )
    ).scalar_one()
    draft = {
        **live,
        "id": new_id(),
        "number": latest + 1,
        "state": VersionState.DRAFT.value,
        "created_at": now,
        "updated_at": now,
        "activated_at": None,
    }
    _insert_version(conn, draft)
    conn.execute(
        campaigns.update()
        .where(campaigns.c.id == campaign["id"])
        .values(draft_version_id=draft["id"], updated_at=now)
    )
    campaign["draft_version_id"] = draft["id"]
    return draft


def update(
    db: Database,
    workspace_id: str,
    campaign_id: str,
    patch: CampaignPatch,
    engine: TemplateEngine | None = None,
) -> dict[str, Any]:
    """Applies a partial change; on a live or scheduled campaign it lands in a draft version.

    A change that changes nothing (an empty body, the same values again) writes nothing and
    opens no draft version.
    """
    given = patch.model_dump(exclude_unset=True)
    if engine is not None and given.get("content") is not None:
        # Vetted before the write transaction: a template bomb takes the sandbox seconds to
        # blow up, not to be held with the database's write lock.
        with db.read() as conn:
            campaign = load_campaign(conn, workspace_id, campaign_id)
            head = load_version(conn, head_version_id(campaign))
        channel = Channel(given.get("channel") or campaign["channel"])
        base = head["content"] if channel.value == campaign["channel"] else None
        _clean_content(channel, _merge(base, given["content"]), engine)
    now = utcnow()
    with db.write() as conn:
        campaign = _load_editable(conn, workspace_id, campaign_id)
        status = CampaignStatus(campaign["status"])
        campaign_changes: dict[str, Any] = {}
        for name in ("category", "channel"):
            if given.get(name) is not None and given[name] != campaign[name]:
                if status is not CampaignStatus.DRAFT:
                    raise InvalidInput.on(name, "cannot change once the campaign was activated")
                campaign_changes[name] = given[name].value
        channel = Channel(campaign_changes.get("channel", campaign["channel"]))
        previous_channel = Channel(campaign["channel"]) if "channel" in campaign_changes else None
        head = load_version(conn, head_version_id(campaign))
        changes = {
            name: value
            for name, value in _version_changes(given, head, channel, previous_channel).items()
            if head[name] != value
        }
        if not changes and not campaign_changes:
            return _campaign_view(conn, campaign)
        if changes:
            version = _open_draft(conn, campaign, now)
            conn.execute(
                campaign_versions.update()
                .where(campaign_versions.c.id == version["id"])
                .values(**changes, updated_at=now)
            )
            if "tags" in changes:
                _write_tags(conn, version["id"], changes["tags"])
        conn.execute(
            campaigns.update()
            .where(campaigns.c.id == campaign_id)
            .values(**campaign_changes, updated_at=now)
        )
        return _campaign_view(conn, load_campaign(conn, workspace_id, campaign_id))


def _version_changes(
    given: dict[str, Any],
    head: dict[str, Any],
    channel: Channel,
    previous_channel: Channel | None,
) -> dict[str, Any]:
    """The version columns a PATCH body asks for, validated and merged with the head version.

    `previous_channel` is set when the same PATCH changes the channel (of a draft campaign).
    """
    changes: dict[str, Any] = {}
    for name in ("name", "description", "channel_configuration_id"):
        if name in given and (given[name] is not None or name == "channel_configuration_id"):
            changes[name] = given[name]
    if given.get("tags") is not None:
        changes["tags"] = _unique_tags(given["tags"])
    if "content" in given or previous_channel is not None:
        base = None if previous_channel is not None else head["content"]
        raw = None if given.get("content") is None else _merge(base, given["content"])
        changes["content"] = _clean_content(channel, raw, None)
    if given.get("audience") is not None:
        audience = _validated(AudienceSpec, _merge(head["audience"], given["audience"]), "audience")
        changes["audience"] = _audience(channel, audience.model_dump())
    elif previous_channel is not None:
        # A namespace that was the old channel's default follows the channel.
        old_default = DEFAULT_NAMESPACES.get(previous_channel, EMAIL_NAMESPACE)
        if head["audience"].get("identity_namespace") == old_default:
            changes["audience"] = _audience(
                channel, {**head["audience"], "identity_namespace": None}
            )
    if given.get("schedule") is not None:
        current = {k: head[k] for k in ("start_at", "end_at", "rate_per_second")}
        schedule = _validated(ScheduleSpec, {**current, **given["schedule"]}, "schedule")
        changes.update(schedule.model_dump())
    return changes


def _validated(
    model: type[AudienceSpec] | type[ScheduleSpec], data: dict[str, Any], prefix: str
) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [FieldError(field_path(e["loc"], prefix), e["msg"]) for e in exc.errors()]
        raise InvalidInput(f"invalid {prefix}", errors=errors) from None


# ---------------------------------------------------------------- review and lifecycle


def _review(
    conn: sa.Connection,
    engine: TemplateEngine,
    workspace_id: str,
    campaign: dict[str, Any],
    version: dict[str, Any],
    default_smtp_url: str | None,
) -> ReviewResult:
    configuration = None
    if version["channel_configuration_id"]:
        configuration = channels.load(conn, workspace_id, version["channel_configuration_id"])
    return review_version(
        engine=engine,
        category=Category(campaign["category"]),
        channel=Channel(campaign["channel"]),
        version=version,
        configuration=configuration,
        known_profile_paths=lambda paths: profiles.known_attribute_paths(conn, workspace_id, paths),
        now=utcnow(),
        default_smtp_url=default_smtp_url,
        audience_exists=lambda audience_id: audiences.exists(conn, workspace_id, audience_id),
    )


def review(
    db: Database,
    engine: TemplateEngine,
    workspace_id: str,
    campaign_id: str,
    default_smtp_url: str | None = None,
) -> tuple[ReviewResult, int]:
    with db.read() as conn:
        campaign = load_campaign(conn, workspace_id, campaign_id)
        version = load_version(conn, head_version_id(campaign))
        result = _review(conn, engine, workspace_id, campaign, version, default_smtp_url)
        return result, version["number"]


def activate(
    db: Database,
    engine: TemplateEngine,
    workspace_id: str,
    campaign_id: str,
    default_smtp_url: str | None = None,
) -> dict[str, Any]:
    """Makes the draft version live (or scheduled), replacing the live version atomically."""
    now = utcnow()
    with db.write() as conn:
        campaign = load_campaign(conn, workspace_id, campaign_id, for_update=True)
        status = CampaignStatus(campaign["status"])
        if not campaign["draft_version_id"]:
            raise Conflict(f"the {status} campaign has no draft version to activate")
        draft = load_version(conn, campaign["draft_version_id"])
        result = _review(conn, engine, workspace_id, campaign, draft, default_smtp_url)
        if not result.ready:
            raise NotReady(
                f"the campaign has {len(result.errors)} review error(s)", errors=result.errors
            )
        event = (
            CampaignEvent.SCHEDULE
            if draft["start_at"] and draft["start_at"] > now
            else CampaignEvent.ACTIVATE
        )
        target = next_status(status, event)
        check_version_move(VersionState(draft["state"]), VersionState.LIVE)
        if campaign["live_version_id"]:
            previous = load_version(conn, campaign["live_version_id"])
            check_version_move(VersionState(previous["state"]), VersionState.SUPERSEDED)
            conn.execute(
                campaign_versions.update()
                .where(campaign_versions.c.id == previous["id"])
                .values(state=VersionState.SUPERSEDED.value, updated_at=now)
            )
        conn.execute(
            campaign_versions.update()
            .where(campaign_versions.c.id == draft["id"])
            .values(state=VersionState.LIVE.value, activated_at=now, updated_at=now)
        )
        conn.execute(
            campaigns.update()
            .where(campaigns.c.id == campaign_id)
            .values(
                status=target.value,
                live_version_id=draft["id"],
                draft_version_id=None,
                activated_at=campaign["activated_at"] or now,
                updated_at=now,
            )
        )
        return _campaign_view(conn, load_campaign(conn, workspace_id, campaign_id))


def _move(
    db: Database,
    workspace_id: str,
    campaign_id: str,
    event: CampaignEvent,
    stamp: str,
) -> dict[str, Any]:
    now = utcnow()
    with db.write() as conn:
        campaign = load_campaign(conn, workspace_id, campaign_id, for_update=True)
        target = next_status(CampaignStatus(campaign["status"]), event)
        values: dict[str, Any] = {"status": target.value, stamp: now, "updated_at": now}
        if target not in EDITABLE:
            _drop_draft(conn, campaign["draft_version_id"], values)
        conn.execute(campaigns.update().where(campaigns.c.id == campaign_id).values(**values))
        return _campaign_view(conn, load_campaign(conn, workspace_id, campaign_id))


def stop(db: Database, workspace_id: str, campaign_id: str) -> dict[str, Any]:
    return _move(db, workspace_id, campaign_id, CampaignEvent.STOP, "stopped_at")


def archive(db: Database, workspace_id: str, campaign_id: str) -> dict[str, Any]:
    return _move(db, workspace_id, campaign_id, CampaignEvent.ARCHIVE, "archived_at")


def delete(db: Database, workspace_id: str, campaign_id: str) -> None:
    with db.write() as conn:
        campaign = load_campaign(conn, workspace_id, campaign_id, for_update=True)
        next_status(CampaignStatus(campaign["status"]), CampaignEvent.DELETE)
        version_ids = sa.select(campaign_versions.c.id).where(
            campaign_versions.c.campaign_id == campaign_id
        )
        conn.execute(
            campaign_version_tags.delete().where(
                campaign_version_tags.c.version_id.in_(version_ids)
            )
        )
        conn.execute(
            campaign_versions.delete().where(campaign_versions.c.campaign_id == campaign_id)
        )
        conn.execute(campaigns.delete().where(campaigns.c.id == campaign_id))


def duplicate(db: Database, workspace_id: str, campaign_id: str) -> dict[str, Any]:
    """A new draft campaign with the newest version's authoring, whatever the source's state."""
    now = utcnow()
    with db.write() as conn:
        source = load_campaign(conn, workspace_id, campaign_id)
        version = load_version(conn, head_version_id(source))
        new_campaign_id, new_version_id = new_id(), new_id()
        conn.execute(
            campaigns.insert().values(
                id=new_campaign_id,
                workspace_id=workspace_id,
                status=CampaignStatus.DRAFT.value,
                category=source["category"],
                channel=source["channel"],
                live_version_id=None,
                draft_version_id=new_version_id,
                duplicated_from_id=campaign_id,
                rule_set_ids=source.get("rule_set_ids"),
                created_at=now,
                updated_at=now,
            )
        )
        _insert_version(
            conn,
            {
                **version,
                "id": new_version_id,
                "campaign_id": new_campaign_id,
                "number": 1,
                "state": VersionState.DRAFT.value,
                "name": f"{version['name']} (copy)"[:200],
                "created_at": now,
                "updated_at": now,
                "activated_at": None,
            },
        )
        return _campaign_view(conn, load_campaign(conn, workspace_id, new_campaign_id))


# ---------------------------------------------------------------- versions


def list_versions(db: Database, workspace_id: str, campaign_id: str) -> list[dict[str, Any]]:
    with db.read() as conn:
        load_campaign(conn, workspace_id, campaign_id)
        rows = conn.execute(
            sa.select(campaign_versions)
            .where(campaign_versions.c.campaign_id == campaign_id)
            .order_by(campaign_versions.c.number)
        ).mappings()
        return [version_view(dict(row)) for row in rows]


def _version_by_number(conn: sa.Connection, campaign_id: str, number: int) -> dict[str, Any]:
    row = (
        conn.execute(
            sa.select(campaign_versions).where(
                campaign_versions.c.campaign_id == campaign_id,
                campaign_versions.c.number == number,
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound(f"the campaign has no version {number}")
    return dict(row)


def get_version(db: Database, workspace_id: str, campaign_id: str, number: int) -> dict[str, Any]:
    with db.read() as conn:
        load_campaign(conn, workspace_id, campaign_id)
        return version_view(_version_by_number(conn, campaign_id, number))


def open_draft_version(db: Database, workspace_id: str, campaign_id: str) -> dict[str, Any]:
    now = utcnow()
    with db.write() as conn:
        campaign = _load_editable(conn, workspace_id, campaign_id)
        return version_view(_open_draft(conn, campaign, now))


def discard_draft_version(db: Database, workspace_id: str, campaign_id: str) -> dict[str, Any]:
    now = utcnow()
    with db.write() as conn:
        campaign = load_campaign(conn, workspace_id, campaign_id, for_update=True)
        if campaign["status"] == CampaignStatus.DRAFT.value:
            raise Conflict("a draft campaign has only its draft version: delete the campaign")
        if not campaign["draft_version_id"]:
            raise NotFound("the campaign has no draft version")
        conn.execute(
            campaign_versions.delete().where(campaign_versions.c.id == campaign["draft_version_id"])
        )
        conn.execute(
            campaigns.update()
            .where(campaigns.c.id == campaign_id)
            .values(draft_version_id=None, updated_at=now)
        )
        return _campaign_view(conn, load_campaign(conn, workspace_id, campaign_id))


# ---------------------------------------------------------------- preview


def preview(
    db: Database,
    engine: TemplateEngine,
    public_url: str,
    workspace_id: str,
    campaign_id: str,
    request: PreviewRequest,
) -> dict[str, Any]:
    if request.profile is not None and request.identity is not None:
        raise InvalidInput.on("identity", "give either profile or identity, not both")
    for data, name in ((request.context, "context"), (request.profile, "profile")):
        unfit = unstorable(data, name)
        if unfit is not None:
            raise InvalidInput(f"{unfit.field} {unfit.message}", errors=[unfit])
    if len(json.dumps(request.context)) > MAX_CONTEXT_BYTES:
        raise InvalidInput.on("context", f"is larger than {MAX_CONTEXT_BYTES} bytes as JSON")
    with db.read() as conn:
        campaign = load_campaign(conn, workspace_id, campaign_id)
        if request.version is not None:
            version = _version_by_number(conn, campaign_id, request.version)
        else:
            version = load_version(conn, head_version_id(campaign))
        profile_attributes: dict[str, Any] = request.profile or {}
        if request.identity is not None:
            value = profiles.normalize_identity(
                request.identity.namespace, request.identity.id, "identity.id"
            )
            profile_id = profiles.find_profile_id(
                conn, workspace_id, request.identity.namespace, value
            )
            if profile_id is None:
                raise InvalidInput.on("identity", "no profile has this identity")
            profile_attributes = profiles.get_attributes(conn, profile_id)
    channel = Channel(campaign["channel"])
    content = parse_content(channel, version["content"])
    if content is None:
        raise InvalidInput.on("content", "the campaign has no content to preview yet")
    variables = template_variables(
        profile=profile_attributes,
        context=request.context,
        campaign_id=campaign["id"],
        campaign_name=version["name"],
        unsubscribe_url=public_url + PREVIEW_UNSUBSCRIBE_PATH,
    )
    try:
        rendered = render_content(engine, content, variables, isolated=True)
    except RenderingError as exc:
        problem, field = exc.problem, content_field(exc.template)
        raise InvalidInput(
            f"{field} does not render: {problem.message}",
            errors=[FieldError(field, problem.message, problem.line, problem.column)],
        ) from None
    return {"channel": channel, "version": version["number"], "content": rendered}


# ---------------------------------------------------------------- schedules (worker)


def advance_schedules(db: Database, now: datetime) -> dict[str, int]:
    """Starts scheduled campaigns whose start has come and completes those whose end passed."""
    moved = {"started": 0, "completed": 0}
    query = (
        sa.select(
            campaigns.c.id,
            campaigns.c.status,
            campaigns.c.draft_version_id,
            campaign_versions.c.start_at,
            campaign_versions.c.end_at,
        )
        .join(campaign_versions, campaign_versions.c.id == campaigns.c.live_version_id)
        .where(
            campaigns.c.status.in_([CampaignStatus.SCHEDULED.value, CampaignStatus.LIVE.value]),
            sa.or_(
                sa.and_(
                    campaigns.c.status == CampaignStatus.SCHEDULED.value,
                    campaign_versions.c.start_at <= now,
                ),
                campaign_versions.c.end_at <= now,
            ),
        )
        .with_for_update(of=campaigns, skip_locked=True)
    )
    with db.write() as conn:
        for row in conn.execute(query).all():
            status = CampaignStatus(row.status)
            values: dict[str, Any] = {"updated_at": now}
            if status is CampaignStatus.SCHEDULED and row.start_at and row.start_at <= now:
                status = next_status(status, CampaignEvent.START)
                moved["started"] += 1
            if row.end_at and row.end_at <= now:
                status = next_status(status, CampaignEvent.COMPLETE)
                values["completed_at"] = now
                moved["completed"] += 1
            values["status"] = status.value
            if status not in EDITABLE:
                _drop_draft(conn, row.draft_version_id, values)
            conn.execute(campaigns.update().where(campaigns.c.id == row.id).values(**values))
    return moved


def _drop_draft(conn: sa.Connection, draft_version_id: str | None, values: dict[str, Any]) -> None:
    """A campaign that can no longer be edited keeps no open draft: it would dangle, and the
    campaign would show (and duplicate) content that never ran."""
    if draft_version_id:
        conn.execute(campaign_versions.delete().where(campaign_versions.c.id == draft_version_id))
        values["draft_version_id"] = None
