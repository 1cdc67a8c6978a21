"""The background worker: schedules and delivery in one loop (`tidings serve`, `tidings worker`).

It advances campaign schedules (scheduled -> live -> completed) at most once per poll interval,
fans out audience executions whose time has come (when notified, or once per poll interval),
and claims due messages whenever there may be some: when the API of this process says it has
just committed messages due now (`Runtime.work`), once per poll interval otherwise (retries,
deferred messages, other processes' triggers), and again at once after a claim that came back
full. Claims are half a batch each and two may be in flight at once, so the next one is
claimed and rendered while the previous one is on the wire: the SMTP connections never wait
for the renderer, and no message waits for a poll interval.

At most TIDINGS_DELIVERY_BATCH_SIZE messages are claimed and not yet recorded at any time,
the same bound as when a worker held one whole batch: it is how many a crash can leave
`sending`, to be sent again after their lease (see delivery/state.py). Stopping lets the
claims in hand finish: nothing claimed is dropped, and anything a kill interrupts comes back
when its lease expires.
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
from tidings.channels.dev import DevMailRoute, DevSinkAdapter
from tidings.clock import utcnow
from tidings.delivery.deliverer import Deliverer
from tidings.delivery.queue import ClaimedMessage
from tidings.errors import Unavailable
from tidings.executions import fanout
from tidings.operations.retention import RetentionJob
from tidings.reports import service as reports
from tidings.rules import service as rules
from tidings.runtime import Runtime
from tidings.vocabulary import Channel
from tidings.webhooks.client import AddressPolicy, HttpWebhookSender, WebhookSender
from tidings.webhooks.service import WebhookDispatcher, dispatch_lease

# Pages of audience members one fan-out task queues before the loop looks again (a page is
# 1,000 messages in one transaction, ~70 ms).
FAN_OUT_PAGES_PER_TURN = 2
# Counters of ended periods are no longer read; forgetting them now and then is enough.
COUNTER_PURGE_SECONDS = 600.0

log = logging.getLogger("tidings.worker")


def default_adapters(
    runtime: Runtime, dev_sink: DevSinkAdapter | None = None
) -> dict[Channel, ChannelAdapter]:
    """The real adapters. Given `dev_sink` (the dev mailbox's), the dev provider's messages go
    there, and so do emails naming no SMTP relay when TIDINGS_SMTP_URL names none either."""
    from tidings.channels.email.smtp import SmtpAdapter
    from tidings.channels.push.adapter import DatabaseInvalidTokens, PushAdapter
    from tidings.channels.sms.adapter import DatabaseSegmentRecorder, SmsAdapter

    sink = dev_sink or DevSinkAdapter()
    email: ChannelAdapter = SmtpAdapter(default_smtp_url=runtime.settings.smtp_url)
    if dev_sink is not None and not runtime.settings.smtp_url:
        email = DevMailRoute(email, dev_sink)
    return {
        Channel.EMAIL: email,
        Channel.SMS: SmsAdapter(
            public_url=runtime.settings.resolved_public_url,
            twilio_api_base=runtime.settings.twilio_api_base,
            recorder=DatabaseSegmentRecorder(runtime.db),
            dev=sink,
        ),
        Channel.PUSH: PushAdapter(
            fcm_api_base=runtime.settings.fcm_api_base,
            apns_api_base=runtime.settings.apns_api_base,
            invalid_tokens=DatabaseInvalidTokens(runtime.db),
            dev=sink,
        ),
    }


class Worker:
    def __init__(
        self,
        runtime: Runtime,
        adapters: Mapping[Channel, ChannelAdapter] | None = None,
        webhook_sender: WebhookSender | None = None,
    ) -> None:
        self.runtime = runtime
        self.poll_seconds = runtime.settings.worker_poll_seconds
        self.adapters = dict(adapters) if adapters is not None else default_adapters(runtime)
        self.deliverer = Deliverer(runtime, self.adapters)
        self.webhooks = WebhookDispatcher(
            runtime.db,
            webhook_sender
            or HttpWebhookSender(
                AddressPolicy.from_settings(runtime.settings),
                timeout_seconds=runtime.settings.webhook_timeout_seconds,
            ),
            lease=dispatch_lease(runtime.settings.webhook_timeout_seconds),
        )
        self._last_schedules = 0.0
        self._last_purge = 0.0
        # TIDINGS_RETENTION_DAYS, and expired idempotency keys: beside the loop, in a thread.
        self.retention = RetentionJob(runtime.db, runtime.settings.retention_days)

    def advance_schedules(self) -> dict[str, int]:
        moved = campaigns.advance_schedules(self.runtime.db, utcnow())
        if any(moved.values()):
            log.info("campaign schedules advanced: %s", moved)
        if time.monotonic() - self._last_purge >= COUNTER_PURGE_SECONDS:
            self._last_purge = time.monotonic()
            purged = rules.purge_counters(self.runtime.db, utcnow())
            if purged:
                log.info("frequency counters of ended periods purged: %d", purged)
            folded = reports.compact(self.runtime.db, utcnow())
            if folded:
                log.info("report counters folded from minutes into days: %d", folded)
        return moved

    async def turn(self) -> int:
        """One pass, one whole batch at a time; returns how many messages it claimed."""
        await self._advance_schedules()
        await self._fan_out()
        return await self.deliverer.run_once()

    async def _fan_out(self) -> int:
        """Queues pages of due audience executions; returns how many messages it queued."""
        queued = await asyncio.to_thread(
            fanout.advance, self.runtime.db, utcnow(), budget=FAN_OUT_PAGES_PER_TURN
        )
        if queued:
            log.info("audience executions: %d messages queued", queued)
        return queued

    async def _fan_out_logged(self) -> int:
        try:
            return await self._fan_out()
        except Unavailable:
            log.warning("audience executions not advanced: database unavailable")
        except Exception:
            log.exception("fanning out audience executions failed")
        return 0

    async def _advance_schedules(self) -> None:
        if time.monotonic() - self._last_schedules >= self.poll_seconds:
            self._last_schedules = time.monotonic()
            await asyncio.to_thread(self.advance_schedules)

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until `stop` is set, then finishes its claims and closes the adapters'
        connections."""
        capacity = self.deliverer.batch_size
        chunk = max(1, capacity // 2)
        wake = asyncio.Event()
        in_flight: dict[asyncio.Task[None], int] = {}
        held = 0
        # Whether due messages may be waiting: set by a notification or a poll, and after a
        # claim that got all it asked for. Whether an audience execution may be due: set by a
        # notification or a poll, and after a fan-out that queued anything.
        due = True
        fan_out_due = True
        # The fan-out runs beside the claims, not before each of them: in the loop's way, a
        # 1,000,000-member execution held delivery to one claim per ten pages queued.
        fan_out: asyncio.Task[int] | None = None
        # A message claimed alone as a suspect (queue.isolate_suspects): nothing else is claimed
        # until it is done, so that if it kills this worker it takes no other message along;
        # once it is done, the next claim need not wait for a poll.
        suspect: asyncio.Task[None] | None = None

        def finished(task: asyncio.Task[None]) -> None:
            nonlocal held, due, suspect
            held -= in_flight.pop(task)
            if task is suspect:
                suspect = None
                due = True
            wake.set()

        def fanned_out(task: asyncio.Task[int]) -> None:
            nonlocal fan_out, due, fan_out_due
            fan_out = None
            if not task.cancelled() and task.result():
                due = fan_out_due = True
            wake.set()

        async def listen() -> None:
            nonlocal due, fan_out_due
            while True:
                await self.runtime.work.wait(self.poll_seconds)
                due = fan_out_due = True
                wake.set()

        async def stopped() -> None:
            await stop.wait()
            wake.set()

        helpers = [asyncio.create_task(listen()), asyncio.create_task(stopped())]
        # Feedback webhooks go out beside message delivery, never in its way.
        webhooks = asyncio.create_task(self._deliver_webhooks(stop))
        try:
            while not stop.is_set():
                try:
                    await self._advance_schedules()
                except Unavailable:
                    log.warning("schedules not advanced: database unavailable")
                except Exception:
                    log.exception("advancing schedules failed")
                self.retention.maybe_start()
                if fan_out_due and fan_out is None:
                    fan_out_due = False
                    fan_out = asyncio.create_task(self._fan_out_logged())
                    fan_out.add_done_callback(fanned_out)
                room = capacity - held
                if due and suspect is None and room > 0 and (held == 0 or room >= chunk):
                    due = False
                    limit = min(room, chunk)
                    claimed = []
                    try:
                        claimed = await self.deliverer.claim(limit)
                    except Unavailable:
                        # The database is down or busy: the next poll tries again.
                        log.warning("claim skipped: database unavailable")
                    except Exception:
                        log.exception("claiming messages failed")
                    if claimed:
                        held += len(claimed)
                        task = asyncio.create_task(self._deliver(claimed))
                        in_flight[task] = len(claimed)
                        task.add_done_callback(finished)
                        if claimed[0].claimed_alone:
                            suspect = task
                        elif len(claimed) == limit:
                            due = True
                            continue
                await wake.wait()
                wake.clear()
            if in_flight or fan_out is not None:
                await asyncio.wait([*in_flight, *([fan_out] if fan_out else [])])
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.retention.finish()
            if not stop.is_set():
                webhooks.cancel()
            await asyncio.gather(webhooks, return_exceptions=True)
            await self.webhooks.close()
            for adapter in {id(a): a for a in self.adapters.values()}.values():
                await adapter.close()

    async def _deliver_webhooks(self, stop: asyncio.Event) -> None:
        """Sends due webhook deliveries until `stop`: at once again after a full batch, else
        once per poll interval. A batch in hand when `stop` comes is finished."""
        while not stop.is_set():
            claimed = 0
            try:
                claimed = await self.webhooks.run_once()
            except Unavailable:
                log.warning("webhooks not delivered: database unavailable")
            except Exception:
                log.exception("delivering webhooks failed")
            if claimed < self.webhooks.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)

    async def _deliver(self, claimed: list[ClaimedMessage]) -> None:
        try:
            await self.deliverer.deliver(claimed)
        except Unavailable:
            # Outcomes not recorded: the messages go out again when their lease ends.
            log.warning("delivery outcomes not recorded: database unavailable")
        except Exception:
            log.exception("delivering a batch failed")

    def run_blocking(self) -> None:
        """For `tidings worker`: runs until SIGINT or SIGTERM."""

        async def main() -> None:
            stopped = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stopped.set)
            await self.run(stopped)

        asyncio.run(main())
