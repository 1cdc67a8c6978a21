"""What Twilio's webhooks do: status callbacks move sent messages on, STOP and START set consent.

Both are signed by Twilio with the auth token of the account that sent (or received) the
message, so each request is checked against the configurations it can belong to:

- a status callback names a MessageSid: the messages with that provider id, and the
  configuration of the campaign version each was sent with, hold the token;
- an inbound message names the number it was sent `To` (and the MessagingServiceSid, when the
  number belongs to one): every Twilio SMS configuration with that from_number or service holds
  a candidate token, and each workspace whose configuration's token verifies is acted on.

A request that matches nothing (an unknown sid or number) cannot be checked and changes
nothing: it is acknowledged. One that matches but whose signature verifies with none of the
tokens is refused (PermissionDenied, 403).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl

import sqlalchemy as sa

from tidings.campaigns.models import campaign_versions
from tidings.channels.models import channel_configurations
from tidings.channels.service import join_secrets
from tidings.channels.sms.twilio import signature_valid
from tidings.clock import utcnow
from tidings.db import Database
from tidings.delivery.state import MESSAGE_TRANSITIONS, MessageState
from tidings.errors import InvalidInput, PermissionDenied
from tidings.events import EventKind, MessageEvent, announce
from tidings.executions.models import messages
from tidings.profiles import service as profiles
from tidings.profiles.schemas import ConsentStatus
from tidings.suppressions import service as suppressions
from tidings.suppressions.models import suppressions as suppression_table
from tidings.suppressions.schemas import SuppressionChannel, SuppressionKind
from tidings.vocabulary import PHONE_NAMESPACE, Channel

BAD_SIGNATURE = "the X-Twilio-Signature header does not match this request"
# The consent source of a keyword, and the source of the suppression a STOP from a number
# without a profile adds (START removes that one, and only that one).
KEYWORD_SOURCE = "sms_keyword"
STOP_SUPPRESSION_SOURCE = "sms_stop"
# Twilio's standard opt-out and opt-in keywords; the whole message, trimmed, any case.
STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
# Twilio's final statuses; the others (queued, sending, sent, accepted…) change nothing here.
DELIVERED_STATUSES = frozenset({"delivered"})
UNDELIVERED_STATUSES = frozenset({"undelivered", "failed"})

Form = Sequence[tuple[str, str]]


def _sources(target: MessageState) -> list[str]:
    """States a message may reach `target` from, per the state machine (never `sending`: a
    callback does not race the deliverer's own record)."""
    return [
        state.value
        for state, targets in MESSAGE_TRANSITIONS.items()
        if target in targets and state is not MessageState.SENDING
    ]


class StatusOutcome(StrEnum):
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    # A status that is not final, a message already past it, or an unknown sid.
    UNCHANGED = "unchanged"
    UNKNOWN = "unknown"


def _first(params: Form, name: str) -> str:
    return next((value for key, value in params if key == name), "")


def status_callback(db: Database, url: str, params: Form, given: str) -> StatusOutcome:
    """Applies one status callback; raises PermissionDenied when its signature is wrong."""
    sid = _first(params, "MessageSid") or _first(params, "SmsSid")
    status = _first(params, "MessageStatus") or _first(params, "SmsStatus")
    error_code = _first(params, "ErrorCode")
    if not sid:
        return StatusOutcome.UNKNOWN
    now = utcnow()
    with db.write() as conn:
        rows = conn.execute(
            sa.select(
                messages.c.id,
                messages.c.channel,
                messages.c.state,
                messages.c.workspace_id,
                messages.c.campaign_id,
                messages.c.version_id,
                messages.c.execution_id,
                messages.c.is_proof,
                channel_configurations.c.settings,
                channel_configurations.c.secrets,
            )
            .join(campaign_versions, campaign_versions.c.id == messages.c.version_id)
            .join(
                channel_configurations,
                channel_configurations.c.id == campaign_versions.c.channel_configuration_id,
            )
            .where(messages.c.provider_message_id == sid, messages.c.channel == Channel.SMS.value)
        ).all()
        if not rows:
            return StatusOutcome.UNKNOWN
        verified = [
            row
            for row in rows
            if signature_valid(
                str(join_secrets(Channel.SMS, row.settings, row.secrets).get("auth_token") or ""),
                url,
                params,
                given,
            )
        ]
        if not verified:
            raise PermissionDenied(BAD_SIGNATURE)
        if status in DELIVERED_STATUSES:
            values: dict[str, Any] = {"state": MessageState.DELIVERED.value}
            sources, outcome = _sources(MessageState.DELIVERED), StatusOutcome.DELIVERED
        elif status in UNDELIVERED_STATUSES:
            # The carrier (or Twilio) gave up after accepting it: a bounce, with Twilio's code.
            values = {
                "state": MessageState.BOUNCED.value,
                "reason": f"twilio_{error_code}" if error_code else f"twilio_{status}",
                "last_error": f"Twilio status {status}"
                + (f" (error {error_code})" if error_code else ""),
            }
            sources, outcome = _sources(MessageState.BOUNCED), StatusOutcome.BOUNCED
        else:
            return StatusOutcome.UNCHANGED
        kind = EventKind.DELIVERED if outcome is StatusOutcome.DELIVERED else EventKind.BOUNCED
        events = []
        for row in verified:
            # One message per sid in practice: one UPDATE each tells which of them moved.
            if (
                row.state in sources
                and conn.execute(
                    messages.update()
                    .where(messages.c.id == row.id, messages.c.state == row.state)
                    .values(**values, updated_at=now)
                ).rowcount
            ):
                events.append(
                    MessageEvent(
                        kind=kind,
                        message_id=row.id,
                        workspace_id=row.workspace_id,
                        campaign_id=row.campaign_id,
                        version_id=row.version_id,
                        execution_id=row.execution_id,
                        channel=row.channel,
                        occurred_at=now,
                        reason="hard" if kind is EventKind.BOUNCED else None,
                        previous_state=row.state,
                        is_proof=bool(row.is_proof),
                    )
                )
        announce(conn, events)
    return outcome if events else StatusOutcome.UNCHANGED


class Keyword(StrEnum):
    STOP = "stop"
    START = "start"


def keyword_of(body: str) -> Keyword | None:
    word = body.strip().upper()
    if word in STOP_KEYWORDS:
        return Keyword.STOP
    if word in START_KEYWORDS:
        return Keyword.START
    return None


@dataclass(frozen=True, slots=True)
class InboundResult:
    keyword: Keyword | None
    # One entry per workspace acted on: what changed there.
    workspaces: dict[str, str]


def _candidates(conn: sa.Connection, to: str, service_sid: str) -> list[tuple[str, dict[str, Any]]]:
    """(workspace, full settings) of the Twilio SMS configurations a message to `to` may
    have reached. SMS configurations are few: they are filtered here rather than by a JSON
    query that each backend spells differently."""
    found = []
    for row in conn.execute(
        sa.select(
            channel_configurations.c.workspace_id,
            channel_configurations.c.settings,
            channel_configurations.c.secrets,
        ).where(channel_configurations.c.channel == Channel.SMS.value)
    ):
        settings = row.settings
        if settings.get("provider") != "twilio":
            continue
        by_number = bool(to) and settings.get("from_number") == to
        by_service = bool(service_sid) and settings.get("messaging_service_sid") == service_sid
        if by_number or by_service:
            found.append((row.workspace_id, join_secrets(Channel.SMS, settings, row.secrets)))
    return found


def inbound(db: Database, url: str, params: Form, given: str) -> InboundResult:
    """Applies an inbound message's STOP or START keyword in each workspace whose Twilio
    configuration it verifies with; raises PermissionDenied when it verifies with none."""
    to, sender = _first(params, "To"), _first(params, "From")
    keyword = keyword_of(_first(params, "Body"))
    now = utcnow()
    acted: dict[str, str] = {}
    with db.write() as conn:
        candidates = _candidates(conn, to, _first(params, "MessagingServiceSid"))
        if not candidates:
            return InboundResult(keyword, acted)
        workspaces = {
            workspace_id
            for workspace_id, settings in candidates
            if signature_valid(str(settings.get("auth_token") or ""), url, params, given)
        }
        if not workspaces:
            raise PermissionDenied(BAD_SIGNATURE)
        if keyword is None:
            return InboundResult(keyword, acted)
        try:
            phone = profiles.normalize_identity(PHONE_NAMESPACE, sender, "From")
        except InvalidInput:
            # A short code or an alphanumeric sender: no profile or suppression can hold it.
            return InboundResult(keyword, acted)
        for workspace_id in sorted(workspaces):
            acted[workspace_id] = _apply(
                conn, workspace_id, phone, keyword, now, _first(params, "MessageSid")
            )
    return InboundResult(keyword, acted)


def _apply(
    conn: sa.Connection,
    workspace_id: str,
    phone: str,
    keyword: Keyword,
    now: datetime,
    message_sid: str | None = None,
) -> str:
    profile_id = profiles.find_profile_id(conn, workspace_id, PHONE_NAMESPACE, phone)
    if profile_id is not None:
        status = ConsentStatus.OUT if keyword is Keyword.STOP else ConsentStatus.IN
        profiles.set_channel_consent(
            conn,
            workspace_id,
            profile_id,
            Channel.SMS,
            status,
            KEYWORD_SOURCE,
            now,
            # The inbound message's Twilio id: what shows the person sent the keyword.
            detail=f"twilio:{message_sid}" if message_sid else None,
        )
        return f"consent_{status.value}"
    if keyword is Keyword.STOP:
        suppressions.suppress_unless_suppressed(
            conn,
            workspace_id,
            SuppressionChannel.SMS,
            phone,
            source=STOP_SUPPRESSION_SOURCE,
            reason="replied STOP",
            now=now,
        )
        return "suppressed"
    # START from a number without a profile: undo what its STOP added, nothing more (a
    # suppression for a bounce or added by hand stays).
    removed = conn.execute(
        suppression_table.delete().where(
            suppression_table.c.workspace_id == workspace_id,
            suppression_table.c.channel == SuppressionChannel.SMS.value,
            suppression_table.c.kind == SuppressionKind.ADDRESS.value,
            suppression_table.c.value == phone,
            suppression_table.c.source == STOP_SUPPRESSION_SOURCE,
        )
    ).rowcount
    return "unsuppressed" if removed else "nothing"


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """An application/x-www-form-urlencoded body as (name, value) pairs, in order."""
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput.on("body", "is not a form-encoded body") from None


def signed_url(public_url: str, path: str, query: str) -> str:
    """The URL Twilio signed: the one it was given, built on TIDINGS_PUBLIC_URL (the address a
    proxy forwards to is not what Twilio called)."""
    return f"{public_url.rstrip('/')}{path}" + (f"?{query}" if query else "")
