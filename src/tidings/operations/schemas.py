"""API shapes of the operations routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: Literal["ok"]


class ReadinessOut(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, Literal["ok", "failing", "absent"]] = Field(
        description="database, migrations, worker"
    )
    details: dict[str, str] = Field(description="Why a failing check fails")
