"""Scheduled jobs: once per slot across schedulers, workers and restarts; a failure retried once."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from smartstart.api.app import readiness
from smartstart.config import Settings
from smartstart.services import scheduler
from smartstart.services.scheduler import Job, Scheduler
from tests.api import test_server

SLOT = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
serve = test_server.serve  # the fixture: `smartstart serve` in a process of its own


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def rows(settings: Settings, job: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.url_for()) as conn:
        return conn.execute(
            "SELECT slot, attempt, outcome, error FROM job_runs WHERE job = %s"
            " ORDER BY slot, attempt",
            [job],
        ).fetchall()


def test_a_slot_runs_once_when_two_schedulers_race(db_settings: Settings) -> None:
    ran: list[datetime] = []
    start = threading.Barrier(2)

    def work(slot: datetime) -> dict[str, object]:
        ran.append(slot)
        time.sleep(0.3)  # the other scheduler ticks while this one runs
        return {"worked": True}

    job = Job("daily", "0 3 * * *", work)
    clock = at(SLOT + timedelta(minutes=2))
    a, b = Scheduler(db_settings, [job], clock=clock), Scheduler(db_settings, [job], clock=clock)
    done: list[list[scheduler.JobRunRow]] = []

    def tick(s: Scheduler) -> None:
        start.wait()
        done.append(s.tick())

    threads = [threading.Thread(target=tick, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ran == [SLOT]
    assert sorted(len(d) for d in done) == [0, 1]
    # Later polls, and a Brain restarted within the grace period, find the slot taken.
    a.tick(), b.tick()
    a.close(), b.close()
    restarted = Scheduler(db_settings, [job], clock=clock)
    assert restarted.tick() == []
    restarted.close()
    assert ran == [SLOT]
    [(slot, attempt, outcome, error)] = rows(db_settings, "daily")
    assert (slot, attempt, outcome, error) == (SLOT, 1, "ok", None)


def test_two_leaders_still_claim_a_slot_once(db_settings: Settings) -> None:
    """Two schedulers that both believe they lead (a lock lost with its connection)."""
    ran: list[datetime] = []
    job = Job("daily", "0 3 * * *", lambda slot: ran.append(slot) or {})
    clock = at(SLOT + timedelta(seconds=5))
    schedulers = [Scheduler(db_settings, [job], clock=clock) for _ in range(2)]
    for s in schedulers:  # each given a connection of its own, lock or not
        s.conn = psycopg.connect(db_settings.url_for(), autocommit=True)
    try:
        assert [len(s.tick()) for s in schedulers] == [1, 0]
    finally:
        for s in schedulers:
            s.close()
    assert ran == [SLOT]


def test_a_failing_job_is_retried_once_then_reported(db_settings: Settings) -> None:
    calls: list[datetime] = []
    # Judged by the wall clock, SLOT is long past: a wide grace keeps its retry due.
    db_settings = db_settings.model_copy(update={"schedule_grace_minutes": 10_000_000})

    def broken(slot: datetime) -> dict[str, object]:
        calls.append(slot)
        raise RuntimeError("disk full")

    s = Scheduler(db_settings, [Job("backup", "0 3 * * *", broken)], clock=at(SLOT))
    try:
        [first] = s.tick()
        assert (first["attempt"], first["outcome"]) == (1, "failed")
        assert first["error"] == "RuntimeError: disk full"
        # Not reported yet: the retry is due at the next poll.
        ok, body = readiness(db_settings)
        assert ok and body["status"] == "ready" and "jobs" not in body
        [second] = s.tick()
        assert (second["attempt"], second["outcome"]) == (2, "failed")
        assert s.tick() == []  # retried once, not again
    finally:
        s.close()
    assert calls == [SLOT, SLOT]
    ok, body = readiness(db_settings)
    assert ok and body["status"] == "degraded"
    assert body["jobs"] == [
        {
            "job": "backup",
            "slot": SLOT.isoformat(),
            "attempt": 2,
            "error": "RuntimeError: disk full",
        }
    ]
    # A later slot that succeeds clears the report.
    fixed = Scheduler(
        db_settings,
        [Job("backup", "0 3 * * *", lambda slot: {})],
        clock=at(SLOT + timedelta(days=1)),
    )
    try:
        assert [r["outcome"] for r in fixed.tick()] == ["ok"]
    finally:
        fixed.close()
    assert readiness(db_settings)[1]["status"] == "ready"


def test_a_run_interrupted_by_a_dead_brain_is_marked_and_retried(db_settings: Settings) -> None:
    with psycopg.connect(db_settings.url_for(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO job_runs (job, slot, attempt, runner) VALUES ('cleanup', %s, 1, 'gone:1')",
            [SLOT],
        )
    ran: list[datetime] = []
    s = Scheduler(
        db_settings,
        [Job("cleanup", "0 3 * * *", lambda slot: ran.append(slot) or {})],
        clock=at(SLOT + timedelta(minutes=10)),
    )
    try:
        [retry] = s.tick()
    finally:
        s.close()
    assert ran == [SLOT] and retry["attempt"] == 2 and retry["outcome"] == "ok"
    assert rows(db_settings, "cleanup") == [
        (SLOT, 1, "failed", scheduler.INTERRUPTED),
        (SLOT, 2, "ok", None),
    ]


def test_a_slot_missed_beyond_the_grace_period_is_skipped(db_settings: Settings) -> None:
    ran: list[datetime] = []
    settings = db_settings.model_copy(update={"schedule_grace_minutes": 30})
    s = Scheduler(
        settings,
        [Job("daily", "0 3 * * *", lambda slot: ran.append(slot) or {})],
        clock=at(SLOT + timedelta(hours=2)),
    )
    try:
        assert s.tick() == []
    finally:
        s.close()
    assert ran == []


def test_a_bad_cron_expression_stops_the_brain_from_starting() -> None:
    with pytest.raises(ValueError, match="SMARTSTART_CLEANUP_SCHEDULE"):
        Settings(_env_file=None, schedule_enabled=True, cleanup_schedule="every day")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="SMARTSTART_BACKUP_SCHEDULE"):
        Settings(_env_file=None, schedule_enabled=True, backup_schedule="0 3 * *\x00 *")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="SMARTSTART_STATS_SNAPSHOT_SCHEDULE"):
        Settings(_env_file=None, schedule_enabled=True, stats_snapshot_schedule="every 5 min")  # type: ignore[call-arg]
    on = Settings(_env_file=None, env="production", db_password="a real one", cookie_secure=True)  # type: ignore[call-arg]
    off = Settings(_env_file=None)  # type: ignore[call-arg]
    assert on.scheduler_on and not off.scheduler_on


def test_two_brain_workers_run_each_slot_once(
    seeded_settings: Settings, serve: Callable[..., Any]
) -> None:
    """`serve --workers 2`, `cleanup all` every 2 seconds: one run per slot, by one worker."""
    proc, base, _ = serve(
        "--workers",
        "2",
        SMARTSTART_SCHEDULE_ENABLED="true",
        SMARTSTART_SCHEDULE_POLL_SECONDS="0.2",
        SMARTSTART_CLEANUP_SCHEDULE="* * * * * */2",
        SMARTSTART_BACKUP_SCHEDULE="",
    )
    try:
        deadline = time.monotonic() + 60
        while len({r[0] for r in rows(seeded_settings, "cleanup") if r[2] == "ok"}) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "3 slots did not run"
            time.sleep(0.2)
        body = httpx.get(f"{base}/readyz", timeout=5).json()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    runs = rows(seeded_settings, "cleanup")
    slots = [r[0] for r in runs]
    assert len(slots) == len(set(slots)), runs  # one attempt per slot, no retry needed
    assert all(r[1:] == (1, "ok", None) for r in runs if r[2] != "running"), runs
    assert body["status"] == "ready" and body["workers"]["alive"] == 2
    with psycopg.connect(seeded_settings.url_for()) as conn:
        audited = conn.execute(
            "SELECT count(*) FROM audit_log"
            " WHERE action = 'cleanup.run' AND actor = 'brain:scheduler'"
        ).fetchone()
    assert audited is not None and audited[0] >= 3
