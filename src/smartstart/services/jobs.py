"""What the Brain runs on schedule: backups (with their retention) and `cleanup all`."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from smartstart.config import Settings
from smartstart.domain import audit, cleanup
from smartstart.domain.actor import Actor
from smartstart.errors import SmartStartError
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
    return out


def scheduler(settings: Settings) -> Scheduler:
    return Scheduler(settings, jobs(settings))
