"""Proofs: render a campaign version for a test profile and queue it to a tester's address.

A proof is one message in an execution of its own (kind `proof`), marked `is_proof`: the worker
sends it through the same adapters and configuration as any message; the claim spares it
consent, quiet hours and frequency caps (it neither meets nor spends them) but not the
suppression list. Reports must leave out messages marked `is_proof` (and executions of kind
`proof`): nothing about a proof says anything about an audience.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError

from tidings.campaigns import service as campaigns
from tidings.campaigns.schemas import PreviewRequest
from tidings.content.engine import TemplateEngine
from tidings.db import Database
from tidings.delivery.state import MessageState
from tidings.errors import InvalidInput
from tidings.events import EventKind, MessageEvent, announce
from tidings.executions.models import executions, messages
from tidings.executions.state import ExecutionKind, ExecutionStatus
from tidings.ids import new_id
from tidings.profiles import service as profiles
from tidings.proofs.schemas import ProofCreate
from tidings.vocabulary import EMAIL_NAMESPACE, PHONE_NAMESPACE, Channel

# The namespace a proof's recipient is recorded in, per channel.
PUSH_TOKEN_NAMESPACE = "push_token"
_MAX_RECIPIENT_ID = 320


def address_for(channel: Channel, to: str) -> tuple[str, str, str]:
    """(address, recipient namespace, recipient id) of `to` on the channel; InvalidInput on
    `to` when the channel cannot send to it."""
    to = to.strip()
    if channel is Channel.EMAIL:
        try:
            address = profiles.normalize_address(to)
        except EmailNotValidError as exc:
            raise InvalidInput.on("to", f"is not a valid email address ({exc})") from None
        return address, EMAIL_NAMESPACE, address.lower()
    if channel is Channel.SMS:
        number = profiles.normalize_identity(PHONE_NAMESPACE, to, "to")
        return number, PHONE_NAMESPACE, number
    if not to or any(char.isspace() or ord(char) < 32 for char in to):
        raise InvalidInput.on("to", "is not a push token (no spaces or control characters)")
    return to, PUSH_TOKEN_NAMESPACE, to[:_MAX_RECIPIENT_ID]


def _version_id(campaign: dict[str, Any], which: str | None) -> str:
    if which == "draft":
        if not campaign["draft_version_id"]:
            raise InvalidInput.on("version", "the campaign has no draft version")
        return str(campaign["draft_version_id"])
    if which == "live":
        if not campaign["live_version_id"]:
            raise InvalidInput.on("version", "the campaign has no live version")
        return str(campaign["live_version_id"])
    return campaigns.head_version_id(campaign)


def send(
    db: Database,
    engine: TemplateEngine,
    public_url: str,
    workspace_id: str,
    campaign_id: str,
    body: ProofCreate,
    now: datetime,
) -> dict[str, Any]:
    """Checks that the version renders for the profile and context, then queues the proof."""
    if body.profile is not None and body.profile_identity is not None:
        raise InvalidInput.on("profile_identity", "give either profile or profile_identity")
    with db.read() as conn:
        campaign = campaigns.load_campaign(conn, workspace_id, campaign_id)
        version = campaigns.load_version(conn, _version_id(campaign, body.version))
        attributes: dict[str, Any] = body.profile or {}
        if body.profile_identity is not None:
            identity = body.profile_identity
            value = profiles.normalize_identity(
                identity.namespace, identity.id, "profile_identity.id"
            )
            profile_id = profiles.find_profile_id(conn, workspace_id, identity.namespace, value)
            if profile_id is None:
                raise InvalidInput.on("profile_identity", "no profile has this identity")
            attributes = profiles.get_attributes(conn, profile_id)
    channel = Channel(campaign["channel"])
    address, namespace, recipient_id = address_for(channel, body.to)
    if not version["channel_configuration_id"]:
        raise InvalidInput.on(
            "channel_configuration_id", "the campaign has no channel configuration to send with"
        )
    # Preview's checks (storable, sized documents) and its render: a proof that cannot render
    # is refused now, naming the template, rather than failing in the worker.
    campaigns.preview(
        db,
        engine,
        public_url,
        workspace_id,
        campaign_id,
        PreviewRequest(profile=attributes, context=body.context, version=version["number"]),
    )
    execution_id, message_id = new_id(), new_id()
    with db.write() as conn:
        conn.execute(
            executions.insert().values(
                id=execution_id,
                workspace_id=workspace_id,
                campaign_id=campaign_id,
                version_id=version["id"],
                kind=ExecutionKind.PROOF.value,
                status=ExecutionStatus.ACCEPTED.value,
                request_id=None,
                recipient_count=1,
                execute_at=None,
                created_at=now,
                context=body.context,
            )
        )
        conn.execute(
            messages.insert().values(
                id=message_id,
                workspace_id=workspace_id,
                execution_id=execution_id,
                campaign_id=campaign_id,
                version_id=version["id"],
                channel=channel.value,
                state=MessageState.QUEUED.value,
                recipient_namespace=namespace,
                recipient_id=recipient_id,
                # No stored profile: the proof personalizes with a copy of its attributes, so
                # nothing the tester does with it (unsubscribing) touches that profile.
                profile_id=None,
                address=address,
                context=body.context,
                profile_data=attributes,
                due_at=now,
                attempts=0,
                created_at=now,
                updated_at=now,
                is_proof=True,
            )
        )
        announce(
            conn,
            [
                MessageEvent(
                    kind=EventKind.TARGETED,
                    message_id=message_id,
                    workspace_id=workspace_id,
                    campaign_id=campaign_id,
                    version_id=version["id"],
                    execution_id=execution_id,
                    channel=channel.value,
                    occurred_at=now,
                    is_proof=True,
                    audience=False,
                )
            ],
        )
    return {
        "proof_id": message_id,
        "message_id": message_id,
        "execution_id": execution_id,
        "version": version["number"],
        "state": MessageState.QUEUED.value,
    }
