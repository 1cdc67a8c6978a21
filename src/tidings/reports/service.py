"""Reports of campaigns and executions, read from the counters the ledger keeps, and message
search.

A campaign's report (and an audience execution's) reads its counter rows: a few per minute of
activity in the last two days and per day before, however many messages there are. A unitary
execution (at most 20 messages) keeps no counters of its own for what its messages' rows say:
its report is read from those rows and their opens and clicks.

Every targeted message is in one bucket: excluded, failed and cancelled count moves into those
states; `sent` is what was sent less what was reported delivered or bounced since; `delivered`
what was delivered less its late bounces; `bounced` the hard bounces; `pending` the rest (which
is what is queued, in flight or held). Opens, clicks, soft bounces, unsubscribes, complaints and
retries are counted beside the buckets.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tidings.campaigns.models import campaigns
from tidings.clock import utcnow
from tidings.db import Database
from tidings.delivery.state import MessageState
from tidings.errors import InvalidInput, NotFound
from tidings.executions.models import executions, messages
from tidings.pagination import keyset_page
from tidings.reports.ledger import DAY, MINUTE, add
from tidings.reports.models import report_counters, report_links
from tidings.reports.schemas import (
    Bounces,
    Buckets,
    CampaignReport,
    Clicks,
    Counts,
    ExecutionReport,
    LinkClicks,
    SeriesPoint,
    UniqueAndTotal,
    VersionReport,
)
from tidings.tracking.models import message_events

# The series answers per minute this far back, per day before.
MINUTE_SERIES = timedelta(hours=24)
# The worker folds minute counters older than this into day counters.
COMPACT_AFTER = timedelta(hours=48)
COMPACT_BATCH = 5000

# (metric, detail) -> count
Tally = dict[tuple[str, str], int]


# ---------------------------------------------------------------- reports


def campaign_report(
    db: Database,
    workspace_id: str,
    campaign_id: str,
    version_id: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> CampaignReport:
    """The campaign's counts (of one version when `version_id` is given), per version, and
    over time (the series only between `since` and `until` when given)."""
    _check_range(since, until)
    with db.read() as conn:
        found = conn.execute(
            sa.select(campaigns.c.id).where(
                campaigns.c.id == campaign_id, campaigns.c.workspace_id == workspace_id
            )
        ).first()
        if found is None:
            raise NotFound("no such campaign in this workspace")
        scope = [
            report_counters.c.workspace_id == workspace_id,
            report_counters.c.campaign_id == campaign_id,
            report_counters.c.execution_id == "",
        ]
        if version_id is not None:
            scope.append(report_counters.c.version_id == version_id)
        totals = conn.execute(
            sa.select(
                report_counters.c.version_id,
                report_counters.c.metric,
                report_counters.c.detail,
                _SUM,
            )
            .where(*scope)
            .group_by(
                report_counters.c.version_id, report_counters.c.metric, report_counters.c.detail
            )
        ).all()
        points = _points(conn, scope, since, until)
        links = _links(conn, workspace_id, campaign_id, version_id)
    by_version: dict[str, Tally] = {}
    total: Tally = {}
    for version, metric, detail, count in totals:
        key = (metric, detail)
        tally = by_version.setdefault(version, {})
        tally[key] = tally.get(key, 0) + count
        total[key] = total.get(key, 0) + count
    return CampaignReport(
        campaign_id=campaign_id,
        **counts_of(total, _merged_links(links)).model_dump(),
        versions=[
            VersionReport(
                version_id=version,
                **counts_of(tally, links.get(version, {})).model_dump(),
            )
            for version, tally in sorted(by_version.items())
        ],
        series=series_of(points, now or utcnow(), since, until),
    )


def _check_range(since: datetime | None, until: datetime | None) -> None:
    for field, value in (("since", since), ("until", until)):
        if value is not None and value.utcoffset() is None:
            raise InvalidInput.on(field, "give the time with its zone (e.g. 2026-11-23T17:00:00Z)")
    if since is not None and until is not None and until <= since:
        raise InvalidInput.on("until", "must be after since")


# Counters are added up by the database: a report reads a row per metric and detail, and per
# metric and minute (or day) for the series, not every counter row.
_SUM = sa.cast(sa.func.sum(report_counters.c.count), sa.BigInteger()).label("n")


def _points(
    conn: sa.Connection,
    scope: list[sa.ColumnElement[bool]],
    since: datetime | None,
    until: datetime | None,
) -> list[tuple[str, datetime, str, int]]:
    """(period, bucket start, metric, count) of the counters in `scope`, details added up;
    roughly bounded by `since` and `until` (series_of bounds them exactly)."""
    query = sa.select(
        report_counters.c.period,
        report_counters.c.bucket_start,
        report_counters.c.metric,
        _SUM,
    ).where(*scope)
    if since is not None:
        # A minute bucket may still land in the day `since` falls in.
        query = query.where(report_counters.c.bucket_start >= since - timedelta(days=1))
    if until is not None:
        query = query.where(report_counters.c.bucket_start < until)
    rows = conn.execute(
        query.group_by(
            report_counters.c.period, report_counters.c.bucket_start, report_counters.c.metric
        )
    )
    return [(period, start, metric, count) for period, start, metric, count in rows]


def execution_report(
    db: Database,
    workspace_id: str,
    execution_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> ExecutionReport:
    """An execution's counts and series: from its counters (an audience execution) or from its
    messages (a unitary one)."""
    _check_range(since, until)
    with db.read() as conn:
        execution = conn.execute(
            sa.select(
                executions.c.id,
                executions.c.campaign_id,
                executions.c.version_id,
                executions.c.kind,
            ).where(executions.c.id == execution_id, executions.c.workspace_id == workspace_id)
        ).first()
        if execution is None:
            raise NotFound("no such execution in this workspace")
        scope = [
            report_counters.c.workspace_id == workspace_id,
            report_counters.c.campaign_id == execution.campaign_id,
            report_counters.c.execution_id == execution_id,
        ]
        totals = conn.execute(
            sa.select(report_counters.c.metric, report_counters.c.detail, _SUM)
            .where(*scope)
            .group_by(report_counters.c.metric, report_counters.c.detail)
        ).all()
        points = _points(conn, scope, since, until)
        tally: Tally = {(metric, detail): count for metric, detail, count in totals}
        if execution.kind != "audience":
            late = tally.get(("late_bounced", ""), 0)
            from_messages, message_points = _unitary_tally(conn, execution_id, late)
            tally.update(from_messages)
            points.extend(message_points)
        links = _links(conn, workspace_id, execution.campaign_id, execution.version_id)
    return ExecutionReport(
        execution_id=execution_id,
        campaign_id=execution.campaign_id,
        version_id=execution.version_id,
        kind=execution.kind,
        **counts_of(tally, links.get(execution.version_id, {})).model_dump(),
        series=series_of(points, now or utcnow(), since, until),
    )


def _unitary_tally(
    conn: sa.Connection, execution_id: str, late_bounced: int
) -> tuple[Tally, list[tuple[str, datetime, str, int]]]:
    """What a unitary execution's messages say, as the counters would: states and reasons,
    opens and clicks; and their times for the series."""
    tally: Tally = {}
    points: list[tuple[str, datetime, str, int]] = []

    def count(metric: str, detail: str = "", by: int = 1) -> None:
        tally[(metric, detail)] = tally.get((metric, detail), 0) + by

    rows = conn.execute(
        sa.select(
            messages.c.id,
            messages.c.state,
            messages.c.reason,
            messages.c.created_at,
            messages.c.sent_at,
        ).where(messages.c.execution_id == execution_id, messages.c.is_proof.is_(sa.false()))
    ).all()
    for row in rows:
        state = row.state
        count("targeted")
        points.append((MINUTE, _minute(row.created_at), "targeted", 1))
        if row.sent_at is not None:
            points.append((MINUTE, _minute(row.sent_at), "sent", 1))
        if state in (MessageState.SENT, MessageState.DELIVERED, MessageState.BOUNCED):
            count("sent")
        if state == MessageState.DELIVERED:
            count("delivered")
        elif state == MessageState.BOUNCED:
            count("bounced", "hard")
        elif state in (MessageState.EXCLUDED, MessageState.FAILED, MessageState.CANCELLED):
            count(state, row.reason or "")
    # A late bounce was delivered first (its counter is kept per execution).
    count("delivered", by=late_bounced)
    ids = [row.id for row in rows]
    if ids:
        events = conn.execute(
            sa.select(
                message_events.c.message_id,
                message_events.c.kind,
                message_events.c.link_index,
                message_events.c.occurred_at,
            )
            .where(message_events.c.message_id.in_(ids))
            .order_by(message_events.c.occurred_at)
        ).all()
        opened: set[str] = set()
        clickers: set[str] = set()
        clicked: set[tuple[str, int | None]] = set()
        for event in events:
            minute = _minute(event.occurred_at)
            if event.kind == "open":
                count("opened")
                points.append((MINUTE, minute, "opened", 1))
                if event.message_id not in opened:
                    opened.add(event.message_id)
                    count("opened_unique")
            else:
                link = "" if event.link_index is None else str(event.link_index)
                count("clicked", link)
                points.append((MINUTE, minute, "clicked", 1))
                if (event.message_id, event.link_index) not in clicked:
                    clicked.add((event.message_id, event.link_index))
                    count("clicked_unique", link)
                if event.message_id not in clickers:
                    clickers.add(event.message_id)
                    count("clickers")
    return tally, points


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _links(
    conn: sa.Connection, workspace_id: str, campaign_id: str, version_id: str | None
) -> dict[str, dict[int, str]]:
    query = sa.select(report_links).where(
        report_links.c.workspace_id == workspace_id, report_links.c.campaign_id == campaign_id
    )
    if version_id is not None:
        query = query.where(report_links.c.version_id == version_id)
    links: dict[str, dict[int, str]] = {}
    for row in conn.execute(query):
        links.setdefault(row.version_id, {})[row.link_index] = row.url
    return links


def _merged_links(links: Mapping[str, Mapping[int, str]]) -> dict[int, str]:
    merged: dict[int, str] = {}
    for _, by_index in sorted(links.items()):
        merged.update(by_index)
    return merged


def _by_detail(tally: Tally, metric: str) -> dict[str, int]:
    return {
        detail: count for (name, detail), count in sorted(tally.items()) if name == metric and count
    }


def counts_of(tally: Tally, links: Mapping[int, str]) -> Counts:
    """The report's numbers from counters added up by (metric, detail)."""

    def total(metric: str) -> int:
        return sum(count for (name, _), count in tally.items() if name == metric)

    targeted = total("targeted")
    excluded = _by_detail(tally, "excluded")
    failed = _by_detail(tally, "failed")
    cancelled = _by_detail(tally, "cancelled")
    sent, delivered, hard = total("sent"), total("delivered"), total("bounced")
    late = total("late_bounced")
    buckets = {
        "excluded": sum(excluded.values()),
        "failed": sum(failed.values()),
        "cancelled": sum(cancelled.values()),
        # Bounces come after sent (a delivery report is only for what was sent).
        "sent": sent - delivered - (hard - late),
        "delivered": delivered - late,
        "bounced": hard,
    }
    pending = targeted - sum(buckets.values())
    clicked = _by_detail(tally, "clicked")
    unique_clicks = _by_detail(tally, "clicked_unique")
    return Counts(
        targeted=targeted,
        buckets=Buckets(pending=pending, **buckets, total=pending + sum(buckets.values())),
        excluded_by_reason=excluded,
        failed_by_reason=failed,
        cancelled_by_reason=cancelled,
        ever_sent=sent,
        bounced=Bounces(hard=hard, soft=total("soft_bounced"), late=late),
        opened=UniqueAndTotal(unique=total("opened_unique"), total=total("opened")),
        clicked=Clicks(
            unique=total("clickers"),
            total=sum(clicked.values()),
            links=[
                LinkClicks(
                    index=int(index),
                    url=links.get(int(index)),
                    unique=unique_clicks.get(index, 0),
                    total=count,
                )
                for index, count in sorted(
                    clicked.items(), key=lambda item: int(item[0]) if item[0] else -1
                )
                if index
            ],
        ),
        unsubscribed=total("unsubscribed"),
        complained=total("complained"),
        retried=total("retried"),
    )


def series_of(
    points: Iterable[tuple[str, datetime, str, int]],
    now: datetime,
    since: datetime | None,
    until: datetime | None,
) -> list[SeriesPoint]:
    """Counts per metric per minute over the last 24 hours, per day before; `points` are
    (period, bucket start, metric, count)."""
    recent = now - MINUTE_SERIES
    buckets: dict[tuple[datetime, str], dict[str, int]] = {}
    for period, start, metric, count in points:
        if period == MINUTE and start >= recent:
            key = (start, "minute")
        else:
            key = (start.replace(hour=0, minute=0, second=0, microsecond=0), "day")
        if (since is not None and key[0] < since) or (until is not None and key[0] >= until):
            continue
        counts = buckets.setdefault(key, {})
        counts[metric] = counts.get(metric, 0) + count
    return [
        SeriesPoint(start=start, period=period, counts=dict(sorted(counts.items())))
        for (start, period), counts in sorted(buckets.items())
    ]


# ---------------------------------------------------------------- CSV

CSV_COLUMNS = ("version_id", "period", "start", "metric", "detail", "count")


def report_csv(report: CampaignReport | ExecutionReport) -> str:
    """The report as CSV, one number a row (CSV_COLUMNS): totals (period `total`, and for a
    campaign each version's), then the series."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    scopes: list[tuple[str, Counts]] = [("", report)]
    if isinstance(report, CampaignReport):
        scopes += [(version.version_id, version) for version in report.versions]
    for version_id, counts in scopes:
        for metric, detail, value in _flat(counts):
            writer.writerow((version_id, "total", "", metric, detail, value))
    for point in report.series:
        for metric, value in point.counts.items():
            writer.writerow(("", point.period, point.start.isoformat(), metric, "", value))
    return out.getvalue()


def _flat(counts: Counts) -> list[tuple[str, str, int]]:
    rows: list[tuple[str, str, int]] = [("targeted", "", counts.targeted)]
    rows += [(f"bucket_{name}", "", value) for name, value in counts.buckets.model_dump().items()]
    for metric, by_reason in (
        ("excluded", counts.excluded_by_reason),
        ("failed", counts.failed_by_reason),
        ("cancelled", counts.cancelled_by_reason),
    ):
        rows += [(metric, reason, value) for reason, value in by_reason.items()]
    rows += [
        ("ever_sent", "", counts.ever_sent),
        ("bounced", "hard", counts.bounced.hard),
        ("bounced", "soft", counts.bounced.soft),
        ("bounced", "late", counts.bounced.late),
        ("opened", "unique", counts.opened.unique),
        ("opened", "total", counts.opened.total),
        ("clicked", "unique", counts.clicked.unique),
        ("clicked", "total", counts.clicked.total),
    ]
    for link in counts.clicked.links:
        rows += [
            ("link_clicked_unique", str(link.index), link.unique),
            ("link_clicked_total", str(link.index), link.total),
        ]
    rows += [
        ("unsubscribed", "", counts.unsubscribed),
        ("complained", "", counts.complained),
        ("retried", "", counts.retried),
    ]
    return rows


# ---------------------------------------------------------------- message search

SEARCH_KEYS = ("recipient", "request_id", "execution_id")


def search_messages(
    db: Database,
    workspace_id: str,
    *,
    recipient: str | None = None,
    request_id: str | None = None,
    execution_id: str | None = None,
    campaign_id: str | None = None,
    state: str | None = None,
    cursor: str | None = None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """The workspace's messages matching every filter given, in id order (keyset pages). One
    of recipient, request_id and execution_id is needed: each finds messages by an index."""
    if recipient is None and request_id is None and execution_id is None:
        raise InvalidInput.on(
            "recipient", "give recipient, request_id or execution_id (with the other filters)"
        )
    if state is not None and state not in {s.value for s in MessageState}:
        raise InvalidInput.on("state", f"must be one of {', '.join(s.value for s in MessageState)}")
    query = sa.select(messages).where(messages.c.workspace_id == workspace_id)
    if recipient is not None:
        query = query.where(messages.c.recipient_id == recipient)
    if execution_id is not None:
        query = query.where(messages.c.execution_id == execution_id)
    if request_id is not None:
        query = query.where(
            messages.c.execution_id.in_(
                sa.select(executions.c.id).where(
                    executions.c.workspace_id == workspace_id,
                    executions.c.request_id == request_id,
                )
            )
        )
    if campaign_id is not None:
        query = query.where(messages.c.campaign_id == campaign_id)
    if state is not None:
        query = query.where(messages.c.state == state)
    with db.read() as conn:
        rows, next_cursor = keyset_page(conn, query, messages.c.id, cursor, limit)
    return [
        {
            **dict(row),
            "recipient": {"namespace": row["recipient_namespace"], "id": row["recipient_id"]},
        }
        for row in rows
    ], next_cursor


# ---------------------------------------------------------------- compaction


def compact(db: Database, now: datetime, batch: int = COMPACT_BATCH, max_batches: int = 20) -> int:
    """Folds minute counters older than COMPACT_AFTER into day counters, `batch` rows a
    transaction (so the write lock is never held long), up to `max_batches`; returns how many
    minute rows it folded."""
    folded = 0
    for _ in range(max_batches):
        done = _compact_batch(db, now, batch)
        folded += done
        if done < batch:
            break
    return folded


def _compact_batch(db: Database, now: datetime, batch: int) -> int:
    cutoff = (now - COMPACT_AFTER).replace(second=0, microsecond=0)
    key_columns = [
        report_counters.c.workspace_id,
        report_counters.c.campaign_id,
        report_counters.c.execution_id,
        report_counters.c.version_id,
        report_counters.c.period,
        report_counters.c.bucket_start,
        report_counters.c.metric,
        report_counters.c.detail,
    ]
    with db.write() as conn:
        rows = conn.execute(
            sa.select(*key_columns, report_counters.c.count.label("n"))
            .where(report_counters.c.period == MINUTE, report_counters.c.bucket_start < cutoff)
            .order_by(report_counters.c.period, report_counters.c.bucket_start)
            .limit(batch)
            .with_for_update()
        ).all()
        if not rows:
            return 0
        days: dict[Any, int] = {}
        for row in rows:
            day = row.bucket_start.astimezone(UTC).replace(hour=0, minute=0)
            key = (*row[:4], DAY, day, row.metric, row.detail)
            days[key] = days.get(key, 0) + row.n
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            conn.execute(
                report_counters.delete().where(
                    sa.tuple_(*key_columns).in_([tuple(row[:8]) for row in chunk])
                )
            )
        add(conn, days)
    return len(rows)
