"""The statistics snapshots `db stats --since` compares with: a scheduled job of the Brain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from smartstart.config import Settings
from smartstart.services import jobs
from smartstart.services.scheduler import Scheduler

SLOT = datetime(2026, 11, 29, 3, 5, tzinfo=UTC)


def snapshots(settings: Settings) -> list[Any]:
    with psycopg.connect(settings.url_for()) as conn:
        return conn.execute("SELECT id FROM stats_snapshot ORDER BY id").fetchall()


def test_the_brain_snapshots_statistics_once_per_slot(db_settings: Settings) -> None:
    settings = db_settings.model_copy(
        update={"stats_snapshot_schedule": "*/5 * * * *", "schedule_grace_minutes": 10_000_000}
    )
    [stats] = [j for j in jobs.jobs(settings) if j.name == "stats"]
    assert snapshots(settings) == []
    for when in (SLOT, SLOT + timedelta(minutes=2), SLOT + timedelta(minutes=5)):
        s = Scheduler(settings, [stats], clock=lambda when=when: when)  # type: ignore[misc]
        try:
            s.tick()
        finally:
            s.close()
    # Slots 03:05 and 03:10; the tick at 03:07 found 03:05 done.
    assert len(snapshots(settings)) == 2
    with psycopg.connect(settings.url_for()) as conn:
        runs = conn.execute(
            "SELECT slot, outcome FROM job_runs WHERE job = 'stats' ORDER BY slot"
        ).fetchall()
    assert [r[0] for r in runs] == [SLOT, SLOT + timedelta(minutes=5)]
    assert [r[1] for r in runs] == ["ok", "ok"]


def test_an_empty_schedule_takes_no_snapshots(db_settings: Settings) -> None:
    settings = db_settings.model_copy(update={"stats_snapshot_schedule": ""})
    assert "stats" not in [j.name for j in jobs.jobs(settings)]
