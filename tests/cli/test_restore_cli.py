"""`smartstart db restore` against the test cluster, with real files made by real pg_dump."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.db import migrate
from smartstart.pg.cluster import Cluster
from tests.cli.test_backup_cli import one_error_line
from tests.conftest import DB_PASSWORD, DB_USER, drop_db, settings_for

runner = CliRunner()
TABLES = (
    "User",
    "Role",
    "Permission",
    "UserRole",
    "RolePermission",
    "JourneyStage",
    "UserJourneyState",
    "Session",
)


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def content(settings: Settings) -> dict[str, list[str]]:
    """Every row of the platform's tables, as text, in order."""
    with psycopg.connect(settings.url_for()) as conn:
        return {
            t: [
                str(r[0])
                for r in conn.execute(
                    sql.SQL("SELECT x::text FROM {} x ORDER BY 1").format(sql.Identifier(t))
                )
            ]
            for t in TABLES
        }


def databases(cluster: Cluster, settings: Settings) -> set[str]:
    """The databases a restore of settings' database made or set aside."""
    with cluster.connect() as conn:
        return {
            str(r[0])
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                [settings.db_name + "_"],
            )
        }


def audited(settings: Settings, action: str) -> list[tuple[Any, ...]]:
    """(actor, resourceId, details) of settings' database's audit rows for action."""
    with psycopg.connect(settings.url_for()) as conn:
        return conn.execute(
            'SELECT actor, "resourceId", details FROM audit_log WHERE action = %s ORDER BY id',
            [action],
        ).fetchall()


def new_database(cluster: Cluster, name: str, template: str = "template1") -> Settings:
    """An (empty, or copied) database owned by the platform user."""
    with cluster.connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(DB_USER), sql.Identifier(template)
            )
        )
    return settings_for(cluster, name)


@pytest.fixture
def target(cli_env: Any, seeded_settings: Settings, pg_cluster: Cluster) -> Iterator[Settings]:
    """The CLI pointed at a seeded database; what a restore leaves beside it is dropped."""
    cli_env(seeded_settings)
    yield seeded_settings
    for name in databases(pg_cluster, seeded_settings):
        drop_db(pg_cluster, name)


def backup(path: Path, *options: str) -> Path:
    result = run("db", "backup", "-o", str(path), *options)
    assert result.exit_code == 0, result.output
    return path


def mutate(settings: Settings) -> None:
    with psycopg.connect(settings.url_for(), autocommit=True) as conn:
        conn.execute(
            """UPDATE "User" SET xp = xp + 700, "firstName" = 'Changed' WHERE email LIKE 'admin%'"""
        )
        conn.execute('DELETE FROM "Session"')
        conn.execute("""INSERT INTO "JourneyStage" (name, "order") VALUES ('extra', 99)""")


def pg_dump(cluster: Cluster, settings: Settings, path: Path, *options: str) -> Path:
    """The guide's `pg_dump -U smartstart_user [-Z 9] smartstart_db > file`."""
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGPASSWORD": DB_PASSWORD}
    with path.open("wb") as out:
        subprocess.run(
            [str(cluster.bin_dir / "pg_dump"), "-U", DB_USER, *options, settings.db_name],
            stdout=out,
            env=env,
            check=True,
        )
    return path


@pytest.mark.parametrize(
    "options",
    [(), ("--format", "plain"), ("--format", "plain", "--compress")],
    ids=["custom", "plain", "plain-gz"],
)
def test_backup_mutate_restore_gives_identical_rows(
    target: Settings, pg_cluster: Cluster, tmp_path: Path, options: tuple[str, ...]
) -> None:
    before = content(target)
    path = backup(tmp_path / "b", *options)
    (created,) = audited(target, "backup.create")
    assert created[0].startswith("cli:") and created[1] == path.name
    assert created[2]["outcome"] == "ok" and created[2]["sha256"]
    assert created[2]["format"] == ("plain" if options else "custom")
    mutate(target)
    mutated = content(target)
    assert mutated != before
    result = run("db", "restore", str(path), "--yes")
    assert result.exit_code == 0, result.output
    assert content(target) == before
    # The previous database is kept, untouched, under a dated name.
    kept = [n for n in databases(pg_cluster, target) if "_before_restore_" in n]
    assert len(kept) == 1 and kept[0] in result.stdout
    assert content(settings_for(pg_cluster, kept[0])) == mutated
    # Nothing half-made is left, and the restored database is sound.
    assert not [n for n in databases(pg_cluster, target) if "_restoring_" in n]
    assert migrate.check(target.sqlalchemy_url())["ok"]
    with psycopg.connect(target.url_for()) as conn:
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
    # In the restored database (the dump predates its own backup.create row).
    (restored,) = audited(target, "backup.restore")
    assert restored[0].startswith("cli:") and restored[1] == path.name
    assert restored[2]["kept_as"] == kept[0] and restored[2]["outcome"] == "ok"
    assert audited(target, "backup.create") == []
    assert [r[1] for r in audited(settings_for(pg_cluster, kept[0]), "backup.create")] == [
        path.name
    ]


def test_dry_run_describes_and_changes_nothing(
    target: Settings, pg_cluster: Cluster, tmp_path: Path
) -> None:
    path = backup(tmp_path / "b.dump")
    mutate(target)
    mutated = content(target)
    result = run("db", "restore", str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run" in result.stdout and "_before_restore_" in result.stdout
    assert content(target) == mutated and databases(pg_cluster, target) == set()


def test_a_no_at_the_prompt_changes_nothing(target: Settings, tmp_path: Path) -> None:
    path = backup(tmp_path / "b.dump")
    mutate(target)
    mutated = content(target)
    result = run("db", "restore", str(path), input="n\n")
    assert result.exit_code != 0 and "Replace" in result.stderr
    assert content(target) == mutated


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "Z9"])
def test_the_guides_dumps_restore_detected_by_content(
    target: Settings, pg_cluster: Cluster, tmp_path: Path, compressed: bool
) -> None:
    """The guide's own files, without a manifest; the -Z 9 one named like a plain one."""
    before = content(target)
    path = pg_dump(pg_cluster, target, tmp_path / "backup.sql", *(["-Z", "9"] * compressed))
    assert path.read_bytes().startswith(b"\x1f\x8b") == compressed
    mutate(target)
    result = run("db", "restore", str(path), "--yes")
    assert result.exit_code == 0, result.output
    assert content(target) == before
    assert migrate.check(target.sqlalchemy_url())["ok"]


def _assert_untouched(target: Settings, cluster: Cluster, expected: dict[str, list[str]]) -> None:
    assert content(target) == expected
    assert databases(cluster, target) == set(), "a restore left a database behind"


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x20
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("truncated", ("truncated",)),
        ("flipped", ("checksum",)),
        ("empty", ("empty",)),
        ("foreign", ("not a PostgreSQL dump",)),
    ],
)
def test_a_bad_backup_is_refused_and_the_database_untouched(
    target: Settings, pg_cluster: Cluster, tmp_path: Path, damage: str, words: tuple[str, ...]
) -> None:
    path = backup(tmp_path / "b.dump")
    mutate(target)
    mutated = content(target)
    size = path.stat().st_size
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: size // 2])
    elif damage == "flipped":
        _flip(path, size // 2)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    one_error_line(run("db", "restore", str(path), "--yes"), *words)
    _assert_untouched(target, pg_cluster, mutated)


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "Z9"])
def test_a_damaged_guide_dump_is_refused(
    target: Settings, pg_cluster: Cluster, tmp_path: Path, compressed: bool, damage: str
) -> None:
    """No manifest: the gzip CRC, the dump's closing line and the checks catch it."""
    path = pg_dump(pg_cluster, target, tmp_path / "backup.sql", *(["-Z", "9"] * compressed))
    mutate(target)
    mutated = content(target)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) * 2 // 3])
    elif compressed:
        _flip(path, len(data) // 2)
    else:  # a plain dump has no checksum: flip a byte of the schema, which the checks see
        at = data.index(b"CREATE TRIGGER") + len("CREATE TRIGGER ") + 1
        _flip(path, at)
    result = run("db", "restore", str(path), "--yes")
    one_error_line(result)
    _assert_untouched(target, pg_cluster, mutated)


def test_a_dump_of_another_database_is_refused(
    target: Settings, pg_cluster: Cluster, tmp_path: Path
) -> None:
    other = new_database(pg_cluster, f"{target.db_name}_other")
    with psycopg.connect(other.url_for(), autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int PRIMARY KEY, total numeric)")
    path = pg_dump(pg_cluster, other, tmp_path / "other.sql")
    drop_db(pg_cluster, other.db_name)
    before = content(target)
    one_error_line(run("db", "restore", str(path), "--yes"), "not a SmartStart database")
    _assert_untouched(target, pg_cluster, before)


def test_an_older_revision_is_migrated_up(
    target: Settings, pg_cluster: Cluster, tmp_path: Path
) -> None:
    old_settings = new_database(pg_cluster, f"{target.db_name}_old")
    migrate.upgrade(old_settings.sqlalchemy_url(), "0003")
    path = pg_dump(pg_cluster, old_settings, tmp_path / "old.sql")
    drop_db(pg_cluster, old_settings.db_name)
    result = run("db", "restore", str(path), "--yes")
    assert result.exit_code == 0, result.output
    check = migrate.check(target.sqlalchemy_url())
    assert check["ok"] and check["current"] == migrate.head_revision(), check


def test_a_newer_revision_is_refused(target: Settings, pg_cluster: Cluster, tmp_path: Path) -> None:
    newer = new_database(pg_cluster, f"{target.db_name}_new", target.db_name)
    with psycopg.connect(newer.url_for(), autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    path = pg_dump(pg_cluster, newer, tmp_path / "newer.sql")
    drop_db(pg_cluster, newer.db_name)
    mutate(target)
    mutated = content(target)
    one_error_line(run("db", "restore", str(path), "--yes"), "9999_from_the_future", "newer")
    _assert_untouched(target, pg_cluster, mutated)
    # With a manifest, the revision is refused before any loading.
    ours = backup(tmp_path / "b.dump")
    manifest = ours.with_name("b.dump.json")
    m = json.loads(manifest.read_text())
    m["revision"] = "9999_from_the_future"
    manifest.write_text(json.dumps(m))
    one_error_line(run("db", "restore", str(ours), "--dry-run"), "newer")


@pytest.mark.parametrize(
    "arg",
    ["missing.dump", "a" * 5000, "dir"],
    ids=["missing", "huge", "directory"],
)
def test_bad_file_arguments_are_one_line(target: Settings, tmp_path: Path, arg: str) -> None:
    if arg == "dir":
        arg = str(tmp_path)
    elif arg == "missing.dump":
        arg = str(tmp_path / arg)
    result = run("db", "restore", arg, "--yes")
    one_error_line(result)


def test_a_nul_in_the_file_name_is_one_line(target: Settings) -> None:
    one_error_line(run("db", "restore", "a\0b.dump", "--yes"))


def test_gzip_of_something_else_is_foreign(target: Settings, tmp_path: Path) -> None:
    path = tmp_path / "backup.sql.gz"
    path.write_bytes(gzip.compress(b"hello, not SQL\n" * 100))
    one_error_line(run("db", "restore", str(path), "--yes"), "not a PostgreSQL dump")


def _listed(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".json"))


def test_prune_keeps_the_newest_n_and_the_last_verified(target: Settings, tmp_path: Path) -> None:
    verified = backup(tmp_path / "a_verified.dump")
    assert run("db", "verify", str(verified)).exit_code == 0
    for name in ("b.dump", "c.dump", "d.dump"):
        backup(tmp_path / name)
        time.sleep(0.01)  # distinct start times: newest first is well defined
    dry = run("db", "prune", "--keep", "1", "--dir", str(tmp_path), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.stdout and len(_listed(tmp_path)) == 4
    no = run("db", "prune", "--keep", "1", "--dir", str(tmp_path), input="n\n")
    assert no.exit_code != 0 and len(_listed(tmp_path)) == 4
    done = run("db", "prune", "--keep", "1", "--dir", str(tmp_path), "--yes")
    assert done.exit_code == 0, done.output
    assert _listed(tmp_path) == ["a_verified.dump", "d.dump"]
    # Even --keep 0 leaves the only verified backup, manifest and all.
    assert run("db", "prune", "--keep", "0", "--dir", str(tmp_path), "--yes").exit_code == 0
    assert _listed(tmp_path) == ["a_verified.dump"]
    assert (tmp_path / "a_verified.dump.json").is_file()


def test_prune_older_than_spares_what_is_younger(target: Settings, tmp_path: Path) -> None:
    backup(tmp_path / "b.dump")
    result = run("db", "prune", "--older-than", "30d", "--dir", str(tmp_path), "--yes")
    assert result.exit_code == 0, result.output
    assert _listed(tmp_path) == ["b.dump"]


def test_prune_removes_kept_databases(
    target: Settings, pg_cluster: Cluster, tmp_path: Path
) -> None:
    path = backup(tmp_path / "b.dump")
    assert run("db", "restore", str(path), "--yes").exit_code == 0
    assert [n for n in databases(pg_cluster, target) if "_before_restore_" in n]
    result = run("db", "prune", "--keep", "0", "--dir", str(tmp_path), "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert databases(pg_cluster, target) == set()
    assert json.loads(result.stdout)["deleted"]


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--older-than", "soon"),
        ("--older-than", "x" * 100_000),
        ("--keep", "-1"),
        ("--older-than", "3\0d"),
        ("--keep", "many"),
    ],
    ids=["nothing", "bad-age", "huge-age", "negative", "nul", "not-a-number"],
)
def test_prune_bad_input_is_one_line(
    target: Settings, tmp_path: Path, args: tuple[str, ...]
) -> None:
    backup(tmp_path / "b.dump")
    result = run("db", "prune", *args, "--dir", str(tmp_path), "--yes")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") <= 1 or "Usage" in result.stderr, result.stderr
    assert _listed(tmp_path) == ["b.dump"]


def test_reset_takes_a_safety_backup_and_says_where(target: Settings) -> None:
    before = content(target)
    result = run("db", "reset", "--yes")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if "safety backup" in x)
    path = Path(line.split("safety backup: ", 1)[1].split(" ", 1)[0])
    assert path.is_file() and path.parent == target.home_dir / "backups"
    assert json.loads(path.with_name(path.name + ".json").read_text())["note"]
    # It brings the data back.
    assert run("db", "restore", str(path), "--yes").exit_code == 0
    assert content(target) == before
    path.unlink()
    path.with_name(path.name + ".json").unlink()


def test_reset_no_backup_skips_it(target: Settings) -> None:
    directory = target.home_dir / "backups"
    before = set(directory.iterdir()) if directory.is_dir() else set()
    dry = run("db", "reset", "--dry-run")
    assert "safety backup into" in dry.stdout
    result = run("db", "reset", "--yes", "--no-backup")
    assert result.exit_code == 0, result.output
    assert "safety backup" not in result.stdout
    assert (set(directory.iterdir()) if directory.is_dir() else set()) == before


def test_restore_through_database_url(
    monkeypatch: pytest.MonkeyPatch,
    seeded_settings: Settings,
    pg_cluster: Cluster,
    tmp_path: Path,
) -> None:
    """An external server: the platform user (CREATEDB, owner) restores, renames, keeps."""
    monkeypatch.setenv("SMARTSTART_DATABASE_URL", seeded_settings.url_for())
    monkeypatch.setenv("SMARTSTART_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SMARTSTART_ENV", "test")
    from smartstart.config import get_settings

    get_settings.cache_clear()
    try:
        before = content(seeded_settings)
        path = backup(tmp_path / "b.sql", "--format", "plain")
        mutate(seeded_settings)
        result = run("db", "restore", str(path), "--yes")
        assert result.exit_code == 0, result.output
        assert content(seeded_settings) == before
        assert [n for n in databases(pg_cluster, seeded_settings) if "_before_restore_" in n]
    finally:
        for name in databases(pg_cluster, seeded_settings):
            drop_db(pg_cluster, name)


def test_a_killed_restore_leaves_nothing_the_next_one_trips_on(
    target: Settings, pg_cluster: Cluster, tmp_path: Path
) -> None:
    """A half-loaded database of a restore killed mid-way is dropped by the next restore."""
    abandoned = f"{target.db_name}_restoring_deadbeef"
    with pg_cluster.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(abandoned)))
    path = backup(tmp_path / "b.dump")
    assert run("db", "restore", str(path), "--yes").exit_code == 0
    assert abandoned not in databases(pg_cluster, target)


def test_rows_that_differ_from_the_manifest_are_refused(
    target: Settings, pg_cluster: Cluster, tmp_path: Path
) -> None:
    """A manifest whose row counts disagree with what loads: refused before the swap."""
    path = backup(tmp_path / "b.dump")
    manifest = path.with_name("b.dump.json")
    m = json.loads(manifest.read_text())
    m["rows"]["User"] += 1
    manifest.write_text(json.dumps(m))
    mutate(target)
    mutated = content(target)
    one_error_line(run("db", "restore", str(path), "--yes"), "rows of User")
    _assert_untouched(target, pg_cluster, mutated)
    # The attempt is audited in the database it left untouched.
    (failed,) = audited(target, "backup.restore")
    assert failed[0].startswith("cli:") and failed[1] == path.name
    assert failed[2]["outcome"] == "failed" and "rows of User" in failed[2]["error"]
