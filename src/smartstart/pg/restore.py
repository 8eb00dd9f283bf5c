"""Logical restore of one PostgreSQL database: into a new database, checked, then swapped in.

Knows nothing of the platform schema: the caller passes `prepare(dbname, as_loaded)`, which
brings the restored database up to date and returns the problems it finds (none: sound).
The current database is only touched once the new one has passed: it is renamed aside
(`<name>_before_restore_<timestamp>`, kept until pruned) and the new one takes its name.
"""

from __future__ import annotations

import contextlib
import getpass
import gzip
import re
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from smartstart.pg.backup import (
    CHUNK,
    HARMLESS,
    BackupError,
    Manifest,
    Tools,
    manifest_path,
    passfile_env,
    read_manifest,
    table_rows,
)
from smartstart.pg.verify import ERROR_LINE, file_sha256, sniff

Kind = Literal["custom", "plain", "gzip"]
KEPT_MARK = "_before_restore_"
RESTORING_MARK = "_restoring_"
NAME_MAX = 63  # PostgreSQL's identifier length
PLAIN_FOOTER = b"-- PostgreSQL database dump complete"
# Taken for the whole restore (and prune): one at a time per server, whoever starts it.
LOCK_KEY = 0x5357_5253  # "SWRS"
TERMINATE_WAIT = 10.0
REQUIRED_EXTENSIONS = ("pg_stat_statements",)


@dataclass(frozen=True)
class Source:
    """A file to restore, by content: its kind, and its manifest when it has one."""

    path: Path
    kind: Kind
    size: int
    manifest: Manifest | None


@dataclass(frozen=True)
class RestorePlan:
    """What `restore` would do: the file, the database replaced and the name it keeps."""

    source: Source
    database: str
    keep_as: str
    current_exists: bool
    current_size: int | None


@dataclass(frozen=True)
class Restored:
    """What `restore` did."""

    database: str
    kept_as: str | None
    kind: Kind
    seconds: float
    notes: tuple[str, ...]


def inspect(path: Path) -> Source:
    """What path holds; BackupError for an empty, foreign or (with a manifest) altered file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BackupError(f"{path}: no such file") from None
    except OSError as e:
        raise BackupError(f"{path}: {e.strerror or e}") from None
    if not path.is_file():
        raise BackupError(f"{path} is not a file")
    if size == 0:
        raise BackupError(f"{path} is empty: not a backup")
    try:
        found = sniff(path)
    except OSError as e:
        raise BackupError(f"cannot read {path}: {e.strerror or e}") from None
    if found is None:
        raise BackupError(
            f"{path} is not a PostgreSQL dump (neither pg_dump's custom format nor plain SQL, "
            "gzipped or not): refusing it"
        )
    kind: Kind = "custom" if found == "custom" else ("gzip" if found == "gzip" else "plain")
    manifest = read_manifest(path) if manifest_path(path).is_file() else None
    if manifest is not None:
        if size < manifest.size:
            raise BackupError(
                f"{path} is truncated: {size} bytes, its manifest says {manifest.size}"
            )
        if size != manifest.size:
            raise BackupError(f"{path} is {size} bytes, its manifest says {manifest.size}")
    return Source(path, kind, size, manifest)


def keep_name(database: str, now: datetime) -> str:
    """`<database>_before_restore_<YYYYMMDD_HHMMSS>`, the name fitting PostgreSQL's 63 bytes."""
    suffix = f"{KEPT_MARK}{now:%Y%m%d_%H%M%S}"
    return database.encode()[: NAME_MAX - len(suffix)].decode(errors="ignore") + suffix


def kept_time(name: str) -> datetime | None:
    """When a kept database was set aside, from its name (None: not one of ours)."""
    match = re.search(re.escape(KEPT_MARK) + r"(\d{8}_\d{6})$", name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y%m%d_%H%M%S").replace(tzinfo=UTC)


def _exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None
    )


def plan_restore(path: Path, admin: str, database: str) -> RestorePlan:
    """Check the file (content, manifest, size) and say what a restore would replace."""
    source = inspect(path)
    keep_as = keep_name(database, datetime.now(UTC))
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s", [database]
        ).fetchone()
    return RestorePlan(source, database, keep_as, row is not None, int(row[0]) if row else None)


@contextlib.contextmanager
def exclusive(admin: str) -> Iterator[psycopg.Connection[Any]]:
    """A server-wide lock for restore and prune: one at a time, from any host or process."""
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]:  # type: ignore[index]
            raise BackupError(
                "another restore or prune is running on this server", "wait for it to finish"
            )
        yield conn


# -- restoring into a new database ---------------------------------------------------------


def _filtered(src: IO[bytes], dst: IO[bytes]) -> None:
    """Copy a plain dump, dropping its `COMMENT ON EXTENSION` lines; refuse a cut-off one.

    Only the extension's owner may comment on it, and an older SmartStart cluster (or
    another server) put that comment in its dumps. The lines are dropped only before the
    first COPY, where every line is DDL; data lines pass untouched."""
    head = True
    tail = b""
    pending = b""
    while chunk := src.read(CHUNK):
        tail = (tail + chunk)[-256:]
        if head:
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            kept = []
            for line in lines:
                if head and line.startswith(b"COPY "):
                    head = False
                if head and line.startswith(b"COMMENT ON EXTENSION "):
                    continue
                kept.append(line + b"\n")
            dst.write(b"".join(kept))
        else:
            dst.write(chunk)
    dst.write(pending)
    if PLAIN_FOOTER not in tail:
        raise BackupError("the dump ends before pg_dump's closing line: truncated")


def _run_psql(source: Source, target: str, tools: Tools) -> list[str]:
    """Feed a plain (or gzipped plain) dump to psql, stopping at the first error."""
    with passfile_env(target) as (conninfo, env):
        args = [tools.path("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1"]
        with subprocess.Popen(
            [*args, "-d", conninfo],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        ) as proc:
            assert proc.stdin is not None and proc.stderr is not None
            errors: list[bytes] = []
            reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()))  # type: ignore[union-attr]
            reader.start()
            problem = None
            try:
                opener = gzip.open if source.kind == "gzip" else open
                with opener(source.path, "rb") as src:
                    _filtered(src, proc.stdin)  # type: ignore[arg-type]
            except BrokenPipeError:
                pass  # psql stopped on an error: its stderr says which
            except BackupError as e:
                problem = str(e)
            except (OSError, EOFError, zlib.error) as e:
                problem = f"cannot decompress: {e}"
            finally:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
                code = proc.wait()
                reader.join()
    text = b"".join(errors).decode(errors="replace")
    found = [line.strip() for line in text.splitlines() if ERROR_LINE.search(line)]
    if problem is not None:
        return [problem]
    if code != 0:
        return found or [text.strip().splitlines()[-1] if text.strip() else f"psql exit {code}"]
    return []


def _present_extensions(target: str) -> set[str]:
    with psycopg.connect(target, autocommit=True) as conn:
        return {str(r[0]) for r in conn.execute("SELECT extname FROM pg_extension")}


def _run_pg_restore(source: Source, target: str, tools: Tools, jobs: int) -> list[str]:
    """pg_restore -j, stopping at the first error, skipping extensions already present."""
    present = _present_extensions(target)
    with passfile_env(target) as (conninfo, env):
        listed = subprocess.run(
            [tools.path("pg_restore"), "-l", str(source.path)],
            capture_output=True,
            env=env,
            check=False,
        )
        if listed.returncode != 0:
            lines = listed.stderr.decode(errors="replace").strip().splitlines()
            return [lines[-1] if lines else "pg_restore cannot read its table of contents"]
        # The target already has these (from template1); recreating or commenting on them
        # needs their owner, the superuser.
        skip = re.compile(
            rb"^\d+; \d+ \d+ (EXTENSION|COMMENT) - (EXTENSION )?("
            + b"|".join(re.escape(e.encode()) for e in sorted(present))
            + rb") "
        )
        toc = b"\n".join(
            (b";" + line if skip.match(line) else line) for line in listed.stdout.splitlines()
        )
        list_file = Path(env["PGPASSFILE"]).with_name("toc.list")
        list_file.write_bytes(toc + b"\n")
        proc = subprocess.run(
            [
                tools.path("pg_restore"),
                "--no-password",
                "--exit-on-error",
                "--no-owner",
                "-j",
                str(jobs),
                "-L",
                str(list_file),
                "-d",
                conninfo,
                str(source.path),
            ],
            capture_output=True,
            env=env,
            check=False,
        )
    text = proc.stderr.decode(errors="replace")
    errors = [
        line.strip()
        for line in text.splitlines()
        if ERROR_LINE.search(line) and not HARMLESS.search(line)
    ]
    if proc.returncode != 0:
        return errors or [text.strip().splitlines()[-1] if text.strip() else "pg_restore failed"]
    return errors


def restore_into(source: Source, target: str, tools: Tools, *, jobs: int = 2) -> list[str]:
    """Load source into the (new, empty) database at target: the errors, none when it worked.

    With a manifest, the file's checksum is computed alongside the load (the other core),
    so a file altered since it was written is refused without reading it twice."""
    checksum: dict[str, str] = {}
    summer = None
    if source.manifest is not None:
        summer = threading.Thread(target=lambda: checksum.update(sha=file_sha256(source.path)))
        summer.start()
    if source.kind == "custom":
        errors = _run_pg_restore(source, target, tools, jobs)
    else:
        errors = _run_psql(source, target, tools)
    if summer is not None and source.manifest is not None:
        summer.join()
        if checksum.get("sha") != source.manifest.sha256:
            return ["checksum mismatch: the file changed since it was written (corrupt)"]
    return errors


def _rows_differ(target: str, manifest: Manifest | None) -> list[str]:
    """Every table's rows against the manifest's count (what pg_dump dumped)."""
    if manifest is None:
        return []
    with psycopg.connect(target, autocommit=True) as conn:
        restored = table_rows(conn)
    return [
        f"rows of {t}: {manifest.rows.get(t)} in the manifest, {restored.get(t)} restored"
        for t in sorted(set(manifest.rows) | set(restored))
        if manifest.rows.get(t) != restored.get(t)
    ]


def _missing_extensions(target: str, required: tuple[str, ...]) -> list[str]:
    present = _present_extensions(target)
    return [f"extension {e} is missing" for e in required if e not in present]


# -- switching it into place ------------------------------------------------------------------


def _terminate(conn: psycopg.Connection[Any], database: str) -> None:
    """End every session on database and wait until they are gone (a rename needs none)."""
    deadline = time.monotonic() + TERMINATE_WAIT
    while True:
        left = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [database],
        ).fetchone()
        if not left or not left[0]:
            return
        if time.monotonic() > deadline:
            raise BackupError(
                f"{left[0]} session(s) on {database} could not be ended",
                "end them (smartstart db shell --superuser) and restore again",
            )
        time.sleep(0.05)


def _alter(conn: psycopg.Connection[Any], template: str, *names: str) -> None:
    conn.execute(sql.SQL(template).format(*(sql.Identifier(n) for n in names)))


def swap(conn: psycopg.Connection[Any], database: str, new: str, keep_as: str | None) -> None:
    """Put new in database's place, keeping the current one as keep_as (dropped when None).

    New sessions are refused first, so nobody reconnects between the termination and the
    rename; clients see "not accepting connections" or "does not exist" for that moment,
    never the wrong database. Every failure puts the current database back as it was."""
    if keep_as is None:  # nothing there (a first restore, or after a reset that failed)
        _alter(conn, "ALTER DATABASE {} RENAME TO {}", new, database)
        return
    _alter(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", database)
    try:
        _terminate(conn, database)
        _alter(conn, "ALTER DATABASE {} RENAME TO {}", database, keep_as)
    except BaseException:
        _alter(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", database)
        raise
    try:
        _alter(conn, "ALTER DATABASE {} RENAME TO {}", new, database)
    except BaseException:
        _alter(conn, "ALTER DATABASE {} RENAME TO {}", keep_as, database)
        _alter(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", database)
        raise
    _alter(conn, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", keep_as)


def _drop_abandoned(conn: psycopg.Connection[Any], prefix: str) -> None:
    """Drop what a killed restore left half-loaded (the lock says none is running)."""
    for (name,) in conn.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [prefix]
    ).fetchall():
        _drop(conn, str(name))


def _drop(conn: psycopg.Connection[Any], name: str) -> None:
    _alter(conn, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


def restore(
    plan: RestorePlan,
    admin: str,
    owner: str,
    tools: Tools,
    prepare: Callable[[str, Callable[[], list[str]]], list[str]],
    *,
    jobs: int = 2,
    required_extensions: tuple[str, ...] = REQUIRED_EXTENSIONS,
    say: Callable[[str], None] = lambda _: None,
    swapping: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> Restored:
    """Restore plan's file into a new database, check it, then swap it into place.

    admin: a connection (to another database of the server) that may create, rename and
    terminate; owner: the role the restored database belongs to and is loaded as (its
    conninfo, any database). prepare(dbname, as_loaded) migrates and checks the restored
    database, returning its problems; as_loaded compares the rows with the manifest, to be
    run before anything changes them. Any failure drops the new database; the current one is
    untouched unless the swap itself runs; swapping() is around the swap (pg.restoring's
    marker, which the Brain reads when the database is out of reach)."""
    t0 = time.perf_counter()
    source = plan.source
    with exclusive(admin) as conn:
        owner_role = str(conninfo_to_dict(owner).get("user") or getpass.getuser())
        prefix = f"{plan.database.encode()[:40].decode(errors='ignore')}{RESTORING_MARK}"
        _drop_abandoned(conn, prefix)
        new = prefix + uuid.uuid4().hex[:8]
        _alter(conn, "CREATE DATABASE {} OWNER {} TEMPLATE template1", new, owner_role)
        try:
            target = make_conninfo(owner, dbname=new)
            say(f"loading {source.path.name} ({source.kind}) into a new database {new}")
            errors = restore_into(source, target, tools, jobs=jobs)
            if errors:
                raise BackupError(f"{source.path}: restore failed: {errors[0]}")
            problems = _missing_extensions(target, required_extensions)
            problems = problems or prepare(new, lambda: _rows_differ(target, source.manifest))
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise BackupError(
                    f"{source.path}: the restored database fails its checks: {problems[0]}{more}"
                )
            keep_as: str | None = keep_name(plan.database, datetime.now(UTC))
            if not _exists(conn, plan.database):
                keep_as = None
            say(f"switching {new} into place, keeping the old one as {keep_as}")
            with swapping():
                swap(conn, plan.database, new, keep_as)
        except BaseException:
            _drop(conn, new)
            raise
    return Restored(plan.database, keep_as, source.kind, round(time.perf_counter() - t0, 3), ())


# -- kept databases ----------------------------------------------------------------------


@dataclass(frozen=True)
class KeptDatabase:
    name: str
    kept_at: datetime
    size: int


def kept_databases(admin: str, database: str) -> list[KeptDatabase]:
    """The databases a restore of database set aside, newest first."""
    prefix = keep_name(database, datetime(2000, 1, 1)).removesuffix("20000101_000000")
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT datname, pg_database_size(oid) FROM pg_database WHERE starts_with(datname, %s)",
            [prefix],
        ).fetchall()
    found = []
    for name, size in rows:
        at = kept_time(str(name))
        if at is not None and str(name).startswith(prefix):
            found.append(KeptDatabase(str(name), at, int(size)))
    found.sort(key=lambda k: (k.kept_at, k.name), reverse=True)
    return found


def drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    """Drop a kept database (refused while someone is connected to it)."""
    _alter(conn, "DROP DATABASE {}", name)
