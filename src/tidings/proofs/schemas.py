"""API shapes of proofs: whom to send one to, as whom, and what came of it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tidings.executions.schemas import RecipientIdentity


class ProofCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(
        min_length=1,
        max_length=4096,
        description="Where the proof goes: an email address, an E.164 number or a push token, "
        "as the campaign's channel takes",
    )
    profile: dict[str, Any] | None = Field(
        default=None, description="Attributes of a test profile (or give profile_identity)"
    )
    profile_identity: RecipientIdentity | None = Field(
        default=None, description="A stored profile whose attributes personalize the proof"
    )
    context: dict[str, Any] = Field(default_factory=dict)
    version: Literal["draft", "live"] | None = Field(
        default=None,
        description="The version to send; default: the newest (the draft when there is one)",
    )


class ProofAccepted(BaseModel):
    proof_id: str = Field(description="The id of the proof's message")
    message_id: str
    execution_id: str = Field(description="The proof's execution, of kind `proof`")
    version: int
    state: str
