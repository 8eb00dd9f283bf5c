"""Logical backups of one PostgreSQL database: dump, manifest, list, verify.

Knows nothing of users or the platform schema: the caller names the database (a libpq
conninfo or URL), the client binaries' directory, and how to check a restored schema.
A backup is written under a temporary name, fsynced and renamed, so a killed backup never
leaves a file that looks complete; its manifest (`<file>.json`) is renamed into place last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from smartstart.errors import SmartStartError

Format = Literal["custom", "plain"]
FORMATS: tuple[Format, ...] = ("custom", "plain")
MANIFEST_SUFFIX = ".json"
PARTIAL_MARK = ".partial-"
CHUNK = 1 << 20
NOTE_MAX = 500
GZIP_MAGIC = b"\x1f\x8b"
CUSTOM_MAGIC = b"PGDMP"
PLAIN_HEAD = b"--\n-- PostgreSQL database dump"
# Errors a non-superuser restore always meets: the dump's COMMENT ON EXTENSION (only the
# extension's owner may run it; the extension itself is already there).
HARMLESS = re.compile(r"must be owner of extension")


class BackupError(SmartStartError):
    code = "backup"


@dataclass(frozen=True)
class Tools:
    """The client binaries (pg_dump, pg_restore, psql) of one PostgreSQL installation."""

    bin_dir: Path
    major: int

    def path(self, name: str) -> str:
        return str(self.bin_dir / name)


def client_tools(bin_dir: Path | None, *, explicit: bool = False) -> Tools:
    """pg_dump and friends from bin_dir (the cluster's), else from PATH (unless explicit)."""
    if explicit and bin_dir is not None:
        missing = [b for b in ("pg_dump", "pg_restore", "psql") if not (bin_dir / b).is_file()]
        if missing:
            raise BackupError(
                f"SMARTSTART_PG_BIN={bin_dir} does not hold {', '.join(missing)}",
                "point it at the bin directory of a PostgreSQL client installation",
            )
    candidates = [bin_dir] if bin_dir is not None else []
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for d in candidates:
        if all((d / b).is_file() for b in ("pg_dump", "pg_restore", "psql")):
            out = subprocess.run(
                [str(d / "pg_dump"), "--version"], capture_output=True, text=True, check=False
            ).stdout
            match = re.search(r"\)\s*(\d+)", out)
            if match:
                return Tools(d, int(match.group(1)))
    raise BackupError(
        "pg_dump, pg_restore and psql not found",
        "install the PostgreSQL client (apt-get install postgresql-client) or set "
        "SMARTSTART_PG_BIN",
    )


def check_versions(tools: Tools, server_major: int) -> None:
    """pg_dump refuses (or worse, half-dumps) a server newer than itself: say so first."""
    if tools.major < server_major:
        raise BackupError(
            f"pg_dump {tools.major} ({tools.bin_dir}) cannot dump a PostgreSQL {server_major} "
            "server: the client's major version must be at least the server's",
            f"install the PostgreSQL {server_major} client and point SMARTSTART_PG_BIN at its "
            "bin directory",
        )


@dataclass
class Verification:
    """The outcome of one `verify`, recorded in the manifest."""

    ok: bool
    at: str
    message: str
    seconds: float
    differences: list[str] = field(default_factory=list)


@dataclass
class Manifest:
    """What is known of one backup file, stored beside it as JSON."""

    file: str
    format: Format
    compressed: bool
    size: int
    sha256: str
    database: str
    server_version: str
    revision: str | None
    rows: dict[str, int]
    started_at: str
    finished_at: str
    seconds: float
    note: str | None
    who: str
    tool: str
    verification: Verification | None = None
    version: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("not a backup manifest")
        verification = data.pop("verification", None)
        manifest = cls(**data)
        if verification is not None:
            manifest.verification = Verification(**verification)
        return manifest


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


def read_manifest(path: Path) -> Manifest:
    mpath = manifest_path(path)
    try:
        return Manifest.from_json(mpath.read_text())
    except FileNotFoundError:
        raise BackupError(
            f"{path}: no manifest beside it ({mpath.name}): not a backup made by "
            "`smartstart db backup`, or its manifest was removed"
        ) from None
    except (ValueError, TypeError) as e:
        raise BackupError(f"{mpath}: not a valid backup manifest ({e})") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, text: str) -> None:
    """Replace path with text: temporary file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}{PARTIAL_MARK}{os.getpid()}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_manifest(path: Path, manifest: Manifest) -> None:
    _write_durably(manifest_path(path), manifest.to_json())


# -- connections ---------------------------------------------------------------------


@contextlib.contextmanager
def passfile_env(conninfo: str) -> Iterator[tuple[str, dict[str, str]]]:
    """conninfo without its password, and an environment whose private passfile holds it.

    A password on a command line is public (`ps`); a passfile of mode 600 is not."""
    params = conninfo_to_dict(conninfo)
    password = params.pop("password", None)
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGPASSFILE")}
    env["LC_MESSAGES"] = "C"
    with tempfile.TemporaryDirectory(prefix="smartstart-pg-") as tmp:
        passfile = Path(tmp) / "pgpass"
        passfile.touch(mode=0o600)
        if password is not None:
            escaped = str(password).replace("\\", "\\\\").replace(":", "\\:")
            passfile.write_text(f"*:*:*:*:{escaped}\n")
        env["PGPASSFILE"] = str(passfile)
        yield make_conninfo("", **params), env


def server_major(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SHOW server_version_num").fetchone()
    return int(row[0]) // 10000 if row else 0


def table_rows(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Exact row count of every ordinary table outside the system schemas."""
    names = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2"
    ).fetchall()
    counts: dict[str, int] = {}
    for schema, table in names:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        ).fetchone()
        key = table if schema == "public" else f"{schema}.{table}"
        counts[key] = int(row[0]) if row else 0
    return counts


def alembic_revision(conn: psycopg.Connection[Any]) -> str | None:
    """The schema's Alembic revision, when it has one (a tooling table, not the platform's)."""
    if conn.execute("SELECT to_regclass('alembic_version')").fetchone() in (None, (None,)):
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else None


# -- backup ----------------------------------------------------------------------------


def default_name(fmt: Format, compress: bool, now: datetime) -> str:
    """The guide's `backup_YYYYMMDD_HHMMSS.sql` (`.sql.gz`), `.dump` for the custom format."""
    ext = ".dump" if fmt == "custom" else (".sql.gz" if compress else ".sql")
    return f"backup_{now:%Y%m%d_%H%M%S}{ext}"


def choose_path(output: Path | None, default_dir: Path, fmt: Format, compress: bool) -> Path:
    """Where the backup goes: -o as a file, or a new guide-style name in a directory."""
    now = datetime.now(UTC)
    if output is not None and not output.is_dir():
        path = output.expanduser()
        if path.exists() or manifest_path(path).exists():
            raise BackupError(
                f"{path} already exists", "choose another -o (a backup is never overwritten)"
            )
        if not path.parent.is_dir():
            why = "is not a directory" if path.parent.exists() else "does not exist"
            raise BackupError(f"cannot write {path}: {path.parent} {why}")
        return path.resolve()
    directory = (output or default_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = default_name(fmt, compress, now)
    path = directory / name
    n = 1
    while path.exists() or manifest_path(path).exists():  # two backups in one second
        stem, dot, ext = name.partition(".")
        path = directory / f"{stem}_{n}{dot}{ext}"
        n += 1
    return path.resolve()


def _die_with_parent() -> None:
    """In the child: be killed when the backup process dies (Linux), not dump into a void."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _pump(src: IO[bytes], dst: IO[bytes], digest: Any, progress: Callable[[int], None]) -> int:
    size = 0
    while chunk := src.read(CHUNK):
        dst.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        progress(size)
    return size


def _read_facts(conn: psycopg.Connection[Any], facts: dict[str, Any]) -> None:
    """Rows per table and the revision, in conn's (the dump's) snapshot; errors kept, not raised."""
    try:
        facts.update(rows=table_rows(conn), rev=alembic_revision(conn))
    except psycopg.Error as e:
        facts["error"] = (str(e).strip().splitlines() or [type(e).__name__])[0]


def backup(
    conninfo: str,
    path: Path,
    tools: Tools,
    *,
    fmt: Format = "custom",
    compress: bool = False,
    note: str | None = None,
    who: str,
    progress: Callable[[int], None] = lambda _: None,
) -> Manifest:
    """Dump the database at conninfo into path (a new file) and write its manifest beside it.

    The row counts and the revision are read in the snapshot pg_dump dumps (exported from
    one repeatable-read transaction), so the manifest describes exactly what the file holds.
    """
    if fmt not in FORMATS:
        raise BackupError(f"unknown format {fmt!r}: choose custom or plain")
    if note is not None and len(note) > NOTE_MAX:
        raise BackupError(f"--note is {len(note)} characters; at most {NOTE_MAX}")
    tmp = path.with_name(f".{path.name}{PARTIAL_MARK}{os.getpid()}")
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        out = tmp.open("xb")
    except OSError as e:
        raise BackupError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with out, psycopg.connect(conninfo, connect_timeout=10) as conn:
            check_versions(tools, server_major(conn))
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = str(conn.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            database = str(conn.info.dbname)
            args = [tools.path("pg_dump"), "--snapshot", snapshot, "--no-password"]
            args += ["-Fc"] if fmt == "custom" else (["-Z", "6"] if compress else [])
            with passfile_env(conninfo) as (target, env):
                proc = subprocess.Popen(
                    [*args, "-d", target],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, before exec
                )
                assert proc.stdout is not None and proc.stderr is not None
                errors: list[bytes] = []
                reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()))  # type: ignore[union-attr]
                reader.start()
                # Counted while pg_dump runs: the same snapshot, on the other core.
                facts: dict[str, Any] = {}
                counter = threading.Thread(target=_read_facts, args=(conn, facts))
                counter.start()
                digest = hashlib.sha256()
                try:
                    size = _pump(proc.stdout, out, digest, progress)
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as e:  # a full or failing disk: stop pg_dump, say why
                    proc.kill()
                    raise BackupError(f"cannot write {path}: {e.strerror or e}") from None
                finally:
                    code = proc.wait()
                    reader.join()
                    counter.join()
            conn.execute("COMMIT")
            if code != 0:
                lines = b"".join(errors).decode(errors="replace").strip().splitlines()
                raise BackupError(f"pg_dump failed: {lines[-1] if lines else f'exit {code}'}")
            if "rows" not in facts:
                raise BackupError(f"could not count the rows of the snapshot: {facts.get('error')}")
        finished = datetime.now(UTC)
        manifest = Manifest(
            file=path.name,
            format=fmt,
            compressed=fmt == "custom" or compress,
            size=size,
            sha256=digest.hexdigest(),
            database=database,
            server_version=version,
            revision=facts["rev"],
            rows=facts["rows"],
            started_at=started.isoformat(),
            finished_at=finished.isoformat(),
            seconds=round(time.perf_counter() - t0, 3),
            note=note,
            who=who,
            tool=f"pg_dump {tools.major}",
        )
        os.replace(tmp, path)
        write_manifest(path, manifest)  # last: a manifest always names a complete file
        return manifest
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# -- listing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    path: Path
    manifest: Manifest
    present: bool


@dataclass(frozen=True)
class Writing:
    """A backup being written now: its final name, the writer's pid, bytes so far."""

    name: str
    pid: int
    size: int
    since: datetime


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def writing(directory: Path) -> list[Writing]:
    """Backups being written into directory by a live process (any Brain worker or CLI)."""
    found: list[Writing] = []
    if not directory.is_dir():
        return found
    for tmp in directory.glob(f".*{PARTIAL_MARK}*"):
        name, _, pid = tmp.name[1:].rpartition(PARTIAL_MARK)
        if name.endswith(MANIFEST_SUFFIX) or not pid.isdigit() or not _alive(int(pid)):
            continue  # a manifest's few bytes, or what a killed writer left
        with contextlib.suppress(OSError):
            st = tmp.stat()
            found.append(
                Writing(name, int(pid), st.st_size, datetime.fromtimestamp(st.st_ctime, UTC))
            )
    return sorted(found, key=lambda w: w.since)


def list_backups(directory: Path) -> list[Listed]:
    """Backups with a manifest in directory, newest first."""
    found: list[Listed] = []
    if not directory.is_dir():
        return found
    for mpath in directory.glob(f"*{MANIFEST_SUFFIX}"):
        if mpath.name.startswith("."):
            continue
        with contextlib.suppress(OSError, ValueError, TypeError):
            manifest = Manifest.from_json(mpath.read_text())
            path = mpath.with_name(mpath.name.removesuffix(MANIFEST_SUFFIX))
            found.append(Listed(path, manifest, path.is_file()))
    found.sort(key=lambda x: (x.manifest.started_at, x.path.name), reverse=True)
    return found
