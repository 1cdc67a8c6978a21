"""A live worker keeps its claimed messages: the lease is renewed while a slow batch is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tests.conftest import Tenant
from tests.integration.test_delivery import RecordingAdapter, deliverer_for, states, trigger
from tests.integration.test_executions import live_campaign, recipient
from tidings.channels.adapters import OutboundMessage, SendOutcome


class SlowAdapter(RecordingAdapter):
    """Takes `delay` seconds per batch, as a relay stalling on every command would."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def send(self, batch: Sequence[OutboundMessage]) -> list[SendOutcome]:
        await asyncio.sleep(self.delay)
        return await super().send(batch)


def test_a_batch_slower_than_its_lease_is_not_claimed_by_another_worker(tenant: Tenant):
    campaign = live_campaign(tenant)
    execution = trigger(tenant, campaign, recipient("ada@example.com"), context={"order": {}})
    slow, other = SlowAdapter(delay=1.5), RecordingAdapter()
    # A 0.3 s lease, renewed every 0.1 s while the first worker's send takes 1.5 s.
    first = deliverer_for(tenant.runtime, slow, delivery_lease_seconds=0.3)
    second = deliverer_for(tenant.runtime, other, delivery_lease_seconds=0.3)

    async def both() -> tuple[int, int]:
        first_run = asyncio.create_task(first.run_once())
        await asyncio.sleep(0.9)  # three leases later, while the first is still sending
        claimed_by_second = await second.run_once()
        return await first_run, claimed_by_second

    claimed_by_first, claimed_by_second = asyncio.run(both())

    assert (claimed_by_first, claimed_by_second) == (1, 0)
    assert [m.to for m in slow.sent] == ["ada@example.com"] and other.sent == []
    assert states(tenant, execution)["ada@example.com"]["state"] == "sent"
