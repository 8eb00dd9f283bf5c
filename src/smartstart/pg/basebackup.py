"""Physical base backups of the embedded cluster (pg_basebackup), with a manifest beside each.

A base backup is a plain data directory (`base_YYYYMMDD_HHMMSS/`) without WAL: pg_basebackup
(-X none) returns once the server has archived every segment from the backup's start to its
end, so the archive (pg.archive) holds all the WAL a restore from it reads. (-X stream would
fork a WAL-streaming child that outlives a killed backup.) It is written under a hidden
temporary name, fsynced by pg_basebackup, renamed, and its manifest (`<name>.json`) is
written last: a killed backup never leaves a directory that looks complete. Knows nothing of
users or the platform schema.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartstart.errors import SmartStartError
from smartstart.pg.archive import archiver, parse_lsn, segment_name
from smartstart.pg.backup import MANIFEST_SUFFIX, PARTIAL_MARK, _die_with_parent, _fsync_dir
from smartstart.pg.backup import _write_durably as write_durably
from smartstart.services.process import alive

if TYPE_CHECKING:
    from smartstart.pg.cluster import Cluster

KIND = "physical"


class PitrError(SmartStartError):
    code = "pitr"


@dataclass(frozen=True)
class BaseManifest:
    """What is known of one base backup, stored beside it as JSON."""

    file: str
    size: int
    sha256: str  # of pg_basebackup's own backup_manifest (which checksums every file)
    server_version: str
    system_identifier: str
    timeline: int
    segment_size: int
    start_lsn: str
    stop_lsn: str
    start_wal: str  # the first WAL segment a recovery from this backup reads
    stop_wal: str  # the segment where it becomes consistent
    started_at: str
    finished_at: str
    seconds: float
    note: str | None
    who: str
    tool: str
    revision: str | None = None
    kind: str = KIND
    version: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BaseManifest:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != 1 or data.get("kind") != KIND:
            raise ValueError("not a base backup manifest")
        return cls(**data)

    @property
    def finished(self) -> datetime:
        return datetime.fromisoformat(self.finished_at)


@dataclass(frozen=True)
class ListedBase:
    path: Path
    manifest: BaseManifest
    present: bool


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


def list_base_backups(directory: Path) -> list[ListedBase]:
    """Base backups with a manifest in directory, newest first."""
    found: list[ListedBase] = []
    if not directory.is_dir():
        return found
    for mpath in directory.glob(f"base_*{MANIFEST_SUFFIX}"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            manifest = BaseManifest.from_json(mpath.read_text())
            path = mpath.with_name(mpath.name.removesuffix(MANIFEST_SUFFIX))
            found.append(ListedBase(path, manifest, (path / "PG_VERSION").is_file()))
    found.sort(key=lambda b: (b.manifest.finished_at, b.path.name), reverse=True)
    return found


def _as_server_user(cluster: Cluster) -> dict[str, Any]:
    """Popen arguments that run a client binary as the cluster's OS user, in a clean env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_MESSAGES="C", TZ="UTC")
    kwargs: dict[str, Any] = {"env": env, "cwd": str(cluster.home)}
    if cluster.run_as is not None:
        owner = cluster._owner()
        kwargs.update(user=owner.pw_uid, group=owner.pw_gid, extra_groups=[])
        env.update(HOME=owner.pw_dir, USER=owner.pw_name, LOGNAME=owner.pw_name)
    return kwargs


def run_client(cluster: Cluster, args: Sequence[str], what: str) -> str:
    """Run a client binary as the server's OS user; it dies with us. Its stdout, or PitrError."""
    proc = subprocess.Popen(
        list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, before exec
        **_as_server_user(cluster),
    )
    out, err = proc.communicate()
    out, err = str(out), str(err)
    if proc.returncode != 0:
        lines = (err or out).strip().splitlines()
        raise PitrError(f"{what} failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return out


def _clear_partials(directory: Path) -> None:
    """Remove what killed backups left (their pid is gone)."""
    for entry in directory.glob(f".base_*{PARTIAL_MARK}*"):
        pid = entry.name.rsplit(PARTIAL_MARK, 1)[-1]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _choose_name(directory: Path, now: datetime) -> str:
    name = f"base_{now:%Y%m%d_%H%M%S}"
    candidate, n = name, 1
    while (directory / candidate).exists() or manifest_path(directory / candidate).exists():
        candidate = f"{name}_{n}"
        n += 1
    return candidate


def _label(path: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in (path / "backup_label").read_text().splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key] = value
    return fields


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def base_backup(
    cluster: Cluster,
    directory: Path,
    *,
    who: str,
    note: str | None = None,
    revision: str | None = None,
    max_rate: str | None = None,
) -> ListedBase:
    """Take a base backup of the running cluster into a new directory under directory.

    The cluster must archive its WAL (the backup alone restores only to its own end).
    max_rate (pg_basebackup -r, e.g. "32k") throttles it."""
    if note is not None and len(note) > 500:
        raise PitrError(f"--note is {len(note)} characters; at most 500")
    if not cluster.status().running:
        raise PitrError("the embedded PostgreSQL is not running", "smartstart db start")
    with cluster.connect() as conn:
        now = archiver(conn)
        if now.failing:
            raise PitrError(
                "WAL archiving is failing, and a base backup waits until its WAL is archived",
                "see `smartstart db health --check wal_archiving` and the server log",
            )
        if now.mode == "off":
            raise PitrError(
                "WAL archiving is not active on the embedded server (archive_mode is off), "
                "so a base backup could not be rolled forward",
                "restart it to turn archiving on: smartstart db restart",
            )
        row = conn.execute(
            "SELECT current_setting('server_version'), system_identifier::text,"
            " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
            " FROM pg_control_system()"
        ).fetchone()
        assert row is not None
        version, system_id, segment_size = str(row[0]), str(row[1]), int(row[2])
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cluster._give(directory, 0o700)
    _clear_partials(directory)
    started = datetime.now(UTC)
    name = _choose_name(directory, started)
    final = directory / name
    tmp = directory / f".{name}{PARTIAL_MARK}{os.getpid()}"
    args = [
        str(cluster.bin_dir / "pg_basebackup"),
        *("-D", str(tmp), "-Fp", "-X", "none", "-c", "fast", "--no-password"),
        *("-h", str(cluster.socket_dir), "-p", str(cluster.port), "-U", "postgres"),
        *("-l", f"smartstart {name}"),
        *(["-r", max_rate] if max_rate else []),
    ]
    try:
        run_client(cluster, args, "pg_basebackup")
        label = _label(tmp)
        ranges = json.loads((tmp / "backup_manifest").read_text())["WAL-Ranges"]
        digest = hashlib.sha256((tmp / "backup_manifest").read_bytes()).hexdigest()
        size = _size(tmp)
        os.rename(tmp, final)
        _fsync_dir(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finished = datetime.now(UTC)
    timeline = int(label.get("START TIMELINE", "1"))
    start_lsn = label["START WAL LOCATION"].split()[0]
    stop_lsn = ranges[-1]["End-LSN"]
    manifest = BaseManifest(
        file=name,
        size=size,
        sha256=digest,
        server_version=version,
        system_identifier=system_id,
        timeline=timeline,
        segment_size=segment_size,
        start_lsn=start_lsn,
        stop_lsn=stop_lsn,
        start_wal=segment_name(timeline, parse_lsn(start_lsn), segment_size),
        stop_wal=segment_name(int(ranges[-1]["Timeline"]), parse_lsn(stop_lsn), segment_size),
        started_at=started.isoformat(),
        finished_at=finished.isoformat(),
        seconds=round((finished - started).total_seconds(), 3),
        note=note,
        who=who,
        tool=f"pg_basebackup {version.split('.')[0]}",
        revision=revision,
    )
    write_durably(manifest_path(final), manifest.to_json())  # last: names a complete backup
    return ListedBase(final, manifest, True)
