"""WAL archiving of the embedded cluster: its settings, the archive directory, its health.

Every finished WAL segment is copied durably into the archive (`$SMARTSTART_HOME/wal/`) by
walcopy.py; base backups plus that archive make point-in-time recovery (pg.pitr). Knows
nothing of users or the platform schema.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from smartstart.errors import ClusterError
from smartstart.pg.checks import Check, Measurement, rows

if TYPE_CHECKING:
    from smartstart.pg.cluster import Cluster

# Written into the data directory and included from postgresql.conf, so that a cluster made
# before archiving existed gets it at its next start, and a base backup carries it along.
CONF_NAME = "smartstart-archive.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_NAME}'"
HBA_LINE = "local   replication   all           peer map=smartstart"
SCRIPT_NAME = "walcopy.py"
# A segment file (24 hex digits), a timeline history file, or a backup label in the archive.
SEGMENT = re.compile(r"^[0-9A-F]{24}$")
HISTORY = re.compile(r"^[0-9A-F]{8}\.history$")
# How long a finished segment may wait for the archiver before it counts as behind.
BEHIND_SECONDS = 10
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


def conf_string(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _percent(value: str) -> str:
    # archive_command and restore_command expand %p, %f, %r: a literal % must be doubled.
    return value.replace("%", "%%")


def archive_command(python: str, script: Path, archive_dir: Path) -> str:
    dest = _percent(shlex.quote(str(archive_dir))) + "/%f"
    return f"{_percent(shlex.quote(python))} -I {_percent(shlex.quote(str(script)))} %p {dest}"


def restore_command(archive_dir: Path) -> str:
    return "cp " + _percent(shlex.quote(str(archive_dir))) + '/%f "%p"'


def settings(python: str, script: Path, archive_dir: Path) -> dict[str, str]:
    """The server settings that archive every WAL segment into archive_dir."""
    return {
        "archive_mode": "on",
        "archive_command": conf_string(archive_command(python, script, archive_dir)),
    }


def _python(cluster: Cluster, configured: str) -> str:
    """An interpreter the server's OS user can run (ours may live in a home it cannot enter).

    The one already configured is kept while it exists (no trial run at every start)."""
    if configured and Path(configured).is_file():
        return configured
    candidates = [str(Path(sys.executable).resolve())]
    candidates += [p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if Path(p).exists()]
    for python in dict.fromkeys(candidates):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if cluster._run([python, "-I", "-c", "import os"], check=False).returncode == 0:
                return python
    raise ClusterError(
        "WAL archiving needs a Python 3 the server's OS user can run; tried "
        + ", ".join(candidates),
        "install python3 system-wide, or set SMARTSTART_WAL_ARCHIVE=false (no point-in-time "
        "recovery)",
    )


def configure(cluster: Cluster, archive_dir: Path | None) -> None:
    """Make the stopped cluster archive into archive_dir (None: not at all) from its next start.

    Idempotent: the settings file is rewritten (the interpreter may have moved), the include
    and the replication line of pg_hba.conf (for pg_basebackup) are added once.
    """
    if archive_dir is None:
        _write_conf(cluster, ["archive_mode = off"])
        return
    archive_dir.mkdir(parents=True, exist_ok=True)
    cluster._give(archive_dir, 0o700)
    bin_dir = cluster.home / "bin"
    bin_dir.mkdir(exist_ok=True)
    bin_dir.chmod(0o755)
    script = bin_dir / SCRIPT_NAME
    tmp = script.with_name(f".{SCRIPT_NAME}.{os.getpid()}")
    shutil.copyfile(Path(__file__).with_name(SCRIPT_NAME), tmp)
    tmp.chmod(0o644)
    os.replace(tmp, script)
    python = _python(cluster, _configured_python(cluster.data_dir / CONF_NAME))
    _write_conf(cluster, [f"{k} = {v}" for k, v in settings(python, script, archive_dir).items()])
    _append_once(cluster.data_dir / "pg_hba.conf", HBA_LINE)


def _configured_python(conf: Path) -> str:
    try:
        text = conf.read_text()
    except FileNotFoundError:
        return ""
    match = re.search(r"^archive_command = '(\S+) -I ", text, re.MULTILINE)
    return shlex.split(match.group(1).replace("%%", "%"))[0] if match else ""


def _write_conf(cluster: Cluster, lines: list[str]) -> None:
    conf = cluster.data_dir / CONF_NAME
    text = "# SmartStart: WAL archiving (rewritten at every start)\n" + "\n".join(lines) + "\n"
    if not conf.exists() or conf.read_text() != text:
        conf.write_text(text)
        cluster._give(conf, 0o600)
    _append_once(cluster.data_dir / "postgresql.conf", INCLUDE_LINE)


def _append_once(path: Path, line: str) -> None:
    text = path.read_text()
    if any(existing.strip() == line for existing in text.splitlines()):
        return
    with path.open("a") as f:
        f.write(("" if text.endswith("\n") else "\n") + line + "\n")


# -- the archive -------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One WAL segment file in the archive."""

    name: str
    size: int
    mtime: float

    @property
    def timeline(self) -> int:
        return int(self.name[:8], 16)

    @property
    def position(self) -> str:
        """The segment's place in the WAL, whatever its timeline (as pg_archivecleanup sorts)."""
        return self.name[8:24]


def segments(archive_dir: Path) -> list[Segment]:
    """The archived WAL segments, in WAL order."""
    found: list[Segment] = []
    if not archive_dir.is_dir():
        return found
    with os.scandir(archive_dir) as entries:
        for entry in entries:
            if SEGMENT.match(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat()
                    found.append(Segment(entry.name, st.st_size, st.st_mtime))
    found.sort(key=lambda s: (s.position, s.timeline))
    return found


@dataclass(frozen=True)
class OnPath:
    """A segment on the newest timeline's history, and where that history leaves it."""

    segment: Segment
    end_lsn: int | None  # the switch to a newer timeline inside this segment, if any


def history(archive_dir: Path) -> dict[int, tuple[int, int | None]]:
    """Each timeline of the newest one's history: (first LSN, LSN where it was left)."""
    tlis = [int(p.name[:8], 16) for p in archive_dir.glob("*.history") if HISTORY.match(p.name)]
    tlis += [s.timeline for s in segments(archive_dir)]
    newest = max(tlis, default=1)
    path: dict[int, tuple[int, int | None]] = {}
    begin = 0
    with contextlib.suppress(FileNotFoundError):
        for line in (archive_dir / f"{newest:08X}.history").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0].isdigit():
                switch = parse_lsn(fields[1])
                path[int(fields[0])] = (begin, switch)
                begin = switch
    path[newest] = (begin, None)
    return path


def on_path(archive_dir: Path, segment_size: int) -> list[OnPath]:
    """The archived segments a recovery to the newest timeline reads, in WAL order.

    A restore branches a new timeline off an older one; the older one's segments after the
    branch are another history (they hold what the restore set aside)."""
    path = history(archive_dir)
    chosen: dict[str, OnPath] = {}
    for segment in segments(archive_dir):
        span = path.get(segment.timeline)
        if span is None:
            continue
        start = _start(segment, segment_size)
        begin, end = span
        if begin >= start + segment_size or (end is not None and end <= start):
            continue
        best = chosen.get(segment.position)
        if best is None or best.segment.timeline < segment.timeline:
            inside = end if end is not None and end < start + segment_size else None
            chosen[segment.position] = OnPath(segment, inside)
    return [chosen[p] for p in sorted(chosen)]


def _start(segment: Segment, segment_size: int) -> int:
    per_id = 0x100000000 // segment_size
    number = int(segment.name[8:16], 16) * per_id + int(segment.name[16:24], 16)
    return number * segment_size


def segment_name(timeline: int, lsn: int, segment_size: int) -> str:
    """The name of the WAL segment holding lsn (as pg_walfile_name)."""
    number = lsn // segment_size
    per_id = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


# The last attempt failed (a success since then clears it).
FAILING = "coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false)"


@dataclass(frozen=True)
class Archiver:
    """The running server's archiver, from pg_stat_archiver."""

    mode: str
    failing: bool
    last_archived_wal: str | None
    last_failed_wal: str | None


def archiver(conn: psycopg.Connection[Any]) -> Archiver:
    row = conn.execute(
        f"SELECT current_setting('archive_mode'), {FAILING}, last_archived_wal, last_failed_wal"
        " FROM pg_stat_archiver"
    ).fetchone()
    assert row is not None
    return Archiver(str(row[0]), bool(row[1]), row[2], row[3])


def state(cluster: Cluster) -> str:
    """on, off, failing, or "pending restart" (configured, the running server not yet)."""
    if not cluster.status().running:
        return "off" if cluster.archive_dir is None else "on at the next start"
    with cluster.connect() as conn:
        now = archiver(conn)
    if now.mode == "off":
        return "off" if cluster.archive_dir is None else "pending restart"
    return "failing" if now.failing else "on"


# -- health ---------------------------------------------------------------------------


def wal_archiving(conn: psycopg.Connection[Any]) -> Measurement:
    """Segments the archiver is behind on: since a failed attempt, or waiting too long."""
    (state,) = rows(
        conn,
        """
        SELECT current_setting('archive_mode') AS archive_mode,
               (SELECT pending_restart FROM pg_settings WHERE name = 'archive_mode')
                   AS pending_restart,
               a.archived_count, a.last_archived_wal, a.last_archived_time::text,
               a.failed_count, a.last_failed_wal, a.last_failed_time::text,
               {FAILING} AS failing
        FROM pg_stat_archiver a
        """.replace("{FAILING}", FAILING),
    )
    if state["archive_mode"] == "off":
        if state["pending_restart"]:
            return Measurement(
                None,
                "segments",
                (state,),
                unavailable="WAL archiving is configured but not active until the server "
                "restarts: smartstart db restart",
            )
        return Measurement(None, "segments", (state,))
    (privilege,) = rows(
        conn, "SELECT has_function_privilege('pg_ls_archive_statusdir()', 'execute') AS ok"
    )
    if not privilege["ok"]:
        return Measurement(
            None,
            "segments",
            (state,),
            unavailable="reading the archive status needs the pg_monitor role: "
            "GRANT pg_monitor TO the connecting user",
        )
    (waiting,) = rows(
        conn,
        """
        SELECT count(*) FILTER (WHERE name LIKE '%%.ready') AS ready,
               count(*) FILTER (WHERE name LIKE '%%.ready'
                                AND modification < now() - make_interval(secs => %s)) AS late
        FROM pg_ls_archive_statusdir()
        """,
        [BEHIND_SECONDS],
    )
    behind = int(waiting["ready"] or 0) if state["failing"] else int(waiting["late"] or 0)
    if state["failing"]:
        behind = max(behind, 1)
    fix = None
    if behind:
        fix = (
            f"WAL archiving failed for {state['last_failed_wal']} at {state['last_failed_time']}: "
            "see the server log (smartstart logs postgres) for the archive_command's error, "
            "and check that the archive directory is writable and has space"
        )
    details = ({**state, "waiting": waiting["ready"]},)
    return Measurement(float(behind), "segments", details, fix=fix)


CHECKS: tuple[Check, ...] = (
    Check(
        "wal_archiving",
        "WAL archiving (point-in-time recovery)",
        wal_archiving,
        warn=1,
        crit=16,
        advice="the archiver is behind: see the server log for the archive_command's error",
    ),
)
