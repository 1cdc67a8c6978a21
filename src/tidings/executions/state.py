"""The execution state machine: every allowed move is listed here and nowhere else.

unitary:   accepted                          (its messages are queued with the execution)
audience:  scheduled ──fire──▶ fanning_out ──▶ accepted    (every member's message queued)
               │                   └────────▶ failed      (the campaign stopped, the
               ├──────────────────────────────▶ failed     audience is gone, or a page
                                                            failed on an error of its own)
               └──cancel──▶ cancelled
unitary, execute_at in the future: accepted ──cancel──▶ cancelled (its queued messages too)
proof:     accepted                          (its one message, marked is_proof, queued with it)
"""

from __future__ import annotations

from enum import StrEnum

from tidings.errors import InvalidTransition


class ExecutionKind(StrEnum):
    UNITARY = "unitary"
    AUDIENCE = "audience"
    # One message to a tester (POST /v1/campaigns/{id}/proofs), accepted like a unitary one.
    PROOF = "proof"


class ExecutionStatus(StrEnum):
    SCHEDULED = "scheduled"
    FANNING_OUT = "fanning_out"
    ACCEPTED = "accepted"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = ExecutionStatus
EXECUTION_TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    S.SCHEDULED: frozenset({S.FANNING_OUT, S.ACCEPTED, S.FAILED, S.CANCELLED}),
    S.FANNING_OUT: frozenset({S.ACCEPTED, S.FAILED}),
    S.ACCEPTED: frozenset({S.CANCELLED}),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}

# Audience executions the fan-out works on once their time has come.
FANNING = frozenset({S.SCHEDULED, S.FANNING_OUT})


def check_execution_move(current: ExecutionStatus, target: ExecutionStatus) -> ExecutionStatus:
    if target not in EXECUTION_TRANSITIONS[current]:
        raise InvalidTransition(f"a {current} execution cannot become {target}")
    return target
