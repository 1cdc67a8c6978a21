"""The soak harness, short: kill -9 and SMTP faults under load, nothing lost (`make soak`: long)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.postgres import PostgresCluster
from tests.support.soak import SoakConfig, SoakReport, run_soak

pytestmark = pytest.mark.e2e
MESSAGES = 2_000
# Paced so that the triggers span several kills: API processes die mid-call too.
RATE = 150.0
FAULT_RATE = 0.05


def _check(report: SoakReport) -> None:
    print(report.summary())
    assert report.problems() == []
    assert report.accepted == MESSAGES
    assert report.lost == 0
    assert report.duplicated <= report.duplicate_bound
    # The run tested something: processes died and the relay misbehaved.
    assert sum(report.kills.values()) >= 2
    assert sum(report.faults.values()) > 0


def test_soak_on_sqlite_serve(tmp_path: Path):
    report = run_soak(
        SoakConfig(
            backend="sqlite",
            messages=MESSAGES,
            rate=RATE,
            kill_interval=4.0,
            min_kills=2,
            fault_rate=FAULT_RATE,
        ),
        tmp_path,
    )
    _check(report)
    assert report.kills["serve"] >= 2
    assert report.worker_kills == report.kills["serve"]


def test_soak_on_postgresql_two_apis_three_workers(
    tmp_path: Path, postgres_cluster: PostgresCluster
):
    report = run_soak(
        SoakConfig(
            backend="postgresql",
            messages=MESSAGES,
            apis=2,
            workers=3,
            rate=RATE,
            kill_interval=4.0,
            min_kills=3,
            fault_rate=FAULT_RATE,
            database_url=postgres_cluster.create_database(f"soak_{tmp_path.name[-20:]}"),
        ),
        tmp_path,
    )
    _check(report)
