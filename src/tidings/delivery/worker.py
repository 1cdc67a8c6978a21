"""The background worker: schedules and delivery in one loop (`tidings serve`, `tidings worker`).

Each turn advances campaign schedules (scheduled -> live -> completed) at most once per poll
interval, then delivers due messages batch after batch until a batch comes back short; then
it sleeps for the poll interval. Stopping lets the batch in hand finish: nothing claimed is
dropped, and anything a kill interrupts comes back when its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Mapping

from tidings.campaigns import service as campaigns
from tidings.channels.adapters import ChannelAdapter
from tidings.channels.dev import DevSinkAdapter
from tidings.clock import utcnow
from tidings.delivery.deliverer import Deliverer
from tidings.errors import Unavailable
from tidings.runtime import Runtime
from tidings.vocabulary import Channel

log = logging.getLogger("tidings.worker")


def default_adapters(runtime: Runtime) -> dict[Channel, ChannelAdapter]:
    from tidings.channels.email.smtp import SmtpAdapter

    sink = DevSinkAdapter()
    return {
        Channel.EMAIL: SmtpAdapter(default_smtp_url=runtime.settings.smtp_url),
        Channel.SMS: sink,
        Channel.PUSH: sink,
    }


class Worker:
    def __init__(
        self, runtime: Runtime, adapters: Mapping[Channel, ChannelAdapter] | None = None
    ) -> None:
        self.runtime = runtime
        self.poll_seconds = runtime.settings.worker_poll_seconds
        self.adapters = dict(adapters) if adapters is not None else default_adapters(runtime)
        self.deliverer = Deliverer(runtime, self.adapters)
        self._last_schedules = 0.0

    def advance_schedules(self) -> dict[str, int]:
        moved = campaigns.advance_schedules(self.runtime.db, utcnow())
        if any(moved.values()):
            log.info("campaign schedules advanced: %s", moved)
        return moved

    async def turn(self) -> int:
        """One pass; returns how many messages it claimed."""
        if time.monotonic() - self._last_schedules >= self.poll_seconds:
            self._last_schedules = time.monotonic()
            await asyncio.to_thread(self.advance_schedules)
        return await self.deliverer.run_once()

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until `stop` is set, then closes the adapters' connections."""
        try:
            while not stop.is_set():
                claimed = 0
                try:
                    claimed = await self.turn()
                except Unavailable:
                    # The database is down or busy: the next turn tries again.
                    log.warning("worker turn skipped: database unavailable")
                except Exception:
                    log.exception("worker turn failed")
                if claimed < self.deliverer.batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self.poll_seconds)
        finally:
            for adapter in {id(a): a for a in self.adapters.values()}.values():
                await adapter.close()

    def run_blocking(self) -> None:
        """For `tidings worker`: runs until SIGINT or SIGTERM."""

        async def main() -> None:
            stopped = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stopped.set)
            await self.run(stopped)

        asyncio.run(main())
