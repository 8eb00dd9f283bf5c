"""Verify a logical backup: checksum, restore into a scratch database, compare, drop.

Knows nothing of the platform schema: the caller passes `check(dbname)`, which returns the
differences it finds in the restored database (empty when it is sound).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import re
import shutil
import subprocess
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from smartstart.pg.backup import (
    CHUNK,
    CUSTOM_MAGIC,
    GZIP_MAGIC,
    HARMLESS,
    PLAIN_HEAD,
    BackupError,
    Manifest,
    Tools,
    Verification,
    passfile_env,
    read_manifest,
    table_rows,
    write_manifest,
)

ERROR_LINE = re.compile(r"\berror:", re.IGNORECASE)
SCRATCH_PREFIX = "smartstart_verify_"


def sniff(path: Path) -> str | None:
    """What the file holds, by content: custom, plain, gzip (plain SQL), or None."""
    with path.open("rb") as f:
        head = f.read(64)
    if head.startswith(CUSTOM_MAGIC):
        return "custom"
    if head.startswith(PLAIN_HEAD):
        return "plain"
    if head.startswith(GZIP_MAGIC):
        with contextlib.suppress(OSError, EOFError, zlib.error), gzip.open(path, "rb") as g:
            if g.read(len(PLAIN_HEAD)) == PLAIN_HEAD:
                return "gzip"
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: Path) -> Manifest:
    """The file is a whole, unaltered backup with its manifest; BackupError otherwise."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise BackupError(f"{path} is empty: not a backup")
    kind = sniff(path)
    if kind is None:
        raise BackupError(
            f"{path} is not a PostgreSQL dump (neither pg_dump's custom format nor plain SQL, "
            "gzipped or not): refusing it"
        )
    manifest = read_manifest(path)
    expected = (
        "custom" if manifest.format == "custom" else ("gzip" if manifest.compressed else "plain")
    )
    if kind != expected:
        raise BackupError(f"{path} holds a {kind} dump, but its manifest says {expected}")
    return manifest


def _integrity(path: Path, manifest: Manifest) -> str | None:
    size = path.stat().st_size
    if size < manifest.size:
        return f"truncated: {size} bytes, the manifest says {manifest.size}"
    if size != manifest.size:
        return f"size differs: {size} bytes, the manifest says {manifest.size}"
    if file_sha256(path) != manifest.sha256:
        return "checksum mismatch: the file changed since it was written (corrupt)"
    return None


def _restore(path: Path, kind: str, target: str, tools: Tools) -> list[str]:
    """Restore into target; the errors that matter (none when it worked)."""
    with passfile_env(target) as (conninfo, env):
        if kind == "custom":
            proc = subprocess.run(
                # The scratch database is the restoring user's, whoever owned the objects
                # dumped and granted on them (a hardened database's owner role, say).
                [
                    tools.path("pg_restore"),
                    "--no-password",
                    "--no-owner",
                    "--no-acl",
                    "-d",
                    conninfo,
                    str(path),
                ],
                capture_output=True,
                env=env,
                check=False,
            )
        else:
            args = [tools.path("psql"), "-X", "-q", "--no-password", "-d", conninfo]
            if kind == "plain":
                proc = subprocess.run([*args, "-f", str(path)], capture_output=True, env=env)
            else:
                with subprocess.Popen(
                    args,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                ) as p:
                    assert p.stdin is not None
                    try:
                        with gzip.open(path, "rb") as src:
                            shutil.copyfileobj(src, p.stdin, CHUNK)
                    except (OSError, EOFError, zlib.error) as e:
                        p.stdin.close()
                        p.communicate()
                        return [f"cannot decompress: {e}"]
                    out, err = p.communicate()
                proc = subprocess.CompletedProcess(args, p.returncode, out, err)
    text = proc.stderr.decode(errors="replace")
    errors = [
        line.strip()
        for line in text.splitlines()
        if ERROR_LINE.search(line) and not HARMLESS.search(line)
    ]
    if proc.returncode != 0 and not errors and kind != "custom":
        errors.append(text.strip().splitlines()[-1] if text.strip() else f"exit {proc.returncode}")
    return errors


def verify(
    path: Path,
    conninfo: str,
    tools: Tools,
    check: Callable[[str], list[str]],
) -> Verification:
    """Check path against its manifest, restore it into a scratch database and compare.

    conninfo reaches a database on the server whose user may CREATE DATABASE; the scratch
    database is always dropped. The result is recorded in the manifest and returned."""
    manifest = check_file(path)
    kind = "custom" if manifest.format == "custom" else ("gzip" if manifest.compressed else "plain")
    t0 = time.perf_counter()
    at = datetime.now(UTC).isoformat()
    differences: list[str] = []
    problem = _integrity(path, manifest)
    if problem is None:
        scratch = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}"
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
            try:
                target = make_conninfo(conninfo, dbname=scratch)
                errors = _restore(path, kind, target, tools)
                if errors:
                    problem = f"restore failed: {errors[0]}"
                else:
                    with psycopg.connect(target, autocommit=True) as conn:
                        restored = table_rows(conn)
                    for table in sorted(set(manifest.rows) | set(restored)):
                        want, got = manifest.rows.get(table), restored.get(table)
                        if want != got:
                            differences.append(
                                f"rows of {table}: {want} in the manifest, {got} restored"
                            )
                    differences += check(scratch)
                    if differences:
                        problem = differences[0] + (
                            f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
                        )
            finally:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(scratch)
                    )
                )
    total = sum(manifest.rows.values())
    result = Verification(
        ok=problem is None,
        at=at,
        message=problem or f"restored {total} rows in {len(manifest.rows)} tables; schema sound",
        seconds=round(time.perf_counter() - t0, 3),
        differences=differences,
    )
    manifest.verification = result
    write_manifest(path, manifest)
    return result
