"""The message state machine: every allowed move is listed here and nowhere else.

    queued ──claim──▶ sending ──▶ sent ──▶ delivered ──▶ bounced (a late bounce)
      ▲                  │          └────▶ bounced
      └──── retry ───────┤
    deferred ──claim─────┤──▶ failed      (permanent error, or retries exhausted)
                         ├──▶ excluded    (a rule or missing data said no: reason code kept)
                         └──▶ deferred    (quiet hours: due again later)
    queued / deferred ──cancel──▶ cancelled

A `sending` row whose lease expired (its worker died) goes back to `queued`: that message may
be sent twice, and only messages in flight at a crash can be.
"""

from __future__ import annotations

from enum import StrEnum

from tidings.errors import InvalidTransition


class MessageState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    EXCLUDED = "excluded"
    DEFERRED = "deferred"
    FAILED = "failed"
    CANCELLED = "cancelled"


M = MessageState
MESSAGE_TRANSITIONS: dict[MessageState, frozenset[MessageState]] = {
    M.QUEUED: frozenset({M.SENDING, M.CANCELLED}),
    M.DEFERRED: frozenset({M.SENDING, M.CANCELLED}),
    M.SENDING: frozenset({M.SENT, M.QUEUED, M.FAILED, M.EXCLUDED, M.DEFERRED}),
    M.SENT: frozenset({M.DELIVERED, M.BOUNCED}),
    M.DELIVERED: frozenset({M.BOUNCED}),
    M.BOUNCED: frozenset(),
    M.EXCLUDED: frozenset(),
    M.FAILED: frozenset(),
    M.CANCELLED: frozenset(),
}

# States a worker may claim, and states after which nothing more happens on our side.
CLAIMABLE = frozenset({M.QUEUED, M.DEFERRED})
TERMINAL = frozenset({M.SENT, M.DELIVERED, M.BOUNCED, M.EXCLUDED, M.FAILED, M.CANCELLED})


def check_message_move(current: MessageState, target: MessageState) -> MessageState:
    if target not in MESSAGE_TRANSITIONS[current]:
        raise InvalidTransition(f"a {current} message cannot become {target}")
    return target


class ExclusionReason(StrEnum):
    """Why a message was not sent, as stored: stable codes, never free text (docs/api.md
    lists them with the rules matrix)."""

    NO_CONSENT = "no_consent"
    SUPPRESSED_ADDRESS = "suppressed_address"
    SUPPRESSED_DOMAIN = "suppressed_domain"
    FREQUENCY_CAPPED = "frequency_capped"
    QUIET_HOURS_DISCARD = "quiet_hours_discard"
    # Held by quiet hours (action queue) past the give-up time.
    QUIET_HOURS_EXPIRED = "quiet_hours_expired"
    NO_ADDRESS = "no_address"
    MALFORMED_ADDRESS = "malformed_address"
    UNKNOWN_PROFILE = "unknown_profile"
    RENDERING_ERROR = "rendering_error"
    DISPATCH_ERROR = "dispatch_error"
    # Its lease ran out more times than TIDINGS_DELIVERY_MAX_LEASE_EXPIRIES: each worker that
    # took it died (e.g. a template that blows up on this recipient's data), so it is not
    # handed to another.
    WORKER_CRASHED = "worker_crashed"
    CAMPAIGN_NOT_LIVE = "campaign_not_live"


# The reason a deferred message carries while quiet hours hold it (not an exclusion).
QUIET_HOURS_HELD = "quiet_hours"
