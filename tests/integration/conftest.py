"""Fixtures shared by integration test modules."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant
from tests.integration.console_members import Members, create_members


@pytest.fixture
def members(tenant: Tenant) -> Members:
    """An admin, an editor and a viewer of the tenant's workspace, signed up for the console."""
    return create_members(tenant)
