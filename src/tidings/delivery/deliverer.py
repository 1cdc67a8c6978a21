"""One delivery round: claim due messages, render them, send them per channel, record outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from tidings.channels.adapters import THROTTLED, Accepted, ChannelAdapter, OutboundMessage
from tidings.channels.email.css import inline_template
from tidings.channels.email.mime import html_to_text
from tidings.clock import utcnow
from tidings.content.engine import RenderingError
from tidings.content.schemas import Content, EmailContent, parse_content
from tidings.content.service import content_field, render_content, template_variables
from tidings.delivery import queue, sqlite_queue
from tidings.delivery.queue import ClaimedMessage, Outcomes
from tidings.delivery.state import ExclusionReason
from tidings.errors import InvalidInput
from tidings.operations.metrics import metrics_of
from tidings.rules.enforcement import Exclusion, Hold
from tidings.runtime import Runtime
from tidings.tracking.rewrite import Tracker
from tidings.tracking.tokens import TrackingTokens
from tidings.unsubscribe.tokens import UnsubscribeTokens
from tidings.vocabulary import Category, Channel

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_seconds: float

    def delay(self, attempts: int, retry_after: float | None) -> float | None:
        """Seconds until the next try, or None when the message has had its last try.

        Full jitter spreads the retries of a provider outage over the whole window instead of
        sending them back in waves; a provider's Retry-After is a floor.
        """
        if attempts >= self.max_attempts:
            return None
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (attempts - 1))
        delay = random.uniform(0, ceiling)
        return max(delay, retry_after) if retry_after is not None else delay


@dataclass
class _Bucket:
    rate: float
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """Per campaign token buckets (burst of one second), for `schedule.rate_per_second`."""

    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def wait(self, campaign_id: str, rate: int | None) -> float:
        """0 when a message may go now, else seconds until a token is free (and none taken)."""
        if not rate:
            return 0.0
        now = time.monotonic()
        bucket = self.buckets.get(campaign_id)
        if bucket is None or bucket.rate != rate:
            bucket = self.buckets[campaign_id] = _Bucket(rate, float(rate), now)
        bucket.tokens = min(bucket.rate, bucket.tokens + (now - bucket.updated) * bucket.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / bucket.rate


MAX_CACHED_VERSIONS = 1000
# Marks a proof's subject in the tester's mailbox.
PROOF_SUBJECT_PREFIX = "[Proof] "
# Messages rendered between two turns of the event loop (a message takes ~0.1 ms).
RENDER_SLICE = 16


class Deliverer:
    """Moves due messages out through the channel adapters; one instance per worker."""

    def __init__(self, runtime: Runtime, adapters: Mapping[Channel, ChannelAdapter]) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.adapters = adapters
        self.batch_size = settings.delivery_batch_size
        self.lease = timedelta(seconds=settings.delivery_lease_seconds)
        self.retries = RetryPolicy(
            settings.max_attempts, settings.retry_base_seconds, settings.retry_max_seconds
        )
        self.rates = RateLimiter()
        self.unset_consent = settings.unset_consent
        self.max_lease_expiries = settings.delivery_max_lease_expiries
        self.unsubscribe_tokens = UnsubscribeTokens(runtime.secret_key)
        self.tracker = Tracker(TrackingTokens(runtime.secret_key), settings.resolved_public_url)
        # Parsed content by (version, whether its HTML has its CSS inlined already).
        self._contents: dict[tuple[str, bool], tuple[Content, bool]] = {}
        # Delivery latency and provider errors; None when no application or worker exposes
        # metrics (a test, a CLI command).
        self.metrics = metrics_of(runtime.db)

    async def run_once(self) -> int:
        """Delivers one batch; returns how many messages it claimed (0: nothing was due)."""
        claimed = await self.claim(self.batch_size)
        if claimed:
            await self.deliver(claimed)
        return len(claimed)

    async def claim(self, limit: int) -> list[ClaimedMessage]:
        """Takes up to `limit` due messages; they stay this worker's until their lease ends.

        On SQLite the claim runs right here in the event loop's thread when the database is
        free, on the bare sqlite3 connection: handing it to a thread cost more in turns at the
        GIL with the loop, and SQLAlchemy's row handling more, than SQLite's own work. When
        the database is busy, and on PostgreSQL (whose round trips must not hold the loop up),
        it runs in a thread.
        """
        db, now = self.runtime.db, utcnow()
        if db.is_sqlite:
            claimed: list[ClaimedMessage] | None = None
            try:
                with db.sqlite_write_at_once() as connection:
                    if connection is not None:
                        claimed = sqlite_queue.claim(
                            connection,
                            db.engine.dialect,
                            now,
                            limit,
                            self.lease,
                            self.unset_consent,
                            self.max_lease_expiries,
                        )
            except sqlite3.Error:
                claimed = None  # rolled back: the thread's path tries again
            if claimed is not None:
                return claimed
        return await asyncio.to_thread(
            queue.claim, db, now, limit, self.lease, self.unset_consent, self.max_lease_expiries
        )

    async def record(self, outcomes: Outcomes) -> None:
        """Writes a batch's outcomes; in the loop on SQLite when the database is free, as
        `claim` does."""
        db, now = self.runtime.db, utcnow()
        if db.is_sqlite:
            try:
                with db.sqlite_write_at_once() as connection:
                    if connection is not None:
                        sqlite_queue.record(connection, db.engine.dialect, outcomes, now)
                        return
            except (sqlite3.Error, sa.exc.DBAPIError):
                # Rolled back (an error of a listener's statement comes through SQLAlchemy):
                # the thread's path tries again, and its events count instead.
                pass
        await asyncio.to_thread(queue.record, db, outcomes, now)

    async def deliver(self, claimed: list[ClaimedMessage]) -> None:
        """Renders, sends and records claimed messages, renewing their lease meanwhile."""
        renewal = asyncio.create_task(self._renew_leases([message.id for message in claimed]))
        try:
            await self._deliver(claimed)
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal

    async def _renew_leases(self, message_ids: list[str]) -> None:
        """Every third of the lease, pushes the batch's lease a whole lease ahead. The crash
        bound (only messages in flight at a crash may go twice) holds only if a live worker
        never loses its messages to another: a batch may take longer than a lease when a relay
        stalls. A renewal that fails (the database away) is tried again at the next turn."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(
                    queue.renew_leases, self.runtime.db, message_ids, utcnow() + self.lease
                )
            except Exception:
                logger.warning("could not renew the lease of a batch in flight", exc_info=True)

    async def _deliver(self, claimed: list[ClaimedMessage]) -> None:
        outcomes = Outcomes()
        ready = await self._prepare(claimed, outcomes, utcnow())
        attempts = {message.id: message.attempts for message in claimed}
        sends = [
            self._send(channel, batch, attempts, outcomes)
            for channel, batch in ready.items()
            if batch
        ]
        await asyncio.gather(*sends)
        sent = {message_id for message_id, _ in outcomes.sent}
        outcomes.uncounted.extend(
            key for message in claimed if message.id not in sent for key in message.counted
        )
        await self.record(outcomes)

    async def _prepare(
        self, claimed: list[ClaimedMessage], outcomes: Outcomes, now: datetime
    ) -> dict[Channel, list[OutboundMessage]]:
        """Renders in the event loop's thread (a thread of its own cost more in turns at the
        GIL than it saved), RENDER_SLICE messages at a time so that the loop's other work (the
        API, the sessions of the batch before) goes on in between."""
        ready: dict[Channel, list[OutboundMessage]] = {}
        unsubscribe_base = f"{self.runtime.settings.resolved_public_url}/unsubscribe/"
        mint = self.unsubscribe_tokens.mint
        for index, message in enumerate(claimed):
            if index and not index % RENDER_SLICE:
                await asyncio.sleep(0)
            verdict = message.verdict
            if isinstance(verdict, Exclusion):
                outcomes.excluded.append((message.id, verdict.reason, verdict.detail))
                continue
            if isinstance(verdict, Hold):
                outcomes.held.append((message.id, verdict.until))
                continue
            if not message.address:  # the verdict has said so already; for the type checker
                outcomes.excluded.append((message.id, ExclusionReason.NO_ADDRESS.value, None))
                continue
            wait = self.rates.wait(message.campaign_id, message.rate_per_second)
            if wait:
                outcomes.postponed.append((message.id, now + timedelta(seconds=wait)))
                continue
            unsubscribe_url = unsubscribe_base + mint(
                message.workspace_id, message.id, message.channel
            )
            try:
                content, css_inlined = self._content(message)
                rendered = render_content(
                    self.runtime.templates,
                    content,
                    template_variables(
                        profile=message.profile,
                        context=message.context,
                        campaign_id=message.campaign_id,
                        campaign_name=message.campaign_name,
                        unsubscribe_url=unsubscribe_url,
                    ),
                )
            except RenderingError as exc:
                error = f"{content_field(exc.template)}: {exc.problem.message}"
                outcomes.failed.append((message.id, ExclusionReason.RENDERING_ERROR.value, error))
                continue
            except InvalidInput as exc:
                outcomes.failed.append(
                    (message.id, ExclusionReason.RENDERING_ERROR.value, exc.detail)
                )
                continue
            if message.is_proof and rendered.get("subject"):
                rendered["subject"] = PROOF_SUBJECT_PREFIX + rendered["subject"]
            tracking = message.settings or {}
            if message.channel == Channel.EMAIL and (
                tracking.get("click_tracking") or tracking.get("open_tracking")
            ):
                # The HTML part only: the plain-text part keeps its links as written, so one
                # derived from the HTML is derived before the links are rewritten.
                if not rendered.get("text") and rendered.get("html"):
                    rendered["text"] = html_to_text(rendered["html"])
                rendered["html"] = self.tracker.apply(
                    rendered["html"] or "",
                    message.workspace_id,
                    message.id,
                    clicks=bool(tracking.get("click_tracking")),
                    opens=bool(tracking.get("open_tracking")),
                )
            headers: dict[str, str] = {}
            if message.channel == Channel.EMAIL and message.category == Category.MARKETING:
                # RFC 2369's link and RFC 8058's one-click: mailboxes offer their own
                # unsubscribe button, which POSTs to the link without opening it.
                headers = {
                    "List-Unsubscribe": f"<{unsubscribe_url}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                }
            ready.setdefault(message.channel, []).append(
                OutboundMessage(
                    message_id=message.id,
                    to=message.address,
                    content=rendered,
                    settings=message.settings or {},
                    headers=headers,
                    css_inlined=css_inlined,
                )
            )
        return ready

    def _content(self, message: ClaimedMessage) -> tuple[Content, bool]:
        """The version's parsed content, validated once per version rather than per message:
        a version never changes once live. A proof may render a draft version, which does
        change: it neither reads nor fills the cache.

        Email HTML whose CSS the configuration wants inlined is inlined here, once per version,
        when css.inline_template can show that doing it before rendering gives what doing it
        after would (the second value says so); otherwise the adapter inlines each message."""
        inline = message.channel == Channel.EMAIL and bool(
            (message.settings or {}).get("inline_css", True)
        )
        key = (message.version_id, inline)
        cached = None if message.is_proof else self._contents.get(key)
        if cached is not None:
            return cached
        content = parse_content(message.channel, message.content)
        if content is None:
            raise InvalidInput.on("content", "the campaign version has no content")
        css_inlined = False
        if inline and not message.is_proof and isinstance(content, EmailContent) and content.html:
            html = inline_template(content.html)
            # The inlined HTML must still compile within the size limit: inlining must never
            # turn a version that renders into one that does not.
            if html is not None and self.runtime.templates.syntax_problem(html) is None:
                content, css_inlined = content.model_copy(update={"html": html}), True
        if not message.is_proof:
            if len(self._contents) >= MAX_CACHED_VERSIONS:
                self._contents.clear()
            self._contents[key] = (content, css_inlined)
        return content, css_inlined

    async def _send(
        self,
        channel: Channel,
        batch: list[OutboundMessage],
        attempts: Mapping[str, int],
        outcomes: Outcomes,
    ) -> None:
        results = await self.adapters[channel].send(batch)
        now = utcnow()
        if self.metrics is not None:
            self.metrics.observe_sends(channel.value, results, now.timestamp())
        for result in results:
            if isinstance(result, Accepted):
                outcomes.sent.append((result.message_id, result.provider_message_id))
                continue
            if result.reason == THROTTLED:
                # Not tried: the configuration's rate decides when, not the retry policy.
                wait = timedelta(seconds=result.retry_after or 1.0)
                outcomes.postponed.append((result.message_id, now + wait))
                continue
            delay = (
                self.retries.delay(attempts[result.message_id], result.retry_after)
                if result.retryable
                else None
            )
            if delay is None:
                detail = result.detail
                if result.retryable:
                    detail = f"gave up after {attempts[result.message_id]} attempts: {detail}"
                outcomes.failed.append((result.message_id, result.reason, detail))
            else:
                outcomes.retry.append(
                    (
                        result.message_id,
                        now + timedelta(seconds=delay),
                        result.reason,
                        result.detail,
                    )
                )
