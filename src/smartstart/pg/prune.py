"""Retention of logical backups and of the databases restores set aside.

Knows nothing of the platform: it sees backup files with manifests and databases named
`<name>_before_restore_<timestamp>`. The newest verified backup is never deleted.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg

from smartstart.pg.backup import BackupError, Listed, manifest_path
from smartstart.pg.restore import KeptDatabase, drop_database

DURATION = re.compile(r"(\d{1,6})([mhdw])")
UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `2w`, `90m` as a duration; BackupError otherwise."""
    match = DURATION.fullmatch(text.strip())
    if match is None:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise BackupError(
            f"--older-than {shown!r} is not an age: a number and a unit, m, h, d or w (30d)"
        )
    return timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


@dataclass(frozen=True)
class PruneItem:
    """One backup file or one set-aside database, and whether it goes."""

    kind: Literal["backup", "database"]
    name: str
    at: datetime
    size: int
    verified: bool
    path: Path | None
    delete: bool
    why: str


@dataclass(frozen=True)
class PrunePlan:
    items: tuple[PruneItem, ...]

    @property
    def deleted(self) -> tuple[PruneItem, ...]:
        return tuple(i for i in self.items if i.delete)


def _judge(
    entries: Sequence[tuple[str, datetime, int, bool, Path | None]],
    kind: Literal["backup", "database"],
    keep: int | None,
    older_than: timedelta | None,
    now: datetime,
) -> list[PruneItem]:
    """entries newest first; the newest verified one (backups) always stays."""
    anchor = next((e[0] for e in entries if e[3]), None) if kind == "backup" else None
    out = []
    for n, (name, at, size, verified, path) in enumerate(entries):
        if name == anchor:
            delete, why = False, "the newest verified backup"
        elif keep is not None and n < keep:
            delete, why = False, f"among the newest {keep}"
        elif older_than is not None and now - at <= older_than:
            delete, why = False, "younger than --older-than"
        else:
            delete, why = True, "older" if keep is None else f"beyond the newest {keep}"
        out.append(PruneItem(kind, name, at, size, verified, path, delete, why))
    return out


def plan_prune(
    backups: Sequence[Listed],
    databases: Sequence[KeptDatabase],
    *,
    keep: int | None,
    older_than: timedelta | None,
    now: datetime | None = None,
) -> PrunePlan:
    """What `prune` deletes: beyond the newest `keep`, and (if given) older than older_than."""
    if keep is None and older_than is None:
        raise BackupError("say what to prune: --keep N, --older-than AGE, or both")
    if keep is not None and keep < 0:
        raise BackupError(f"--keep {keep}: a count of 0 or more")
    now = now or datetime.now(UTC)
    files = [
        (
            b.path.name,
            datetime.fromisoformat(b.manifest.started_at),
            b.manifest.size,
            b.present and b.manifest.verification is not None and b.manifest.verification.ok,
            b.path,
        )
        for b in backups
    ]
    kept = [(d.name, d.kept_at, d.size, False, None) for d in databases]
    return PrunePlan(
        tuple(
            _judge(files, "backup", keep, older_than, now)
            + _judge(kept, "database", keep, older_than, now)
        )
    )


def prune(plan: PrunePlan, conn: psycopg.Connection[Any] | None) -> list[str]:
    """Delete what plan says (files, then their manifests; databases): the errors."""
    errors: list[str] = []
    for item in plan.deleted:
        try:
            if item.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    item.path.unlink()
                with contextlib.suppress(FileNotFoundError):
                    manifest_path(item.path).unlink()
            elif conn is not None:
                drop_database(conn, item.name)
        except (OSError, psycopg.Error) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            errors.append(f"{item.name}: {first}")
    return errors
