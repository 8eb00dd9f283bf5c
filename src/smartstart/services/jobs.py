"""What the Brain runs on schedule: backups (with their retention) and `cleanup all`."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import psycopg

from smartstart.config import Settings
from smartstart.domain import audit, cleanup, statshistory
from smartstart.domain.actor import Actor
from smartstart.errors import SmartStartError
from smartstart.services import scheduler
from smartstart.services.scheduler import Job, JobDetails, Scheduler

log = logging.getLogger("smartstart.scheduler")

ACTOR = Actor(label="brain:scheduler", is_operator=True)
BACKUP_NOTE = "scheduled"  # the manifest's note of a scheduled backup: retention's mark
BACKUP_ACTION = "db.backup.scheduled"


def backup_dir(settings: Settings) -> Path:
    return settings.home_dir / "backups"


def _tools(settings: Settings) -> Any:
    from smartstart.pg.backup import client_tools
    from smartstart.pg.cluster import find_bin_dir

    if settings.pg_bin is not None:
        return client_tools(settings.pg_bin, explicit=True)
    found = None
    with contextlib.suppress(SmartStartError):  # no server install: the client on PATH
        found = find_bin_dir(None)
    return client_tools(found)


def _audit(settings: Settings, action: str, **details: Any) -> None:
    with psycopg.connect(settings.url_for(), connect_timeout=5) as conn:
        audit.record(conn, ACTOR, action, resource="backup", **details)


def run_backup(settings: Settings, slot: datetime) -> JobDetails:
    """One scheduled backup (custom format, `db backup`'s defaults), audited, then retention."""
    from smartstart.pg import backup as pgb

    path = pgb.choose_path(None, backup_dir(settings), "custom", False)
    try:
        manifest = pgb.backup(
            settings.url_for(),
            path,
            _tools(settings),
            fmt="custom",
            compress=False,
            note=BACKUP_NOTE,
            who=ACTOR.label,
        )
    except Exception as e:
        with contextlib.suppress(psycopg.Error):
            _audit(settings, BACKUP_ACTION, slot=slot, outcome="failed", error=str(e)[:500])
        raise
    pruned = prune_scheduled(backup_dir(settings), settings.backup_keep)
    details: JobDetails = {
        "file": str(path),
        "size": manifest.size,
        "sha256": manifest.sha256,
        "revision": manifest.revision,
        "rows": sum(manifest.rows.values()),
        "pruned": [str(p) for p in pruned],
    }
    _audit(settings, BACKUP_ACTION, resource_id=path.name, slot=slot, outcome="ok", **details)
    return details


def prune_scheduled(directory: Path, keep: int) -> list[Path]:
    """Delete scheduled backups beyond the newest `keep` (never a manual backup, never
    the only verified one); the files deleted."""
    from smartstart.pg.backup import list_backups, manifest_path

    listed = list_backups(directory)  # newest first
    scheduled = [
        b for b in listed if b.manifest.note == BACKUP_NOTE and b.manifest.who == ACTOR.label
    ]
    verified = [
        b for b in listed if b.present and b.manifest.verification and b.manifest.verification.ok
    ]
    deleted = []
    for item in scheduled[keep:]:
        if verified == [item]:
            continue
        for p in (item.path, manifest_path(item.path)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        verified = [v for v in verified if v is not item]
        deleted.append(item.path)
        log.info("scheduled backup %s pruned (keeping %d)", item.path.name, keep)
    return deleted


def run_cleanup(settings: Settings, slot: datetime) -> JobDetails:
    """`cleanup all` with the settings' retention periods (audited by the cleanup itself)."""
    keep = cleanup.Retention(
        audit_older_than=timedelta(days=settings.cleanup_audit_days),
        inactive_for=timedelta(days=settings.cleanup_inactive_days),
        session_idle=timedelta(minutes=settings.session_idle_minutes),
    )
    with psycopg.connect(settings.url_for(), autocommit=True, connect_timeout=5) as conn:
        with conn.transaction():
            plan = cleanup.plan_cleanup(conn, cleanup.KINDS, keep)
        result = cleanup.execute(conn, ACTOR, plan)
    return {"done": dict(result.done), "batches": result.batches}


def run_stats(settings: Settings) -> JobDetails:
    """A statistics snapshot for `db stats --since`, and snapshots past retention pruned."""
    return {"snapshot": statshistory.snapshot_job(settings)}


def jobs(settings: Settings) -> list[Job]:
    """The jobs whose schedule is set."""
    out = []
    if settings.backup_schedule.strip():
        out.append(
            Job("backup", settings.backup_schedule.strip(), lambda s: run_backup(settings, s))
        )
    if settings.cleanup_schedule.strip():
        out.append(
            Job("cleanup", settings.cleanup_schedule.strip(), lambda s: run_cleanup(settings, s))
        )
    if settings.stats_snapshot_schedule.strip():
        out.append(
            Job("stats", settings.stats_snapshot_schedule.strip(), lambda s: run_stats(settings))
        )
    return out


def make_scheduler(settings: Settings) -> Scheduler:
    return Scheduler(settings, jobs(settings))


class JobStatus(TypedDict):
    """One job's line of `smartstart status`: its schedule, last attempt and next slot."""

    job: str
    schedule: str
    enabled: bool
    last_slot: str | None
    last_outcome: str | None
    attempt: int | None
    error: str | None
    failed: bool  # the last slot failed for good (also reported by /readyz)
    next_slot: str | None


def status(settings: Settings) -> list[JobStatus] | None:
    """The scheduled jobs (configured, or with runs); None when the database is unreachable."""
    try:
        with psycopg.connect(settings.url_for(), connect_timeout=3) as conn:
            exists = conn.execute("SELECT to_regclass('job_runs') IS NOT NULL").fetchone()
            runs = scheduler.latest_runs(conn) if exists and exists[0] else []
    except psycopg.Error:
        return None
    failed = {id(r) for r in scheduler.failures(runs, settings)}
    last = {r["job"]: r for r in runs}
    configured = {j.name: j.cron for j in jobs(settings)}
    now = datetime.now(UTC)
    out = []
    for name in sorted(set(configured) | set(last)):
        run = last.get(name)
        cron = configured.get(name)
        out.append(
            JobStatus(
                job=name,
                schedule=cron or "off",
                enabled=settings.scheduler_on and cron is not None,
                last_slot=run["slot"].isoformat() if run else None,
                last_outcome=run["outcome"] if run else None,
                attempt=run["attempt"] if run else None,
                error=run["error"] if run else None,
                failed=run is not None and id(run) in failed,
                next_slot=scheduler.next_slot(cron, now).isoformat()
                if cron and settings.scheduler_on
                else None,
            )
        )
    return out


def backup_runs(settings: Settings, limit: int = 10) -> list[scheduler.JobRunRow]:
    """The scheduled backups' latest attempts, newest first (none when unreachable)."""
    try:
        with psycopg.connect(settings.url_for(), connect_timeout=3) as conn:
            exists = conn.execute("SELECT to_regclass('job_runs') IS NOT NULL").fetchone()
            return scheduler.recent_runs(conn, "backup", limit) if exists and exists[0] else []
    except psycopg.Error:
        return []


def run_line(run: scheduler.JobRunRow) -> dict[str, object]:
    """A run as `db backups` shows it: when, attempt, outcome, and the file or the error."""
    return {
        "due": run["slot"].astimezone(UTC).strftime("%F %T"),
        "attempt": run["attempt"],
        "outcome": run["outcome"],
        "file or error": run["error"] or Path(str(run["details"].get("file", ""))).name,
    }
