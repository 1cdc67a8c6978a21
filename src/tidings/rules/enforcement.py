"""The rules a claimed message meets before it is rendered, decided in the claim's transaction.

The order is fixed: an address at all, a well-formed one, marketing consent, the suppression
list, quiet hours, and last the frequency caps, so that a message stopped by an earlier rule
never spends a recipient's cap. Which rule applies to which category is the rules matrix in
docs/api.md: consent, quiet hours and caps are for marketing only; the suppression list stops
both (a transactional email configuration may let spam-complaint suppressions through).
Proofs (messages marked `is_proof`) meet the rules of transactional messages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from tidings.delivery.state import ExclusionReason
from tidings.rules.counters import CounterKey, Counters
from tidings.rules.policy import Moment, WorkspaceRules, quiet_verdict
from tidings.suppressions.service import blocks
from tidings.vocabulary import E164_PATTERN, Category, Channel

if TYPE_CHECKING:
    from tidings.delivery.queue import ClaimedMessage


@dataclass(frozen=True, slots=True)
class Exclusion:
    """The message is not sent: a stable reason code, and a detail for people."""

    reason: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """Quiet hours hold the message until `until`; it is claimed again then."""

    until: datetime


Verdict = Exclusion | Hold


def _malformed(channel: Channel, address: str) -> bool:
    if channel is Channel.EMAIL:
        local, at, domain = address.rpartition("@")
        return not (at and local and "." in domain) or any(c.isspace() for c in address)
    if channel is Channel.SMS:
        return E164_PATTERN.match(address) is None
    return False


def _consent_refuses(message: ClaimedMessage, unset_default: str) -> bool:
    # Out always refuses; unset (or no stored profile) as the workspace's policy says.
    if message.consent == "out":
        return True
    return message.consent != "in" and (message.unset_consent or unset_default) == "deny"


def _allows_complaints(message: ClaimedMessage) -> bool:
    settings = message.settings
    return (
        message.channel is Channel.EMAIL
        and settings is not None
        and settings.get("allow_complaint_suppressed") is True
    )


def _meets_audience_rules(message: ClaimedMessage) -> bool:
    """Consent, quiet hours and caps: for marketing sent to an audience. A proof goes to a
    tester who asked for it and meets them as transactional messages do; the suppression
    list still stops it."""
    return message.category is Category.MARKETING and not message.is_proof


def verdict_before_caps(
    message: ClaimedMessage, rules: WorkspaceRules | None, moment: Moment, unset_default: str
) -> Verdict | None:
    """Every rule but the caps, which need counters; no I/O."""
    address = message.address
    if not address:
        return Exclusion(ExclusionReason.NO_ADDRESS.value)
    if _malformed(message.channel, address):
        return Exclusion(ExclusionReason.MALFORMED_ADDRESS.value)
    marketing = message.category is Category.MARKETING
    audience_rules = _meets_audience_rules(message)
    if audience_rules and _consent_refuses(message, unset_default):
        return Exclusion(ExclusionReason.NO_CONSENT.value)
    match = message.suppression
    if match is not None and blocks(
        match, message.category, not marketing and _allows_complaints(message)
    ):
        return Exclusion(match.reason_code, f"{match.type} ({match.source})")
    if not audience_rules or rules is None:
        return None
    quiet_hours = rules.for_campaign(message.rule_set_ids).quiet_hours
    if not quiet_hours:
        return None
    held = quiet_verdict(
        quiet_hours,
        message.channel.value,
        message.timezone,
        rules.timezone,
        moment,
    )
    if held is None:
        return None
    if held.discard:
        return Exclusion(ExclusionReason.QUIET_HOURS_DISCARD.value)
    if held.expired:
        return Exclusion(
            ExclusionReason.QUIET_HOURS_EXPIRED.value,
            f"quiet hours would hold it until {held.until.isoformat()}",
        )
    return Hold(held.until)


def enforce(
    claimed: Sequence[ClaimedMessage],
    rules: Mapping[str, WorkspaceRules],
    counters: Counters,
    now: datetime,
    unset_default: str,
) -> list[ClaimedMessage]:
    """The claimed messages, each with its verdict, or with the counters it moved when it may
    be sent (given back by the record when it is not sent after all)."""
    moment = Moment(now)
    to_count: list[tuple[ClaimedMessage, WorkspaceRules, list[CounterKey]]] = []
    for message in claimed:
        workspace_rules = rules.get(message.workspace_id)
        verdict = verdict_before_caps(message, workspace_rules, moment, unset_default)
        message.verdict, message.counted = verdict, ()
        if verdict is not None:
            continue
        if (
            workspace_rules is not None
            and _meets_audience_rules(message)
            and workspace_rules.counters.get(message.channel.value)
        ):
            to_count.append((message, workspace_rules, _keys(message, workspace_rules, moment)))
    if to_count:
        # Every counter of the batch is taken at once, in CounterKey order (the same order in
        # every worker, so concurrent claims never deadlock on their row locks); the messages
        # then count in memory, in the order they were claimed (by due time).
        counters.prefetch([key for _, _, keys in to_count for key in keys])
        for message, workspace_rules, keys in to_count:
            _count(
                message, workspace_rules.for_campaign(message.rule_set_ids).limits, keys, counters
            )
        counters.flush()
    return list(claimed)


# The longest recipient a counter keeps as is; a longer address (a push token) is hashed.
_MAX_RECIPIENT = 320


def _recipient(message: ClaimedMessage) -> str:
    recipient = message.profile_id or message.address or ""
    if len(recipient) > _MAX_RECIPIENT:
        return "sha256:" + hashlib.sha256(recipient.encode()).hexdigest()
    return recipient


def _keys(message: ClaimedMessage, rules: WorkspaceRules, moment: Moment) -> list[CounterKey]:
    recipient = _recipient(message)
    keys = []
    for counter in rules.counters[message.channel.value]:
        start, end = moment.period(counter.period, counter.every)
        keys.append(CounterKey(recipient, counter.key, start, message.workspace_id, end))
    keys.sort()
    return keys


def _count(
    message: ClaimedMessage,
    limits: Mapping[str, int],
    keys: Sequence[CounterKey],
    counters: Counters,
) -> None:
    """Counts the message on each of its counters, or on none when one of them is at its
    cap: then it is excluded."""
    taken: list[CounterKey] = []
    for key in keys:
        count = counters.add(key)
        taken.append(key)
        limit = limits.get(key.cap_key)
        if limit is not None and count > limit:
            for counted in taken:
                counters.remove(counted)
            message.verdict = Exclusion(
                ExclusionReason.FREQUENCY_CAPPED.value, f"at most {limit} per {key.cap_key}"
            )
            return
    message.counted = tuple(taken)
