"""Channel configurations: create, read, change; secrets stored apart and never echoed."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from pydantic import ValidationError

from tidings.campaigns.models import campaign_versions, campaigns
from tidings.channels.models import channel_configurations
from tidings.channels.schemas import (
    SETTINGS_MODELS,
    ChannelConfigurationCreate,
    ChannelConfigurationPatch,
)
from tidings.clock import utcnow
from tidings.content.schemas import field_path
from tidings.db import Database
from tidings.errors import Conflict, FieldError, InvalidInput, NotFound
from tidings.ids import new_id
from tidings.pagination import keyset_page
from tidings.vocabulary import Channel

SMTP_PASSWORD = "smtp_password"


def _netloc(username: str | None, password: str | None, host: str, port: int | None) -> str:
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc = f"{netloc}:{port}"
    if username is not None or password is not None:
        credentials = username or ""
        if password is not None:
            credentials = f"{credentials}:{password}"
        netloc = f"{credentials}@{netloc}"
    return netloc


def split_secrets(
    channel: Channel, settings: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separates write-only values from the rest; the SMTP password hides inside smtp_url."""
    public = dict(settings)
    secrets: dict[str, Any] = {}
    for name in SETTINGS_MODELS[channel].SECRET_FIELDS:
        value = public.pop(name, None)
        if value is not None:
            secrets[name] = value
    smtp_url = public.get("smtp_url")
    if channel is Channel.EMAIL and smtp_url:
        parts = urlsplit(smtp_url)
        if parts.password is not None:
            if parts.password:  # smtp://user:@host asks for no password at all
                secrets[SMTP_PASSWORD] = parts.password
            netloc = _netloc(parts.username, None, parts.hostname or "", parts.port)
            public["smtp_url"] = urlunsplit(parts._replace(netloc=netloc))
    return public, secrets


def join_secrets(
    channel: Channel, public: dict[str, Any], secrets: dict[str, Any]
) -> dict[str, Any]:
    """The full settings an adapter needs: the inverse of split_secrets."""
    settings = dict(public)
    for name in SETTINGS_MODELS[channel].SECRET_FIELDS:
        if name in secrets:
            settings[name] = secrets[name]
    password = secrets.get(SMTP_PASSWORD)
    if channel is Channel.EMAIL and settings.get("smtp_url") and password is not None:
        parts = urlsplit(settings["smtp_url"])
        netloc = _netloc(parts.username, password, parts.hostname or "", parts.port)
        settings["smtp_url"] = urlunsplit(parts._replace(netloc=netloc))
    return settings


def _keep_smtp_password(partial: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """An smtp_url sent back as returned (no password) keeps the stored password.

    The API never returns the password, so a client that reads a configuration and writes it
    back must not wipe it. It is kept while user, host and port are unchanged; to remove it,
    send the URL with an empty password (smtp://user:@host).
    """
    new_url, old_url = partial.get("smtp_url"), stored.get("smtp_url")
    if not new_url or not old_url:
        return partial
    new, old = urlsplit(new_url), urlsplit(old_url)
    same_account = (new.username, new.hostname, new.port) == (old.username, old.hostname, old.port)
    if new.password is None and old.password is not None and same_account:
        return {**partial, "smtp_url": old_url}
    return partial


def _validate_settings(channel: Channel, settings: dict[str, Any]) -> dict[str, Any]:
    try:
        model = SETTINGS_MODELS[channel].model_validate(settings)
    except ValidationError as exc:
        errors = [
            FieldError(field_path(error["loc"], channel.value) or channel.value, error["msg"])
            for error in exc.errors()
        ]
        raise InvalidInput(f"invalid {channel} settings", errors=errors) from None
    return model.model_dump(mode="json")


def to_public(row: dict[str, Any]) -> dict[str, Any]:
    channel = Channel(row["channel"])
    return {
        "id": row["id"],
        "name": row["name"],
        "channel": channel,
        "category": row["category"],
        channel.value: row["settings"],
        "secrets_set": sorted(row["secrets"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _name_taken(conn: sa.Connection, workspace_id: str, name: str, except_id: str = "") -> bool:
    return (
        conn.execute(
            sa.select(channel_configurations.c.id).where(
                channel_configurations.c.workspace_id == workspace_id,
                channel_configurations.c.name == name,
                channel_configurations.c.id != except_id,
            )
        ).first()
        is not None
    )


def create(db: Database, workspace_id: str, body: ChannelConfigurationCreate) -> dict[str, Any]:
    settings = body.settings().model_dump(mode="json")
    public, secrets = split_secrets(body.channel, settings)
    now = utcnow()
    row = {
        "id": new_id(),
        "workspace_id": workspace_id,
        "name": body.name,
        "channel": body.channel.value,
        "category": body.category.value,
        "settings": public,
        "secrets": secrets,
        "created_at": now,
        "updated_at": now,
    }
    with db.write() as conn:
        if _name_taken(conn, workspace_id, body.name):
            raise InvalidInput.on("name", "another channel configuration has this name")
        conn.execute(channel_configurations.insert().values(**row))
    return row


def load(conn: sa.Connection, workspace_id: str, configuration_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            sa.select(channel_configurations).where(
                channel_configurations.c.id == configuration_id,
                channel_configurations.c.workspace_id == workspace_id,
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def get(db: Database, workspace_id: str, configuration_id: str) -> dict[str, Any]:
    with db.read() as conn:
        row = load(conn, workspace_id, configuration_id)
    if row is None:
        raise NotFound("no such channel configuration in this workspace")
    return row


def list_page(
    db: Database,
    workspace_id: str,
    *,
    channel: Channel | None,
    category: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    query = sa.select(channel_configurations).where(
        channel_configurations.c.workspace_id == workspace_id
    )
    if channel is not None:
        query = query.where(channel_configurations.c.channel == channel.value)
    if category is not None:
        query = query.where(channel_configurations.c.category == category)
    with db.read() as conn:
        rows, next_cursor = keyset_page(conn, query, channel_configurations.c.id, cursor, limit)
    return [dict(row) for row in rows], next_cursor


def update(
    db: Database, workspace_id: str, configuration_id: str, patch: ChannelConfigurationPatch
) -> dict[str, Any]:
    with db.write() as conn:
        row = load(conn, workspace_id, configuration_id)
        if row is None:
            raise NotFound("no such channel configuration in this workspace")
        channel = Channel(row["channel"])
        if patch.channel is not None and patch.channel is not channel:
            raise InvalidInput.on("channel", "the channel of a configuration cannot change")
        for other in Channel:
            if other is not channel and getattr(patch, other.value) is not None:
                raise InvalidInput.on(other.value, f"this configuration is for {channel}")
        changes: dict[str, Any] = {}
        if patch.name is not None and patch.name != row["name"]:
            if _name_taken(conn, workspace_id, patch.name, configuration_id):
                raise InvalidInput.on("name", "another channel configuration has this name")
            changes["name"] = patch.name
        if patch.category is not None and patch.category.value != row["category"]:
            if _used_by_active_campaigns(conn, workspace_id, configuration_id):
                raise Conflict(
                    "the category cannot change while an active campaign uses this configuration"
                )
            changes["category"] = patch.category.value
        partial = getattr(patch, channel.value)
        if partial is not None:
            stored = join_secrets(channel, row["settings"], row["secrets"])
            merged = {**stored, **_keep_smtp_password(partial, stored)}
            changes["settings"], changes["secrets"] = split_secrets(
                channel, _validate_settings(channel, merged)
            )
        if changes:
            changes["updated_at"] = utcnow()
            conn.execute(
                channel_configurations.update()
                .where(channel_configurations.c.id == configuration_id)
                .values(**changes)
            )
            row.update(changes)
    return row


def _used_by_active_campaigns(
    conn: sa.Connection, workspace_id: str, configuration_id: str
) -> bool:
    """Whether the live version of a live or scheduled campaign of the workspace uses it."""
    query = (
        sa.select(campaigns.c.id)
        .join(campaign_versions, campaign_versions.c.id == campaigns.c.live_version_id)
        .where(
            campaigns.c.workspace_id == workspace_id,
            campaigns.c.status.in_(["live", "scheduled"]),
            campaign_versions.c.channel_configuration_id == configuration_id,
        )
        .limit(1)
    )
    return conn.execute(query).first() is not None
