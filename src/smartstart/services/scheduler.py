"""The Brain's scheduled jobs: each slot of each job runs once, whatever the workers and restarts.

Every Brain worker starts a scheduler thread; they agree through PostgreSQL alone:

- one of them leads: it holds a session-level advisory lock on a connection of its own
  (a leader that dies drops its connection, and with it the lock; another worker takes
  over at its next poll);
- the leader claims a slot by inserting its `job_runs` row: (job, slot, attempt) is
  unique, so a slot is run once even by two leaders (a lock lost with a broken
  connection) and after a restart, which finds the slot's row already there;
- a failed run is retried once, one poll later (by whichever worker leads then); a
  run whose leader died is marked failed ("interrupted") by the next leader, and
  retried the same way. A slot whose last attempt failed is reported by `/readyz`
  and `smartstart status` until a later slot of that job succeeds.

A job library was considered: APScheduler 3 keeps its jobs per process and runs each
in every worker (its shared job stores do not stop that); procrastinate needs a
worker process and a schema of its own beside the platform's Alembic-managed one. A
lock and one table do what is needed here, and `db check` keeps seeing one schema.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import psycopg
from psycopg.types.json import Jsonb

from smartstart.config import Settings

log = logging.getLogger("smartstart.scheduler")

LOCK_KEY = 0x5353_0000_4A0B  # pg_try_advisory_lock key of the leading scheduler
RUNNER = f"{socket.gethostname()}:{os.getpid()}"
MAX_ERROR = 2000  # characters of a failed run's error kept
INTERRUPTED = "interrupted: the Brain running it stopped before it finished"

JobDetails = dict[str, object]


@dataclass(frozen=True)
class Job:
    """A named job run at the slots of a cron expression (UTC); `run` raises on failure."""

    name: str
    cron: str
    run: Callable[[datetime], JobDetails]


class JobRunRow(TypedDict):
    """One attempt at one slot of a job (a `job_runs` row)."""

    job: str
    slot: datetime
    attempt: int
    startedAt: datetime
    finishedAt: datetime | None
    outcome: str  # running, ok, failed
    error: str | None
    details: dict[str, object]


_COLUMNS = 'job, slot, attempt, "startedAt", "finishedAt", outcome, error, details'


def _row(values: tuple[Any, ...]) -> JobRunRow:
    job, slot, attempt, started, finished, outcome, error, details = values
    return JobRunRow(
        job=job,
        slot=slot,
        attempt=attempt,
        startedAt=started,
        finishedAt=finished,
        outcome=outcome,
        error=error,
        details=details,
    )


def latest_slot(cron: str, now: datetime) -> datetime:
    """The newest slot of cron at or before now."""
    from croniter import croniter

    # get_prev from exactly a slot's time returns the one before it.
    return croniter(cron, now + timedelta(microseconds=1)).get_prev(datetime)


def next_slot(cron: str, now: datetime) -> datetime:
    from croniter import croniter

    return croniter(cron, now).get_next(datetime)


def latest_runs(conn: psycopg.Connection[Any]) -> list[JobRunRow]:
    """Each job's latest attempt."""
    rows = conn.execute(
        f"SELECT DISTINCT ON (job) {_COLUMNS} FROM job_runs ORDER BY job, slot DESC, attempt DESC"
    ).fetchall()
    return [_row(r) for r in rows]


def recent_runs(conn: psycopg.Connection[Any], job: str, limit: int = 10) -> list[JobRunRow]:
    """A job's latest attempts, newest first."""
    rows = conn.execute(
        f'SELECT {_COLUMNS} FROM job_runs WHERE job = %s ORDER BY "startedAt" DESC, id DESC'
        " LIMIT %s",
        [job, limit],
    ).fetchall()
    return [_row(r) for r in rows]


def grace(settings: Settings) -> timedelta:
    """How late a slot may still run: at least two polls, or it could be missed."""
    return max(
        timedelta(minutes=settings.schedule_grace_minutes),
        timedelta(seconds=2 * settings.schedule_poll_seconds),
    )


def failures(
    runs: list[JobRunRow], settings: Settings, now: datetime | None = None
) -> list[JobRunRow]:
    """The latest runs that failed for good: retried already, or too late to retry."""
    now = now or datetime.now(UTC)
    return [
        r
        for r in runs
        if r["outcome"] == "failed" and (r["attempt"] >= 2 or now - r["slot"] > grace(settings))
    ]


class Scheduler:
    """One worker's scheduler: leads when it holds the lock, and then runs what is due."""

    def __init__(
        self,
        settings: Settings,
        jobs: list[Job],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.clock = clock
        self.conn: psycopg.Connection[Any] | None = None  # holds the lock while leading
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def lead(self) -> bool:
        """Whether this scheduler leads (taking the lock when it is free)."""
        if self.conn is not None and not self.conn.closed and not self.conn.broken:
            return True
        self.close()
        conn = psycopg.connect(self.settings.url_for(), autocommit=True, connect_timeout=5)
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()
            if not (row and row[0]):
                conn.close()
                return False
            # Only the leader runs jobs: a row still running belongs to a dead one.
            for job, slot, attempt in conn.execute(
                "UPDATE job_runs SET outcome = 'failed', \"finishedAt\" = now(), error = %s"
                " WHERE outcome = 'running' RETURNING job, slot, attempt",
                [INTERRUPTED],
            ).fetchall():
                log.warning("job %s slot %s attempt %d was interrupted", job, slot, attempt)
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        log.info("scheduler leading (%s)", RUNNER)
        return True

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def tick(self) -> list[JobRunRow]:
        """Run whatever is due now, if this scheduler leads; the attempts it made."""
        if not self.lead():
            return []
        assert self.conn is not None
        done = []
        for job in self.jobs:
            claimed = self._claim(self.conn, job)
            if claimed is not None:
                done.append(self._run(self.conn, job, *claimed))
        return done

    def _claim(self, conn: psycopg.Connection[Any], job: Job) -> tuple[int, datetime, int] | None:
        """(row id, slot, attempt) of the run of job due now, claimed; None when none is."""
        now = self.clock()
        slot = latest_slot(job.cron, now)
        if now - slot > grace(self.settings):
            return None
        attempts = conn.execute(
            "SELECT attempt, outcome FROM job_runs WHERE job = %s AND slot = %s"
            " ORDER BY attempt DESC LIMIT 1",
            [job.name, slot],
        ).fetchone()
        if attempts is None:
            attempt = 1
        elif attempts == (1, "failed"):
            attempt = 2
        else:
            return None
        row = conn.execute(
            "INSERT INTO job_runs (job, slot, attempt, runner) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (job, slot, attempt) DO NOTHING RETURNING id",
            [job.name, slot, attempt, RUNNER],
        ).fetchone()
        return None if row is None else (int(row[0]), slot, attempt)

    def _run(
        self, conn: psycopg.Connection[Any], job: Job, run_id: int, slot: datetime, attempt: int
    ) -> JobRunRow:
        log.info("job %s slot %s attempt %d started", job.name, slot.isoformat(), attempt)
        started = time.monotonic()
        details: JobDetails = {}
        error: str | None = None
        try:
            details = job.run(slot)
        except Exception as e:  # noqa: BLE001 - any failure of a job is recorded, not raised
            error = (f"{type(e).__name__}: {e}".strip())[:MAX_ERROR]
        outcome = "failed" if error else "ok"
        seconds = round(time.monotonic() - started, 3)
        row = conn.execute(
            f'UPDATE job_runs SET "finishedAt" = now(), outcome = %s, error = %s, details = %s'
            f" WHERE id = %s RETURNING {_COLUMNS}",
            [outcome, error, Jsonb({**details, "seconds": seconds}), run_id],
        ).fetchone()
        assert row is not None
        level = logging.INFO if outcome == "ok" else logging.ERROR
        log.log(
            level,
            "job %s slot %s attempt %d %s in %.1f s%s",
            job.name,
            slot.isoformat(),
            attempt,
            outcome,
            seconds,
            f": {error}" + (" (retried at the next poll)" if attempt == 1 else "") if error else "",
        )
        return _row(row)

    def loop(self) -> None:
        """Tick every poll interval until stopped; a database outage is waited out."""
        while not self.stopping.is_set():
            try:
                self.tick()
            except psycopg.Error as e:
                log.warning("scheduler: database unavailable: %s", str(e).strip()[:200])
                self.close()
            except Exception:  # a bug must not end the thread: the next poll tries again
                log.exception("scheduler: tick failed")
                self.close()
            self.stopping.wait(self.settings.schedule_poll_seconds)
        self.close()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.loop, name="scheduler", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling; a job running now is left to finish within timeout (else the
        next leader records it as interrupted)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout)
