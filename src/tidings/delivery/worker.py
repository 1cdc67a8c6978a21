"""The background worker: periodic jobs run in one loop, in `tidings serve` or `tidings worker`.

Today its one job moves campaigns along their schedule (scheduled -> live -> completed); the
execution issue adds message claiming to the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from tidings.campaigns import service as campaigns
from tidings.clock import utcnow
from tidings.errors import Unavailable
from tidings.runtime import Runtime

log = logging.getLogger("tidings.worker")


class Worker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.poll_seconds = runtime.settings.worker_poll_seconds
        self.last_tick_at: float | None = None

    def run_once(self) -> dict[str, int]:
        moved = campaigns.advance_schedules(self.runtime.db, utcnow())
        if any(moved.values()):
            log.info("campaign schedules advanced: %s", moved)
        return moved

    def _tick(self) -> None:
        try:
            self.run_once()
        except Unavailable:
            # The database is down or busy: the next tick tries again.
            log.warning("worker tick skipped: database unavailable")
        except Exception:
            log.exception("worker tick failed")

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until `stop` is set; the blocking database work goes to a thread."""
        while not stop.is_set():
            await asyncio.to_thread(self._tick)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_seconds)

    def run_blocking(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._tick()
            stop.wait(self.poll_seconds)
