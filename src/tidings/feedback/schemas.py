"""API shapes of the provider webhooks: what a delivery of events was turned into."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FeedbackReceipt(BaseModel):
    """How many events a delivery carried and what became of them."""

    received: int = Field(description="Events read from the delivery that concern Tidings")
    applied: int = Field(description="Events applied to a message of Tidings")
    duplicate: int = Field(description="Events applied before (a provider's retry)")
    unmatched: int = Field(description="Events about no message of Tidings: ignored")
    confirmed: bool = Field(
        default=False, description="An SNS subscription confirmation was confirmed"
    )
