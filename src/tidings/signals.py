"""An in-process wake-up call from whoever queues work to the worker that delivers it."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class WorkSignal:
    """Set after a commit that made messages due; the worker waits on it instead of sleeping
    out its poll interval, so a message triggered in this process leaves at once.

    Any thread may notify; waiting happens on one event loop. Other processes (a separate
    `tidings worker`) do not hear it and fall back to polling.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._pending = False

    def notify(self) -> None:
        with self._lock:
            self._pending = True
            loop, event = self._loop, self._event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> bool:
        """Waits until notified or `timeout` seconds pass; True when notified."""
        with self._lock:
            if self._pending:
                self._pending = False
                return True
            if self._event is None or self._loop is not asyncio.get_running_loop():
                self._loop, self._event = asyncio.get_running_loop(), asyncio.Event()
            event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        with self._lock:
            event.clear()
            notified, self._pending = self._pending, False
        return notified
