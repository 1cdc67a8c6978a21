"""The campaign state machine: every (status, event) pair is either listed or refused."""

from __future__ import annotations

import itertools

import pytest

from tidings.campaigns.state import (
    CAMPAIGN_TRANSITIONS,
    CampaignEvent,
    CampaignStatus,
    VersionState,
    check_version_move,
    next_status,
)
from tidings.errors import InvalidTransition


@pytest.mark.parametrize(
    ("status", "event"), list(itertools.product(CampaignStatus, CampaignEvent))
)
def test_every_pair_is_allowed_exactly_when_listed(status, event):
    expected = CAMPAIGN_TRANSITIONS[status].get(event)
    if expected is None:
        with pytest.raises(InvalidTransition):
            next_status(status, event)
    else:
        assert next_status(status, event) is expected


@pytest.mark.parametrize(
    ("path", "end"),
    [
        (["activate", "stop", "archive"], "archived"),
        (["schedule", "start", "complete", "archive"], "archived"),
        (["schedule", "stop"], "stopped"),
        (["activate", "schedule", "start"], "live"),
        (["delete"], "deleted"),
    ],
)
def test_lifecycles(path, end):
    status = CampaignStatus.DRAFT
    for event in path:
        status = next_status(status, CampaignEvent(event))
    assert status == end


def test_terminal_states_allow_nothing_else():
    assert CAMPAIGN_TRANSITIONS[CampaignStatus.ARCHIVED] == {}
    assert CAMPAIGN_TRANSITIONS[CampaignStatus.DELETED] == {}


def test_versions_only_move_forward():
    assert check_version_move(VersionState.DRAFT, VersionState.LIVE) is VersionState.LIVE
    with pytest.raises(InvalidTransition):
        check_version_move(VersionState.SUPERSEDED, VersionState.LIVE)
    with pytest.raises(InvalidTransition):
        check_version_move(VersionState.LIVE, VersionState.DRAFT)
