"""WAL archiving of the embedded cluster: its settings, the archive directory, its health.

Every finished WAL segment is copied durably into the archive (`$SMARTSTART_HOME/wal/`): by
PostgreSQL's contrib module basic_archive inside the archiver (`archive_library`, PostgreSQL
15 and newer, when installed), else by walcopy.py as the `archive_command` (one process per
segment). Base backups plus that archive make point-in-time recovery (pg.pitr). Knows nothing
of users or the platform schema.
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
# The archive library and the first major version that has archive_library.
LIBRARY = "basic_archive"
LIBRARY_SINCE = 15
COMMAND = "archive_command"
# basic_archive writes archtemp.<file>.<pid>.<time> first, walcopy.py .<file>.partial-<pid>:
# a crash can leave either behind.
TEMPORARIES = ("archtemp.*", ".*.partial-*")
# basic_archive refuses a directory whose path leaves no room for its temporary names
# (MAXPGPATH 1024, less 64 for the name and 2): walcopy.py archives into such a one.
_LIBRARY_MAX_PATH = 1024 - 64 - 2


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


def library_settings(archive_dir: Path) -> dict[str, str]:
    """The server settings that archive every WAL segment into archive_dir with basic_archive."""
    return {
        "archive_mode": "on",
        "archive_library": conf_string(LIBRARY),
        # Exactly one of the two: PostgreSQL 15 ignores archive_command while archive_library
        # is set, 16 and later refuse to archive at all when both are.
        "archive_command": "''",
        "basic_archive.archive_directory": conf_string(str(archive_dir)),
    }


def command_settings(python: str, script: Path, archive_dir: Path, major: int) -> dict[str, str]:
    """The server settings that archive every WAL segment into archive_dir with walcopy.py."""
    return {
        "archive_mode": "on",
        "archive_command": conf_string(archive_command(python, script, archive_dir)),
        **no_library(major),
    }


def no_library(major: int) -> dict[str, str]:
    """archive_library emptied (it would win over archive_command); unknown before 15."""
    return {"archive_library": "''"} if major >= LIBRARY_SINCE else {}


def major_version(data_dir: Path) -> int:
    """The data directory's major version (the server that runs it has the same)."""
    text = (data_dir / "PG_VERSION").read_text().strip()
    return int(text.split(".")[0]) if text.split(".")[0].isdigit() else 0


def library_path(bin_dir: Path) -> Path | None:
    """basic_archive's shared library in the installation of bin_dir, if it is installed.

    The server loads it from its pkglibdir: pg_config of the same installation says where;
    without one, the two places installations put it."""
    dirs = [bin_dir.parent / "lib", bin_dir.parent / "lib" / "postgresql"]
    if (bin_dir / "pg_config").is_file():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [str(bin_dir / "pg_config"), "--pkglibdir"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            if out:
                dirs = [Path(out)]
    for directory in dirs:
        for suffix in (".so", ".dylib"):
            if (directory / (LIBRARY + suffix)).is_file():
                return directory / (LIBRARY + suffix)
    return None


def method(cluster: Cluster, archive_dir: Path) -> str:
    """basic_archive when the cluster's server has it, else archive_command (walcopy.py)."""
    if (
        major_version(cluster.data_dir) >= LIBRARY_SINCE
        and len(os.fsencode(str(archive_dir))) < _LIBRARY_MAX_PATH
        and library_path(cluster.bin_dir) is not None
    ):
        return LIBRARY
    return COMMAND


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
    _clear_temporaries(archive_dir)
    if method(cluster, archive_dir) == LIBRARY:
        conf = library_settings(archive_dir)
    else:
        python = _python(cluster, _configured_python(cluster.data_dir / CONF_NAME))
        script = _install_script(cluster)
        conf = command_settings(python, script, archive_dir, major_version(cluster.data_dir))
    _write_conf(cluster, [f"{k} = {v}" for k, v in conf.items()])
    _append_once(cluster.data_dir / "pg_hba.conf", HBA_LINE)


def _install_script(cluster: Cluster) -> Path:
    """walcopy.py where the server's OS user can read it (our package may be out of its reach)."""
    bin_dir = cluster.home / "bin"
    bin_dir.mkdir(exist_ok=True)
    bin_dir.chmod(0o755)
    script = bin_dir / SCRIPT_NAME
    tmp = script.with_name(f".{SCRIPT_NAME}.{os.getpid()}")
    shutil.copyfile(Path(__file__).with_name(SCRIPT_NAME), tmp)
    tmp.chmod(0o644)
    os.replace(tmp, script)
    return script


def _clear_temporaries(archive_dir: Path) -> None:
    """Remove the half-written copies a crash left (the server is stopped: none is in use)."""
    for pattern in TEMPORARIES:
        for stale in archive_dir.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


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
    via: str = COMMAND  # basic_archive (archive_library) or archive_command


# archive_library exists from PostgreSQL 15 (NULL before: archive_command it is).
LIBRARY_SETTING = "coalesce(current_setting('archive_library', true), '')"


def archiver(conn: psycopg.Connection[Any]) -> Archiver:
    row = conn.execute(
        f"SELECT current_setting('archive_mode'), {FAILING}, last_archived_wal, last_failed_wal,"
        f" {LIBRARY_SETTING} FROM pg_stat_archiver"
    ).fetchone()
    assert row is not None
    return Archiver(str(row[0]), bool(row[1]), row[2], row[3], str(row[4]) or COMMAND)


@dataclass(frozen=True)
class Status:
    """What `smartstart status` says of WAL archiving."""

    state: str  # on, off, failing, pending restart, on at the next start
    via: str | None  # basic_archive or archive_command; None when off


def status(cluster: Cluster) -> Status:
    """The state of archiving and what copies the segments (as running, else as configured)."""
    configured = configured_via(cluster.data_dir / CONF_NAME)
    if not cluster.status().running:
        if cluster.archive_dir is None:
            return Status("off", None)
        return Status("on at the next start", configured)
    with cluster.connect() as conn:
        now = archiver(conn)
    if now.mode == "off":
        if cluster.archive_dir is None:
            return Status("off", None)
        return Status("pending restart", configured)
    return Status("failing" if now.failing else "on", now.via)


def state(cluster: Cluster) -> str:
    """on, off, failing, or "pending restart" (configured, the running server not yet)."""
    return status(cluster).state


def configured_via(conf: Path) -> str | None:
    """What the settings file makes archive the WAL at the next start (None: nothing)."""
    try:
        text = conf.read_text()
    except FileNotFoundError:
        return None
    if re.search(rf"^archive_library = '{LIBRARY}'$", text, re.MULTILINE):
        return LIBRARY
    if re.search(r"^archive_command = '.+'$", text, re.MULTILINE):
        return COMMAND
    return None


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
               {FAILING} AS failing,
               coalesce(nullif({LIBRARY}, ''), 'archive_command') AS via
        FROM pg_stat_archiver a
        """.replace("{FAILING}", FAILING).replace("{LIBRARY}", LIBRARY_SETTING),
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
    if behind and state["failing"]:
        fix = (
            f"WAL archiving failed for {state['last_failed_wal']} at "
            f"{state['last_failed_time']} ({state['via']}): see the server log (smartstart logs "
            "postgres) for the error, and check that the archive directory is writable and has "
            "space"
        )
    elif behind:
        # No failure recorded: the archiver is slow, or not configured (an operator's empty
        # archive_command or basic_archive.archive_directory archives nothing, fails nothing).
        fix = (
            f"{behind} WAL segment(s) waiting over {BEHIND_SECONDS} s for the archiver "
            f"({state['via']}) with no failure recorded: see the server log (smartstart logs "
            "postgres); if it says archiving is not configured, see ALTER SYSTEM's "
            "postgresql.auto.conf, then restart the server (smartstart db restart)"
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
        advice="the archiver is behind: see the server log for basic_archive's or the "
        "archive_command's error",
    ),
)
