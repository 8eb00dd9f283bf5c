"""`smartstart db backup|backups|verify` against the test cluster, with real files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.db import migrate
from smartstart.pg.backup import BackupError, Tools, check_versions
from smartstart.pg.cluster import Cluster
from tests.conftest import process_env

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def make_backup(path: Path, *options: str) -> dict[str, Any]:
    result = run("db", "backup", "-o", str(path), "--json", *options)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def manifest(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.with_name(path.name + ".json").read_text()))


def one_error_line(result: Any, *words: str) -> None:
    assert result.exit_code != 0
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("options", "name", "sniff"),
    [
        ((), "b.dump", b"PGDMP"),
        (("--format", "plain"), "b.sql", b"--\n-- PostgreSQL database dump"),
        (("--format", "plain", "--compress"), "b.sql.gz", b"\x1f\x8b"),
    ],
    ids=["custom", "plain", "plain-compress"],
)
def test_backup_then_verify(
    cli_env: Any,
    seeded_settings: Settings,
    tmp_path: Path,
    options: tuple[str, ...],
    name: str,
    sniff: bytes,
) -> None:
    cli_env(seeded_settings)
    path = tmp_path / name
    made = make_backup(path, *options, "--note", "before the upgrade")
    assert path.read_bytes().startswith(sniff)
    m = manifest(path)
    assert m["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert m["size"] == path.stat().st_size == made["size"]
    assert m["revision"] == migrate.head_revision()
    assert m["rows"]["User"] == 2 and m["rows"]["Role"] > 0
    assert m["note"] == "before the upgrade" and m["who"].startswith("cli:")
    assert m["format"] == ("custom" if not options else "plain")
    assert m["server_version"] and m["started_at"] <= m["finished_at"]
    assert m["verification"] is None
    # Nothing but the backup and its manifest: the temporary file was renamed.
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, name + ".json"]

    result = run("db", "verify", str(path))
    assert result.exit_code == 0, result.output
    assert "ok" in result.stdout
    v = manifest(path)["verification"]
    assert v["ok"] is True and v["differences"] == []
    # The scratch database is gone.
    with psycopg.connect(seeded_settings.url_for()) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'smartstart_verify_%'"
        ).fetchone()
    assert left == (0,)


def test_default_location_uses_the_guides_names(cli_env: Any, seeded_settings: Settings) -> None:
    cli_env(seeded_settings)
    result = run("db", "backup", "--format", "plain", "--json")
    assert result.exit_code == 0, result.output
    path = Path(json.loads(result.stdout)["path"])
    try:
        assert path.parent == seeded_settings.home_dir / "backups"
        assert re.fullmatch(r"backup_\d{8}_\d{6}(_\d+)?\.sql", path.name), path.name
    finally:
        path.unlink()
        path.with_name(path.name + ".json").unlink()


def test_verify_finds_rows_that_differ_from_the_manifest(
    cli_env: Any, seeded_settings: Settings, tmp_path: Path
) -> None:
    """A manifest that lies about the rows (re-signed checksum and all) fails verify."""
    cli_env(seeded_settings)
    path = tmp_path / "b.dump"
    make_backup(path)
    m = manifest(path)
    m["rows"]["User"] = 3
    path.with_name("b.dump.json").write_text(json.dumps(m))
    result = run("db", "verify", str(path))
    one_error_line(result, "rows of User: 3 in the manifest, 2 restored")
    assert manifest(path)["verification"]["ok"] is False


@pytest.fixture
def custom_backup(cli_env: Any, seeded_settings: Settings, tmp_path: Path) -> Path:
    cli_env(seeded_settings)
    path = tmp_path / "good.dump"
    make_backup(path)
    return path


def _copy(src: Path, name: str, data: bytes, with_manifest: bool = True) -> Path:
    dest = src.with_name(name)
    dest.write_bytes(data)
    if with_manifest:
        dest.with_name(name + ".json").write_text(src.with_name(src.name + ".json").read_text())
    return dest


def test_verify_refuses_a_flipped_byte(custom_backup: Path) -> None:
    data = bytearray(custom_backup.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = _copy(custom_backup, "flipped.dump", bytes(data))
    one_error_line(run("db", "verify", str(bad)), "checksum mismatch", "corrupt")
    assert manifest(bad)["verification"]["ok"] is False


def test_verify_refuses_a_truncated_file(custom_backup: Path) -> None:
    data = custom_backup.read_bytes()
    bad = _copy(custom_backup, "truncated.dump", data[: len(data) // 2])
    one_error_line(run("db", "verify", str(bad)), "truncated")


def test_verify_refuses_an_empty_file(custom_backup: Path) -> None:
    bad = _copy(custom_backup, "empty.dump", b"")
    one_error_line(run("db", "verify", str(bad)), "is empty")


@pytest.mark.parametrize("with_manifest", [True, False])
def test_verify_refuses_a_foreign_file(custom_backup: Path, with_manifest: bool) -> None:
    bad = _copy(custom_backup, "photo.dump", b"\x89PNG\r\n\x1a\n" + bytes(500), with_manifest)
    one_error_line(run("db", "verify", str(bad)), "not a PostgreSQL dump")


def test_verify_refuses_a_dump_without_its_manifest(custom_backup: Path) -> None:
    bare = _copy(custom_backup, "bare.dump", custom_backup.read_bytes(), with_manifest=False)
    one_error_line(run("db", "verify", str(bare)), "no manifest beside it")


def test_verify_of_a_missing_file(cli_env: Any, seeded_settings: Settings, tmp_path: Path) -> None:
    cli_env(seeded_settings)
    one_error_line(run("db", "verify", str(tmp_path / "nope.dump")), "no such file")


def test_listing_is_newest_first_with_the_page_shape(
    cli_env: Any, seeded_settings: Settings, tmp_path: Path
) -> None:
    cli_env(seeded_settings)
    for note, fmt in (("first", "custom"), ("second", "plain"), ("third", "custom")):
        make_backup(tmp_path / f"{note}.bak", "--format", fmt, "--note", note)
    run("db", "verify", str(tmp_path / "second.bak"))
    result = run("db", "backups", "--dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    page = json.loads(result.stdout)
    assert set(page) == {"items", "next_cursor"} and page["next_cursor"] is None
    assert [i["note"] for i in page["items"]] == ["third", "second", "first"]
    assert [i["verified"] for i in page["items"]] == [None, True, None]
    first = page["items"][0]
    assert first["revision"] == migrate.head_revision() and first["present"] is True
    assert {"age", "size", "format", "sha256", "rows", "path"} <= set(first)
    table = run("db", "backups", "--dir", str(tmp_path))
    assert table.exit_code == 0
    text = table.stdout
    assert text.index("third.bak") < text.index("second.bak") < text.index("first.bak")
    assert "ok " in text and "never" in text


def test_unknown_format_is_one_line_and_writes_nothing(
    cli_env: Any, seeded_settings: Settings, tmp_path: Path
) -> None:
    cli_env(seeded_settings)
    one_error_line(run("db", "backup", "--format", "zip", "-o", str(tmp_path)), "unknown format")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["under a file", "missing directory", "existing file"])
def test_unwritable_output_is_one_line(
    cli_env: Any, seeded_settings: Settings, tmp_path: Path, where: str
) -> None:
    cli_env(seeded_settings)
    (tmp_path / "afile").write_text("x")
    target = {
        "under a file": tmp_path / "afile" / "b.dump",
        "missing directory": tmp_path / "nope" / "b.dump",
        "existing file": tmp_path / "afile",
    }[where]
    one_error_line(run("db", "backup", "-o", str(target)), str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert (tmp_path / "afile").read_text() == "x"


def test_a_too_long_note_is_refused(
    cli_env: Any, seeded_settings: Settings, tmp_path: Path
) -> None:
    cli_env(seeded_settings)
    one_error_line(run("db", "backup", "-o", str(tmp_path), "--note", "x" * 501), "--note")
    assert list(tmp_path.iterdir()) == []


def test_client_older_than_the_server_is_named() -> None:
    with pytest.raises(BackupError, match="pg_dump 14 .* cannot dump a PostgreSQL 15 server"):
        check_versions(Tools(Path("/usr/bin"), 14), 15)
    check_versions(Tools(Path("/usr/bin"), 16), 15)


def test_backup_and_verify_through_database_url(
    monkeypatch: pytest.MonkeyPatch, seeded_settings: Settings, tmp_path: Path
) -> None:
    """An external server (SMARTSTART_DATABASE_URL): the platform user dumps and verifies."""
    monkeypatch.setenv("SMARTSTART_DATABASE_URL", seeded_settings.url_for())
    monkeypatch.setenv("SMARTSTART_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SMARTSTART_ENV", "test")
    from smartstart.config import get_settings

    get_settings.cache_clear()
    path = tmp_path / "ext.sql.gz"
    make_backup(path, "--format", "plain", "--compress")
    result = run("db", "verify", str(path))
    assert result.exit_code == 0, result.output


def _waiting_pg_dump(url: str, dbname: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [
            int(r[0])
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_dump'"
                " AND datname = %s",
                [dbname],
            )
        ]


def test_sigkill_mid_backup_leaves_nothing_that_looks_complete(
    pg_cluster: Cluster, seeded_settings: Settings, tmp_path: Path
) -> None:
    target = tmp_path / "killed.dump"
    url = seeded_settings.url_for()
    # pg_dump waits for this lock, so the backup is surely running when it is killed.
    with psycopg.connect(url) as locker:
        locker.execute('LOCK TABLE "User" IN ACCESS EXCLUSIVE MODE')
        proc = subprocess.Popen(
            [sys.executable, "-m", "smartstart.cli.main", "db", "backup", "-o", str(target)],
            env=process_env(seeded_settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while not _waiting_pg_dump(url, seeded_settings.db_name):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "pg_dump never started"
            time.sleep(0.05)
        assert [p.name for p in tmp_path.iterdir()] != []  # the temporary file exists
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        locker.rollback()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "killed.dump" not in names and "killed.dump.json" not in names
    assert all(n.startswith(".killed.dump.partial-") for n in names), names
    # pg_dump died with it (it does not go on dumping into a file nobody will rename).
    deadline = time.monotonic() + 10
    while _waiting_pg_dump(url, seeded_settings.db_name):
        assert time.monotonic() < deadline, "pg_dump outlived the killed backup"
        time.sleep(0.05)
    with pytest.raises(BackupError):
        from smartstart.pg.verify import check_file

        check_file(tmp_path / names[0])


def test_an_older_pg_dump_is_refused_naming_both_versions(
    monkeypatch: pytest.MonkeyPatch, seeded_settings: Settings, tmp_path: Path
) -> None:
    """SMARTSTART_PG_BIN pointing at a PostgreSQL 9 client, against a newer server."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("pg_dump", "pg_restore", "psql"):
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) 9.6.24'\n")
        tool.chmod(0o755)
    monkeypatch.setenv("SMARTSTART_DATABASE_URL", seeded_settings.url_for())
    monkeypatch.setenv("SMARTSTART_PG_BIN", str(bin_dir))
    monkeypatch.setenv("SMARTSTART_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SMARTSTART_ENV", "test")
    from smartstart.config import get_settings

    get_settings.cache_clear()
    out = tmp_path / "out"
    out.mkdir()
    result = run("db", "backup", "-o", str(out))
    one_error_line(result, "pg_dump 9", "cannot dump a PostgreSQL 1", "SMARTSTART_PG_BIN")
    assert list(out.iterdir()) == []
