"""Console users of a test workspace, one per role."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from tests.conftest import Tenant
from tidings.clock import utcnow
from tidings.users import service as users
from tidings.users.schemas import Role

PASSWORD = "correct horse battery"


@dataclass
class Members:
    """The email addresses of an admin, an editor and a viewer of the workspace."""

    admin: str
    editor: str
    viewer: str


def create_members(tenant: Tenant) -> Members:
    emails = {}
    for role in Role:
        email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        users.create_user(tenant.runtime.db, email, PASSWORD, tenant.workspace_id, role, utcnow())
        emails[role.value] = email
    return Members(**emails)
