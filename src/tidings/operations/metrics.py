"""Prometheus metrics of one process: message counters, queue, latencies, provider errors.

Every process (`tidings serve`, each `tidings api`, each `tidings worker`) has its own
`Metrics` with its own registry and exposes its own counters; a dashboard sums them over the
processes (`sum by (channel) (rate(tidings_messages_sent_total[5m]))`). Counters count what
this process committed: an API process counts the messages it accepted, a worker those it
sent, failed or excluded.

Message counters are fed by `count_events`, a listener of `tidings.events.announce`: the
events of a transaction are added up on its connection and reach the counters only when that
transaction commits (a rollback counts nothing). On SQLite's fast paths (a bare sqlite3
connection, `events.announce_on_sqlite`) SQLAlchemy sees no commit: the tally is kept by
connection and applied or dropped when `Database.sqlite_write_at_once` says how the
transaction ended (`db.engine.FAST_PATH_ENDS`). SQLAlchemy's `commit` event fires just before
the COMMIT itself: a COMMIT that then fails has been counted (rare: a lost connection).

Queue gauges and the webhook backlog are read from the database when scraped, at most once
per QUEUE_SAMPLE_SECONDS.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import prometheus_client
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import event

from tidings import __version__
from tidings.channels.adapters import THROTTLED, Accepted, SendOutcome
from tidings.db import Database
from tidings.db.engine import FAST_PATH_ENDS
from tidings.delivery.state import MessageState
from tidings.events import EventKind, MessageEvent
from tidings.executions.models import messages

log = logging.getLogger("tidings.metrics")

# `_created` series double the exposition and nobody alerts on them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
# Queue figures are read from the database at most this often, however many scrapers ask.
QUEUE_SAMPLE_SECONDS = 5.0
# Queue depths are counted exactly up to this many messages per state (a count walks the
# index, and a scrape must not walk millions of entries); beyond, PostgreSQL's planner
# estimate (as fresh as the table's last ANALYZE) or, on SQLite, this figure.
QUEUE_DEPTH_CAP = 10_000
# A trigger is accepted in milliseconds; delivery takes from milliseconds (a relay on the
# same network) to hours (retries, rate limits).
TRIGGER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    21600.0,
    86400.0,
)
PENDING_STATES = (MessageState.QUEUED, MessageState.DEFERRED, MessageState.SENDING)
CLAIMABLE_STATES = (MessageState.QUEUED, MessageState.DEFERRED)

# (kind, channel, reason) -> events, kept on a connection until its transaction ends.
Tally = dict[tuple[str, str, str | None], int]
_PENDING = "tidings_metrics_pending"


class LoopHistogram(Collector):
    """A histogram observed from one thread (the event loop's) without a lock: the trigger
    path's observation costs a tenth of prometheus_client's. Scrapes from another thread may
    see an observation half-made (the count without the sum): a scrape is a sample anyway."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def collect(self) -> Iterator[Metric]:
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            buckets.append((_bound_text(bound), cumulative))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self.total
        )


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Metrics:
    """The metrics of one process (one application, one worker), in a registry of their own
    so that several applications in one process (tests) keep apart."""

    def __init__(self, db: Database | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        registry = self.registry
        self.accepted = Counter(
            "tidings_messages_accepted",
            "Messages created (accepted triggers, audience fan-out)",
            ["channel"],
            registry=registry,
        )
        self.sent = Counter(
            "tidings_messages_sent",
            "Messages a provider accepted",
            ["channel"],
            registry=registry,
        )
        self.failed = Counter(
            "tidings_messages_failed",
            "Messages that failed for good (permanent error or retries exhausted)",
            ["channel", "reason"],
            registry=registry,
        )
        self.excluded = Counter(
            "tidings_messages_excluded",
            "Messages not sent because a rule or missing data said no",
            ["channel", "reason"],
            registry=registry,
        )
        self.retried = Counter(
            "tidings_messages_retried",
            "Transient failures queued again",
            ["channel", "reason"],
            registry=registry,
        )
        self.cancelled = Counter(
            "tidings_messages_cancelled",
            "Pending messages cancelled",
            ["channel", "reason"],
            registry=registry,
        )
        self.delivered = Counter(
            "tidings_messages_delivered",
            "Messages the provider reported delivered",
            ["channel"],
            registry=registry,
        )
        self.bounced = Counter(
            "tidings_messages_bounced",
            "Messages that bounced (kind: hard, soft)",
            ["channel", "kind"],
            registry=registry,
        )
        self.provider_errors = Counter(
            "tidings_provider_errors",
            "Sends a provider refused (kind: transient, permanent, throttled)",
            ["channel", "kind"],
            registry=registry,
        )
        self.trigger_latency = LoopHistogram(
            "tidings_trigger_latency_seconds",
            "Time from a trigger request's arrival to its answer (accepted durably)",
            TRIGGER_BUCKETS,
        )
        registry.register(self.trigger_latency)
        self.delivery_latency = Histogram(
            "tidings_delivery_latency_seconds",
            "Time from a message's creation to the provider's acceptance",
            ["channel"],
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        info = Gauge("tidings_build_info", "Version running", ["version"], registry=registry)
        info.labels(__version__).set(1)
        self._by_kind: dict[str, tuple[Counter, bool]] = {
            EventKind.TARGETED.value: (self.accepted, False),
            EventKind.SENT.value: (self.sent, False),
            EventKind.DELIVERED.value: (self.delivered, False),
            EventKind.FAILED.value: (self.failed, True),
            EventKind.EXCLUDED.value: (self.excluded, True),
            EventKind.RETRIED.value: (self.retried, True),
            EventKind.CANCELLED.value: (self.cancelled, True),
            EventKind.BOUNCED.value: (self.bounced, True),
        }
        if db is not None:
            registry.register(QueueCollector(db))

    def apply(self, tally: Tally) -> None:
        """Adds a committed transaction's events to the counters."""
        for (kind, channel, reason), count in tally.items():
            found = self._by_kind.get(kind)
            if found is None:
                continue  # opens, clicks, ...: the reports count those
            counter, with_reason = found
            if with_reason:
                counter.labels(channel, reason or "unknown").inc(count)
            else:
                counter.labels(channel).inc(count)

    def observe_sends(self, channel: str, results: Iterable[SendOutcome], now: float) -> None:
        """One adapter call's results at `now` (epoch seconds): delivery latency of each
        message the provider accepted (its creation time is in its UUIDv7 id), provider
        errors of the others by kind."""
        histogram = self.delivery_latency.labels(channel)
        errors: dict[str, int] = {}
        for result in results:
            if isinstance(result, Accepted):
                histogram.observe(max(0.0, now - created_at(result.message_id)))
                continue
            kind = (
                "throttled"
                if result.reason == THROTTLED
                else "transient"
                if result.retryable
                else "permanent"
            )
            errors[kind] = errors.get(kind, 0) + 1
        for kind, count in errors.items():
            self.provider_errors.labels(channel, kind).inc(count)

    def exposition(self) -> bytes:
        """The text exposition; blocking (the queue gauges may read the database)."""
        return prometheus_client.generate_latest(self.registry)


def serve_metrics(metrics: Metrics, host: str, port: int) -> None:
    """Serves `metrics` on http://host:port/metrics from a daemon thread (`tidings worker`,
    which has no HTTP server of its own). Unauthenticated: bind it to a private address."""
    prometheus_client.start_http_server(port, addr=host, registry=metrics.registry)


def created_at(message_id: str) -> float:
    """Epoch seconds at which a UUIDv7 id was minted (its first 48 bits, in milliseconds)."""
    return int(message_id[:8] + message_id[9:13], 16) / 1000.0


# ---------------------------------------------------------------- binding to a database

_bound: weakref.WeakKeyDictionary[sa.Engine, Metrics] = weakref.WeakKeyDictionary()
_bind_lock = threading.Lock()
# The metrics of this process's SQLite database, for events announced on a bare sqlite3
# connection (the fast paths of Database.sqlite_write_at_once), and their tallies by
# connection until the loop's next turn (after their COMMIT or ROLLBACK).
_sqlite_metrics: Metrics | None = None
_sqlite_pending: dict[int, Tally] = {}


def bind(db: Database, metrics: Metrics) -> None:
    """Makes `metrics` count what commits on `db` (the last one bound wins: one per process)."""
    global _sqlite_metrics
    engine = db.engine
    with _bind_lock:
        if engine not in _bound:
            event.listen(engine, "commit", _on_commit)
            event.listen(engine, "rollback", _on_rollback)
        _bound[engine] = metrics
        if db.is_sqlite:
            _sqlite_metrics = metrics


def metrics_of(db: Database) -> Metrics | None:
    """The metrics bound to `db`, if any (none: a CLI command, a test without an app)."""
    return _bound.get(db.engine)


def count_events(conn: sa.Connection, events: Sequence[MessageEvent]) -> None:
    """An `announce` listener: tallies the events on the connection until it commits."""
    if conn.engine in _bound:
        tally: Tally = conn.info.setdefault(_PENDING, {})
    elif _sqlite_metrics is not None and conn.dialect.name == "sqlite":
        tally = _view_tally(conn)
    else:
        return
    for message_event in events:
        if message_event.is_proof:
            continue
        key = (message_event.kind.value, message_event.channel, message_event.reason)
        tally[key] = tally.get(key, 0) + 1


def count_events_on_sqlite(connection: sqlite3.Connection, events: Sequence[MessageEvent]) -> bool:
    """`count_events` inside a transaction on a bare sqlite3 connection (events.announce_on_
    sqlite): tallied by connection until `_fast_path_ended` hears how it ended."""
    if _sqlite_metrics is None:
        return True
    tally = _sqlite_pending.setdefault(id(connection), {})
    for message_event in events:
        if message_event.is_proof:
            continue
        key = (message_event.kind.value, message_event.channel, message_event.reason)
        tally[key] = tally.get(key, 0) + 1
    return True


def _on_commit(conn: sa.Connection) -> None:
    tally = conn.info.pop(_PENDING, None)
    if tally:
        metrics = _bound.get(conn.engine)
        if metrics is not None:
            metrics.apply(tally)


def _on_rollback(conn: sa.Connection) -> None:
    # A connection lost mid-transaction (the database restarted) is invalidated, and reading
    # its info raises: its tally goes with it, as the pool clears a reconnected entry's info.
    # Raising here would hide the lost connection's error (a 503) behind a 500.
    with contextlib.suppress(sa.exc.SQLAlchemyError):
        conn.info.pop(_PENDING, None)


def _view_tally(conn: sa.Connection) -> Tally:
    """The tally of a transaction on a bare sqlite3 connection (events.announce_on_sqlite),
    until `_fast_path_ended` hears how it ended."""
    return _sqlite_pending.setdefault(id(conn.connection.dbapi_connection), {})


def _fast_path_ended(connection: sqlite3.Connection, committed: bool) -> None:
    tally = _sqlite_pending.pop(id(connection), None)
    if committed and tally and _sqlite_metrics is not None:
        _sqlite_metrics.apply(tally)


FAST_PATH_ENDS.append(_fast_path_ended)


# ---------------------------------------------------------------- scrape-time gauges


@dataclass(frozen=True)
class QueueSample:
    depth: dict[str, int]
    oldest_due_age: float
    webhook_backlog: int | None


class QueueCollector(Collector):
    """Queue depth, the age of the oldest due message and the webhook backlog, read with
    indexed queries (ix_messages_state_due) and kept for QUEUE_SAMPLE_SECONDS."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._sample: QueueSample | None = None
        self._taken = float("-inf")

    def collect(self) -> Iterator[Metric]:
        sample = self.sample()
        if sample is None:
            return
        depth = GaugeMetricFamily(
            "tidings_queue_depth",
            f"Messages waiting or in flight, by state (exact up to {QUEUE_DEPTH_CAP}, then "
            "estimated on PostgreSQL)",
            labels=["state"],
        )
        for state, count in sample.depth.items():
            depth.add_metric([state], count)
        yield depth
        yield GaugeMetricFamily(
            "tidings_queue_oldest_due_age_seconds",
            "How long the oldest message due now has waited past its due time (0: none)",
            value=sample.oldest_due_age,
        )
        if sample.webhook_backlog is not None:
            yield GaugeMetricFamily(
                "tidings_webhook_backlog",
                "Feedback webhook deliveries waiting to be sent",
                value=sample.webhook_backlog,
            )

    def sample(self) -> QueueSample | None:
        with self._lock:
            if time.monotonic() - self._taken < QUEUE_SAMPLE_SECONDS:
                return self._sample
            try:
                self._sample = read_queue(self._db, datetime.now(UTC))
            except Exception as exc:
                # A scrape still answers the counters; the gauges are missing until the
                # database answers again.
                log.warning("queue metrics not read: %s", type(exc).__name__)
                self._sample = None
            self._taken = time.monotonic()
            return self._sample


def read_queue(db: Database, now: datetime) -> QueueSample:
    """One small query per state: each is a range of the (state, due_at) index."""
    depth: dict[str, int] = {}
    oldest: datetime | None = None
    with db.read() as conn:
        for state in PENDING_STATES:
            # Ordered by due_at so that the planner walks the index (a sequential scan with a
            # limit looked cheaper to it, and read ten times the rows).
            capped = (
                sa.select(messages.c.due_at)
                .where(messages.c.state == state.value)
                .order_by(messages.c.due_at)
                .limit(QUEUE_DEPTH_CAP)
                .subquery()
            )
            count: int = conn.execute(sa.select(sa.func.count()).select_from(capped)).scalar_one()
            if count >= QUEUE_DEPTH_CAP and conn.dialect.name == "postgresql":
                count = max(count, _estimated_rows(conn, state.value))
            depth[state.value] = count
        for state in CLAIMABLE_STATES:
            first_due = conn.execute(
                sa.select(sa.func.min(messages.c.due_at)).where(
                    messages.c.state == state.value, messages.c.due_at <= now
                )
            ).scalar_one()
            if first_due is not None and (oldest is None or first_due < oldest):
                oldest = first_due
        backlog = _webhook_backlog(conn)
    age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return QueueSample(depth=depth, oldest_due_age=age, webhook_backlog=backlog)


def _estimated_rows(conn: sa.Connection, state: str) -> int:
    """The planner's estimate of the messages in `state` (from the column's statistics)."""
    query = sa.select(sa.literal(1)).where(messages.c.state == state)
    sql = query.compile(conn, compile_kwargs={"literal_binds": True})
    plan = conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {sql}")).scalar_one()
    return int(plan[0]["Plan"]["Plan Rows"])


def _webhook_backlog(conn: sa.Connection) -> int | None:
    # Looked up by name: the feedback webhooks' package reads its own table.
    try:
        service = importlib.import_module("tidings.webhooks.service")
    except ImportError:
        return None
    pending_count = getattr(service, "pending_count", None)
    return None if pending_count is None else int(pending_count(conn))
