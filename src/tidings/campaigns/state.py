"""The campaign and version state machines: every allowed move is listed here and nowhere else.

    draft ──activate──▶ live ──stop──▶ stopped ──archive──▶ archived
      │                  ▲  └─complete─▶ completed ──archive──▶ archived
      └──schedule──▶ scheduled ──start──┘   (scheduled ──stop──▶ stopped)
    draft ──delete──▶ (gone)

A live or scheduled campaign is changed through a draft *version*; activating that version
replaces the live one (activate or schedule again, from live or scheduled).
"""

from __future__ import annotations

from enum import StrEnum

from tidings.errors import InvalidTransition


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    LIVE = "live"
    STOPPED = "stopped"
    COMPLETED = "completed"
    ARCHIVED = "archived"
    DELETED = "deleted"  # never stored: the rows are removed


class CampaignEvent(StrEnum):
    ACTIVATE = "activate"  # a version goes live now
    SCHEDULE = "schedule"  # a version goes live when its start_at comes
    START = "start"  # the scheduled start has come
    STOP = "stop"
    COMPLETE = "complete"  # the schedule's end has passed
    ARCHIVE = "archive"
    DELETE = "delete"


S, E = CampaignStatus, CampaignEvent
CAMPAIGN_TRANSITIONS: dict[CampaignStatus, dict[CampaignEvent, CampaignStatus]] = {
    S.DRAFT: {E.ACTIVATE: S.LIVE, E.SCHEDULE: S.SCHEDULED, E.DELETE: S.DELETED},
    S.SCHEDULED: {
        E.ACTIVATE: S.LIVE,
        E.SCHEDULE: S.SCHEDULED,
        E.START: S.LIVE,
        E.STOP: S.STOPPED,
        E.COMPLETE: S.COMPLETED,
    },
    S.LIVE: {
        E.ACTIVATE: S.LIVE,
        E.SCHEDULE: S.SCHEDULED,
        E.STOP: S.STOPPED,
        E.COMPLETE: S.COMPLETED,
    },
    S.STOPPED: {E.ARCHIVE: S.ARCHIVED},
    S.COMPLETED: {E.ARCHIVE: S.ARCHIVED},
    S.ARCHIVED: {},
    S.DELETED: {},
}

# Where authoring is allowed: in place for a draft, through a draft version otherwise.
EDITABLE = frozenset({S.DRAFT, S.SCHEDULED, S.LIVE})
# Where the execution API accepts triggers.
TRIGGERABLE = frozenset({S.LIVE})


def next_status(current: CampaignStatus, event: CampaignEvent) -> CampaignStatus:
    try:
        return CAMPAIGN_TRANSITIONS[current][event]
    except KeyError:
        allowed = ", ".join(CAMPAIGN_TRANSITIONS[current]) or "nothing"
        raise InvalidTransition(
            f"a {current} campaign cannot {event} (allowed: {allowed})"
        ) from None


class VersionState(StrEnum):
    DRAFT = "draft"
    LIVE = "live"
    SUPERSEDED = "superseded"


VERSION_TRANSITIONS: dict[VersionState, frozenset[VersionState]] = {
    VersionState.DRAFT: frozenset({VersionState.LIVE}),
    VersionState.LIVE: frozenset({VersionState.SUPERSEDED}),
    VersionState.SUPERSEDED: frozenset(),
}


def check_version_move(current: VersionState, target: VersionState) -> VersionState:
    if target not in VERSION_TRANSITIONS[current]:
        raise InvalidTransition(f"a {current} version cannot become {target}")
    return target
