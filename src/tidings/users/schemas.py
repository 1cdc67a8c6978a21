"""Shapes of console users: roles and the signed-in session."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a member may do in one workspace; each role can do everything of the one before."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """The signed-in user of one console request."""

    user_id: str
    email: str
    workspace_id: str
    workspace_name: str
    role: Role
    csrf_token: str
