"""Point-in-time recovery of the embedded cluster: the recoverable window, restore, prune.

A restore builds a new data directory from the newest base backup (pg.basebackup) finished
before the target, replays the archived WAL (pg.archive) up to the target on a side port,
lets the caller check the result, and only then swaps it in; the previous data directory is
kept as `pgdata.before_pitr_<timestamp>` until pruned. Knows nothing of users or the
platform schema.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from smartstart.errors import SmartStartError
from smartstart.pg import archive, restoring
from smartstart.pg.archive import OnPath, conf_string
from smartstart.pg.backup import PARTIAL_MARK, _fsync_dir
from smartstart.pg.basebackup import ListedBase, PitrError, list_base_backups, manifest_path
from smartstart.pg.cluster import Cluster

__all__ = ["PitrError", "plan_prune", "plan_restore", "prune", "restore", "window"]

KEPT_PREFIX = "pgdata.before_pitr_"
_COMMIT = re.compile(
    r"desc: (?:COMMIT|ABORT)(?:_PREPARED)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)
# Recovery settings are appended to postgresql.auto.conf after this line, and cut off at it
# once the side server has stopped.
RECOVERY_MARK = "# SmartStart point-in-time recovery (removed after promotion)\n"

Say = Callable[[str], None]
Check = Callable[[Cluster], list[str]]


def _quiet(_: str) -> None:
    return None


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- the recoverable window ------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """From the end of the earliest base backup to the last commit in the archive."""

    earliest: datetime | None
    latest: datetime | None
    last_commit: datetime | None
    base_backups: tuple[ListedBase, ...]  # newest first
    segments: int
    first_wal: str | None
    last_wal: str | None
    missing: tuple[str, ...]  # segments absent between the oldest backup and the newest WAL

    def describe(self) -> str:
        if self.earliest is None or self.latest is None:
            return "nothing is recoverable yet (no base backup: smartstart db backup --physical)"
        return f"{_stamp(self.earliest)} … {_stamp(self.latest)}"


def last_commit(bin_dir: Path, archive_dir: Path, path: list[OnPath]) -> datetime | None:
    """The time of the newest commit (or abort) on the newest timeline's WAL (pg_waldump).

    Read newest segment first until one holds a commit: a VACUUM or a checkpoint writes
    many segments without any, and a restore that took "no commit found" for "nothing to
    exclude" would replay past its target."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, "TZ": "UTC"}
    for item in reversed(path):
        args = [str(bin_dir / "pg_waldump"), "-r", "Transaction", "-p", str(archive_dir)]
        args.append(item.segment.name)
        if item.end_lsn is not None:  # the rest of this segment is another history
            args += ["-e", f"{item.end_lsn >> 32:X}/{item.end_lsn & 0xFFFFFFFF:X}"]
        proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        # pg_waldump exits 1 at the end of the written WAL: its output is still good.
        times = _COMMIT.findall(proc.stdout)
        if times:
            return datetime.fromisoformat(times[-1]).replace(tzinfo=UTC)
    return None


def _missing(path: list[OnPath], start: str, segment_size: int) -> tuple[str, ...]:
    per_id = 0x100000000 // segment_size
    positions = [p.segment.position for p in path if p.segment.position >= start[8:]]
    gaps: list[str] = []
    expected = int(start[8:16], 16) * per_id + int(start[16:24], 16)
    for position in positions:
        number = int(position[:8], 16) * per_id + int(position[8:], 16)
        while expected < number and len(gaps) < 10:
            gaps.append(f"{expected // per_id:08X}{expected % per_id:08X}")
            expected += 1
        expected = number + 1
    return tuple(gaps)


def _usable(base: ListedBase, history: dict[int, tuple[int, int | None]]) -> bool:
    """A base backup taken on the newest timeline's history (not on a set-aside branch)."""
    span = history.get(base.manifest.timeline)
    if span is None or not base.present:
        return False
    begin, end = span
    start = archive.parse_lsn(base.manifest.start_lsn)
    return begin <= start and (end is None or archive.parse_lsn(base.manifest.stop_lsn) <= end)


def window(bin_dir: Path, backup_dir: Path, archive_dir: Path) -> Window:
    """What can be recovered from the base backups in backup_dir and the WAL archive."""
    listed = list_base_backups(backup_dir)
    size = listed[0].manifest.segment_size if listed else archive.DEFAULT_SEGMENT_SIZE
    timelines = archive.history(archive_dir)
    bases = tuple(b for b in listed if _usable(b, timelines))
    path = archive.on_path(archive_dir, size)
    commit = last_commit(bin_dir, archive_dir, path) if path else None
    if not bases:
        return Window(None, None, commit, bases, len(path), None, None, ())
    oldest = bases[-1].manifest
    relevant = [p.segment for p in path if p.segment.position >= oldest.start_wal[8:]]
    earliest = oldest.finished
    latest = max([b.manifest.finished for b in bases] + ([commit] if commit else []))
    return Window(
        earliest=earliest,
        latest=latest,
        last_commit=commit,
        base_backups=bases,
        segments=len(relevant),
        first_wal=relevant[0].name if relevant else None,
        last_wal=relevant[-1].name if relevant else None,
        missing=_missing(
            [p for p in path if p.segment in relevant], oldest.start_wal, oldest.segment_size
        ),
    )


def flush_archive(cluster: Cluster, timeout: float = 60) -> datetime:
    """Close the current WAL segment and wait until the archive holds it: the archive then
    holds every commit made before the moment returned."""
    with cluster.connect() as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal()), clock_timestamp()").fetchone()
        assert row is not None
        segment, switched = str(row[0]), row[1]
        deadline = time.monotonic() + timeout
        while True:
            now = archive.archiver(conn)
            if now.mode == "off":
                raise PitrError(
                    "WAL archiving is not active on the embedded server (archive_mode is off)",
                    "restart it to turn archiving on: smartstart db restart",
                )
            if now.last_archived_wal is not None and now.last_archived_wal >= segment:
                return switched.astimezone(UTC)  # type: ignore[no-any-return]
            if now.failing and now.last_failed_wal is not None and now.last_failed_wal <= segment:
                raise PitrError(
                    f"WAL archiving is failing (segment {now.last_failed_wal}): the archive "
                    "cannot be brought up to date",
                    "see `smartstart db health --check wal_archiving` and the server log",
                )
            if time.monotonic() > deadline:
                raise PitrError(f"WAL segment {segment} was not archived within {timeout:g} s")
            time.sleep(0.05)


# -- restore ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RestorePlan:
    """What `restore` will do: from which base backup, to when, and where things go."""

    target: datetime | None  # None: as far as the archive goes
    replay_to_end: bool  # nothing committed after the target: replay everything
    base: ListedBase
    window: Window
    data_dir: Path
    keep_as: Path


def plan_restore(
    cluster: Cluster,
    backup_dir: Path,
    archive_dir: Path,
    target: datetime | None,
    archived_until: datetime | None = None,
) -> RestorePlan:
    """Choose the base backup for target (None: latest), refusing a target outside the window.

    archived_until (what flush_archive returned) extends the window to that moment: the
    state then is the state at the last commit archived."""
    win = window(cluster.bin_dir, backup_dir, archive_dir)
    if archived_until is not None and win.latest is not None:
        win = replace(win, latest=max(win.latest, archived_until))
    if win.earliest is None or win.latest is None:
        raise PitrError(f"cannot restore: {win.describe()}")
    if target is not None:
        if target.tzinfo is None:
            target = target.replace(tzinfo=UTC)
        if not win.earliest <= target <= win.latest:
            raise PitrError(
                f"{_stamp(target)} is outside the recoverable window {win.describe()}",
                "choose a time inside it (--to-latest for the newest)",
            )
        base = next(b for b in win.base_backups if b.manifest.finished <= target)
    else:
        base = win.base_backups[0]
    if win.missing and any(m >= base.manifest.start_wal[8:] for m in win.missing):
        raise PitrError(
            f"the WAL archive has a gap after {base.path.name}: segment(s) "
            f"{', '.join(win.missing[:3])} missing",
            "restore to a time before the gap, or take a new base backup",
        )
    replay_to_end = target is None or win.last_commit is None or target >= win.last_commit
    return RestorePlan(
        target=target,
        replay_to_end=replay_to_end,
        base=base,
        window=win,
        data_dir=cluster.data_dir,
        keep_as=kept_name(cluster.home, datetime.now(UTC)),
    )


def kept_name(home: Path, when: datetime) -> Path:
    """Where a restore at `when` sets the data directory aside: a name no other has taken.

    Two restores within one second had the same name, and the second one's swap failed
    ("Directory not empty") with the server already stopped.
    """
    stamp = when.strftime("%Y%m%d_%H%M%S")
    path, n = home / f"{KEPT_PREFIX}{stamp}", 1
    while path.exists():
        n += 1
        path = home / f"{KEPT_PREFIX}{stamp}_{n}"
    return path


@dataclass(frozen=True)
class Restored:
    plan: RestorePlan
    replayed_to: datetime | None  # the last transaction replayed
    kept: Path
    seconds: float
    phases: dict[str, float]  # copy, replay, check, stop (the side server), swap: seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _copy_tree(source: Path, dest: Path) -> None:
    # cp -a keeps the owner (the server's OS user) and uses the kernel's copy.
    if shutil.which("cp"):
        subprocess.run(["cp", "-a", str(source), str(dest)], check=True, capture_output=True)
    else:  # pragma: no cover - every supported system has cp
        shutil.copytree(source, dest, symlinks=True)


def _prepare(cluster: Cluster, plan: RestorePlan, staging: Path, archive_dir: Path) -> None:
    _copy_tree(plan.base.path, staging)
    for stale in ("postmaster.pid", "backup_manifest"):
        with contextlib.suppress(FileNotFoundError):
            (staging / stale).unlink()
    lines = {
        "restore_command": conf_string(archive.restore_command(archive_dir)),
        "recovery_target_timeline": "'latest'",
        "recovery_target_action": "'promote'",
        # The side server must not archive: a restore that fails its checks leaves no trace
        # in the archive. Segments wait (.ready) and the swapped-in server archives them.
        "archive_command": "''",
        **archive.no_library(archive.major_version(staging)),
    }
    if not plan.replay_to_end and plan.target is not None:
        lines["recovery_target_time"] = conf_string(plan.target.isoformat(sep=" "))
    with (staging / "postgresql.auto.conf").open("a") as f:
        f.write(RECOVERY_MARK)
        f.writelines(f"{k} = {v}\n" for k, v in lines.items())
    signal = staging / "recovery.signal"
    signal.touch()
    cluster._give(signal, 0o600)


def _forget_recovery(data_dir: Path) -> None:
    """Cut the recovery settings off postgresql.auto.conf (the server is stopped)."""
    auto = data_dir / "postgresql.auto.conf"
    text = auto.read_text()
    if RECOVERY_MARK in text:
        auto.write_text(text[: text.index(RECOVERY_MARK)])


def _side(cluster: Cluster, staging: Path) -> Cluster:
    side = Cluster(
        cluster.home,
        port=_free_port(),
        host=cluster.host,
        bin_dir=cluster.bin_dir,
        run_as=cluster.run_as or "postgres",
    )
    side.data_dir = staging
    side.log_file = cluster.log_dir / "pitr.log"
    return side


def _replay(side: Cluster) -> datetime | None:
    """Start the side server, wait for the end of recovery (promotion), clear its settings."""
    try:
        side.start(timeout=3600)
        # One connection, polled: the server ends it if recovery fails.
        with side.connect() as conn:
            while True:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), pg_last_xact_replay_timestamp()"
                ).fetchone()
                if row is not None and not row[0]:
                    break
                time.sleep(0.05)
            replayed: datetime | None = row[1]
            return replayed
    except (SmartStartError, psycopg.Error):
        raise PitrError(
            f"recovery failed: {side._last_log_error() or 'the server stopped'}",
            f"see {side.log_file}",
        ) from None


@contextlib.contextmanager
def _lock(cluster: Cluster) -> Iterator[None]:
    import fcntl

    with (cluster.home / ".pitr.lock").open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PitrError("another point-in-time restore is running") from None
        yield


def restore(
    cluster: Cluster, plan: RestorePlan, archive_dir: Path, check: Check, say: Say = _quiet
) -> Restored:
    """Build, replay and check a new data directory, then swap it in for the cluster's.

    Nothing of the current data directory changes until the new one passed check (a list
    of problems; empty when fine); afterwards it is kept as plan.keep_as."""
    t0 = time.perf_counter()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        phases[name] = round(time.perf_counter() - t0 - sum(phases.values()), 3)

    staging = cluster.home / f".pgdata.pitr{PARTIAL_MARK}{os.getpid()}"
    with _lock(cluster):
        # What an interrupted restore left (none runs now: the lock is ours).
        for stale in cluster.home.glob(f".pgdata.pitr{PARTIAL_MARK}*"):
            shutil.rmtree(stale, ignore_errors=True)
        try:
            say(f"copying base backup {plan.base.path.name}")
            _prepare(cluster, plan, staging, archive_dir)
            lap("copy")
            side = _side(cluster, staging)
            say("replaying WAL " + ("to the end" if plan.replay_to_end else f"to {plan.target}"))
            try:
                replayed = _replay(side)
                lap("replay")
                problems = _past(plan, replayed) or check(side)
                lap("check")
            finally:
                side.stop(mode="fast")
            _forget_recovery(staging)
            lap("stop")
            if problems:
                raise PitrError(
                    "the recovered database failed its checks; nothing was changed: "
                    + "; ".join(problems[:5])
                )
            say("swapping the recovered data directory in")
            to = "the end of the WAL archive"
            if plan.target is not None and not plan.replay_to_end:
                to = _stamp(plan.target)
            with restoring.marked(cluster.home, "pitr", f"point-in-time recovery to {to}"):
                _swap(cluster, staging, plan.keep_as)
            lap("swap")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Restored(
        plan=plan,
        replayed_to=replayed,
        kept=plan.keep_as,
        seconds=round(time.perf_counter() - t0, 3),
        phases=phases,
    )


def _past(plan: RestorePlan, replayed: datetime | None) -> list[str]:
    """A replay that went beyond the target: refused (the last line of defence)."""
    if plan.target is None or replayed is None or replayed <= plan.target:
        return []
    return [f"the replay went past the target (last transaction at {_stamp(replayed)})"]


def _swap(cluster: Cluster, staging: Path, keep_as: Path) -> None:
    cluster.stop(mode="fast")
    os.rename(cluster.data_dir, keep_as)
    os.rename(staging, cluster.data_dir)
    _fsync_dir(cluster.home)
    try:
        cluster.start()
    except SmartStartError as e:
        # Put the previous data directory back and bring it up: never left with neither.
        failed = cluster.home / f".{keep_as.name}.failed"
        os.rename(cluster.data_dir, failed)
        os.rename(keep_as, cluster.data_dir)
        _fsync_dir(cluster.home)
        with contextlib.suppress(SmartStartError):
            cluster.start()
        raise PitrError(
            f"the recovered data directory did not start ({e.message}); the previous one "
            f"is back in place, the recovered one kept in {failed}"
        ) from None


# -- retention ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PrunePlan:
    """What `prune` deletes: base backups, the WAL no kept backup needs, old data dirs."""

    base_backups: tuple[ListedBase, ...]
    kept_backups: tuple[ListedBase, ...]
    wal_files: tuple[Path, ...]
    data_dirs: tuple[Path, ...]
    bytes: int


_WAL_FILE = re.compile(r"^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?$")


def _pruned(index: int, when: datetime, keep: int | None, cutoff: datetime | None) -> bool:
    beyond_keep = keep is None or index >= keep
    too_old = cutoff is None or when < cutoff
    return (keep is not None or cutoff is not None) and beyond_keep and too_old


def plan_prune(
    backup_dir: Path,
    archive_dir: Path,
    home: Path,
    *,
    keep: int | None = None,
    older_than: timedelta | None = None,
    now: datetime | None = None,
) -> PrunePlan:
    """Base backups beyond the newest `keep` and older than `older_than` (both when both are
    given; the newest is always kept), the archived WAL older than the oldest kept backup
    needs, and kept pre-restore data directories chosen by the same rule."""
    if keep is not None and keep < 1:
        raise PitrError("--keep must be at least 1 (the newest base backup is always kept)")
    cutoff = None if older_than is None else (now or datetime.now(UTC)) - older_than
    bases = list_base_backups(backup_dir)
    doomed = [
        b
        for i, b in enumerate(bases)
        if i > 0 and _pruned(i, datetime.fromisoformat(b.manifest.started_at), keep, cutoff)
    ]
    kept = [b for b in bases if b not in doomed]
    wal: list[Path] = []
    if kept:
        oldest_needed = min(b.manifest.start_wal[8:] for b in kept)
        if archive_dir.is_dir():
            wal = sorted(
                p
                for p in archive_dir.iterdir()
                if _WAL_FILE.match(p.name) and p.name[8:24] < oldest_needed
            )
    olds = sorted((d for d in home.glob(f"{KEPT_PREFIX}*") if d.is_dir()), reverse=True)
    dirs = [d for i, d in enumerate(olds) if _pruned(i, _kept_at(d), keep, cutoff)]
    size = sum(b.manifest.size for b in doomed) + sum(p.stat().st_size for p in wal)
    size += sum(_tree_size(d) for d in dirs)
    return PrunePlan(tuple(doomed), tuple(kept), tuple(wal), tuple(dirs), size)


def _kept_at(directory: Path) -> datetime:
    """When a restore set this data directory aside (its name says; else its mtime)."""
    try:
        stamp = directory.name.removeprefix(KEPT_PREFIX)[:15]  # a "_2" after it: the same second
        return datetime.strptime(stamp, "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return datetime.fromtimestamp(directory.stat().st_mtime, UTC)


def _tree_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file())


def prune(plan: PrunePlan) -> int:
    """Delete what the plan names (each manifest before its backup); the bytes freed."""
    for base in plan.base_backups:
        with contextlib.suppress(FileNotFoundError):
            manifest_path(base.path).unlink()
        shutil.rmtree(base.path, ignore_errors=True)
    for path in plan.wal_files:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for directory in plan.data_dirs:
        shutil.rmtree(directory, ignore_errors=True)
    return plan.bytes
