"""What an import's progress hook sees: the report as it will be once a batch commits, counting
the rows of a batch applied row by row too, and the share of the file a job has read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tidings.profiles import import_jobs
from tidings.profiles.imports import ImportReport, _after, _Outcome


def test_a_report_after_a_batch_counts_it_and_leaves_the_report_as_it_was():
    report = ImportReport(created=3, updated=1)
    report.reject(9, "bad")
    outcome = _Outcome(created=2, unchanged=4, rejected=[(12, "worse"), (11, "also")])
    after = report.after(outcome, lines=20)
    assert (after.created, after.updated, after.unchanged, after.lines) == (5, 1, 4, 20)
    assert after.rejected_total == 3
    assert [row["line"] for row in after.rejected] == [9, 11, 12]
    assert (report.created, report.rejected_total, len(report.rejected)) == (3, 1, 1)


def test_a_row_applied_alone_shows_the_rows_of_its_batch_before_it():
    seen: list[_Outcome] = []

    def hook(conn: Any, outcome: _Outcome) -> None:
        seen.append(outcome)

    before = _Outcome(created=2, rejected=[(3, "no identity")])
    _after(hook, before)(None, _Outcome(updated=1))  # type: ignore[arg-type]
    [both] = seen
    assert (both.created, both.updated, both.rejected) == (2, 1, [(3, "no identity")])
    assert (before.updated, len(seen)) == (0, 1)


def _job(state: str, read: int, total: int | None) -> dict[str, Any]:
    return {
        "state": state,
        "bytes_read": read,
        "bytes_total": total,
        "updated_at": datetime.now(UTC),
    }


def test_percent_is_the_share_read_and_100_only_once_succeeded():
    assert import_jobs.percent(_job("running", 50, 200)) == 25
    assert import_jobs.percent(_job("running", 200, 200)) == 99
    assert import_jobs.percent(_job("interrupted", 30, 120)) == 25
    assert import_jobs.percent(_job("queued", 0, None)) == 0
    assert import_jobs.percent(_job("succeeded", 10, 200)) == 100
