"""What an unsubscribe does: the recipient of the token's message opts out of its channel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from tidings.clock import utcnow
from tidings.db import Database
from tidings.errors import InvalidInput, NotFound
from tidings.events import EventKind, MessageEvent, announce
from tidings.executions.models import messages
from tidings.profiles import service as profiles
from tidings.profiles.schemas import ConsentStatus
from tidings.suppressions import service as suppressions
from tidings.suppressions.schemas import SuppressionChannel
from tidings.unsubscribe.tokens import UnsubscribeToken
from tidings.vocabulary import Channel

# Consent sources: the confirmation page's button, and a mailbox's RFC 8058 one-click POST.
SOURCE_LINK = "unsubscribe_link"
SOURCE_ONE_CLICK = "one_click"
# The source of the suppression an external recipient's unsubscribe adds.
SUPPRESSION_SOURCE = "unsubscribe"
NOT_FOUND = "no such message"
_SUPPRESSION_CHANNELS = {
    Channel.EMAIL: SuppressionChannel.EMAIL,
    Channel.SMS: SuppressionChannel.SMS,
}


class Outcome(StrEnum):
    # The profile's marketing consent on the channel is `out` (now, or already).
    CONSENT_OUT = "consent_out"
    # No profile: the address is suppressed (now, or already).
    SUPPRESSED = "suppressed"
    # Neither a profile nor an address is left to act on (the recipient was erased, or is a
    # push token, which the suppression list does not hold).
    NOTHING = "nothing"


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    outcome: Outcome
    channel: Channel


def unsubscribe(db: Database, token: UnsubscribeToken, source: str) -> Unsubscribed:
    """Opts the recipient of the token's message out of marketing on its channel, in one
    transaction; repeating it changes nothing more.

    The message is looked up by id within the token's workspace. Its profile (or the profile
    it was merged into) gets consent `out` on the channel with `source` and the time. A message
    without a profile (an external recipient) has no consent to change: its address gets a
    `manual` suppression (source `unsubscribe`) unless one covers it already, so that no
    marketing goes to it again; like every suppression, it stops transactional messages to the
    address too. Raises NotFound when the workspace has no such message on that channel.
    """
    now = utcnow()
    with db.write() as conn:
        row = conn.execute(
            sa.select(
                messages.c.profile_id,
                messages.c.address,
                messages.c.channel,
                messages.c.campaign_id,
                messages.c.version_id,
                messages.c.execution_id,
                messages.c.state,
                messages.c.is_proof,
            ).where(
                messages.c.id == token.message_id,
                messages.c.workspace_id == token.workspace_id,
            )
        ).first()
        if row is None or row.channel != token.channel.value:
            raise NotFound(NOT_FOUND)
        workspace_id, channel = token.workspace_id, token.channel
        profile_id = (
            profiles.current_profile_id(conn, workspace_id, row.profile_id)
            if row.profile_id
            else None
        )
        if profile_id is not None:
            entry = profiles.set_channel_consent(
                conn,
                workspace_id,
                profile_id,
                channel,
                ConsentStatus.OUT,
                source,
                now,
                detail=f"message:{token.message_id}",
            )
            if entry is not None and entry.get("updated_at") == now.isoformat():
                _announce(conn, token, row, now)
            return Unsubscribed(Outcome.CONSENT_OUT, channel)
        suppression_channel = _SUPPRESSION_CHANNELS.get(channel)
        if row.address and suppression_channel is not None:
            try:
                added = suppressions.suppress_unless_suppressed(
                    conn,
                    workspace_id,
                    suppression_channel,
                    row.address,
                    source=SUPPRESSION_SOURCE,
                    reason=f"unsubscribed ({source})",
                    now=now,
                )
            except InvalidInput:
                # An address the suppression list cannot hold (it validates more strictly
                # than a relay may accept): nothing to record it by.
                return Unsubscribed(Outcome.NOTHING, channel)
            if added:
                _announce(conn, token, row, now)
            return Unsubscribed(Outcome.SUPPRESSED, channel)
    return Unsubscribed(Outcome.NOTHING, channel)


def _announce(conn: sa.Connection, token: UnsubscribeToken, row: Any, now: datetime) -> None:
    """Announces the unsubscribe of the message's recipient: only the one that changed
    something, so a repeated click is not counted twice."""
    announce(
        conn,
        [
            MessageEvent(
                kind=EventKind.UNSUBSCRIBED,
                message_id=token.message_id,
                workspace_id=token.workspace_id,
                campaign_id=row.campaign_id,
                version_id=row.version_id,
                execution_id=row.execution_id,
                channel=row.channel,
                occurred_at=now,
                previous_state=row.state,
                is_proof=bool(row.is_proof),
            )
        ],
    )
