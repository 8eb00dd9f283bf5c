"""`smartstart db …` through Typer's CliRunner against the test cluster."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.db import migrate
from smartstart.pg.cluster import Cluster, find_bin_dir
from tests.conftest import process_env

runner = CliRunner()


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def count(settings: Settings, table: str) -> int:
    with psycopg.connect(settings.url_for()) as conn:
        return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # type: ignore[index]


def test_status_json_reports_the_running_server(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    result = run("db", "status", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    assert row["state"] == "running" and row["port"] == db_settings.pg_port
    assert row["pid"] > 0 and "***" in row["url"]


def test_url_and_shell_reach_the_platform_database(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    url = run("db", "url").output.strip()
    assert url == db_settings.url_for()
    assert "***" in run("db", "url", "--masked").output
    result = run("db", "shell", "-c", "SELECT 1")
    assert result.exit_code == 0


def test_shell_exit_code_follows_psql(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    assert run("db", "shell", "-c", "SELECT * FROM no_such_table").exit_code != 0


def test_current_and_history(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    head = migrate.head_revision()
    current = json.loads(run("db", "current", "--json").output)
    assert current == {"current": head, "head": head}
    history = json.loads(run("db", "history", "--json").output)
    assert history[0]["revision"] == head and history[0]["is_head"]


def test_check_passes_at_head_and_fails_on_drift(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    ok = run("db", "check")
    assert ok.exit_code == 0 and "no drift" in ok.output
    with psycopg.connect(db_settings.url_for(), autocommit=True) as conn:
        conn.execute('ALTER TABLE "User" ADD COLUMN "newField" VARCHAR(255)')
    drift = run("db", "check")
    assert drift.exit_code == 1
    assert "User.newField" in drift.output


def test_check_fails_when_behind_head(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    migrate.downgrade(db_settings.sqlalchemy_url(), "base")
    result = run("db", "check", "--json")
    assert result.exit_code == 1
    assert json.loads(result.output)["current"] is None


def test_downgrade_asks_and_a_no_changes_nothing(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    result = run("db", "downgrade", input="n\n")
    assert result.exit_code == 1
    assert migrate.current_revision(db_settings.sqlalchemy_url()) == migrate.head_revision()
    dry = run("db", "downgrade", "--dry-run")
    assert dry.exit_code == 0 and "would revert" in dry.output
    assert migrate.current_revision(db_settings.sqlalchemy_url()) == migrate.head_revision()


def test_downgrade_then_migrate(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    assert run("db", "downgrade", "base", "--yes").exit_code == 0
    assert migrate.current_revision(db_settings.sqlalchemy_url()) is None
    plan = run("db", "migrate", "--dry-run")
    assert migrate.head_revision() in plan.output  # type: ignore[operator]
    assert migrate.current_revision(db_settings.sqlalchemy_url()) is None
    assert run("db", "migrate").exit_code == 0
    assert migrate.current_revision(db_settings.sqlalchemy_url()) == migrate.head_revision()


def test_seed_is_idempotent(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    first = run("db", "seed")
    assert first.exit_code == 0, first.output
    users = count(db_settings, "User")
    assert users >= 2
    second = run("db", "seed")
    assert second.exit_code == 0 and "nothing new" in second.output
    assert count(db_settings, "User") == users


def test_seed_demo_users(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    result = run("db", "seed", "--demo-users", "250")
    assert result.exit_code == 0, result.output
    assert count(db_settings, "User") == 252
    audit = count(db_settings, "audit_log")
    result = run("db", "seed", "--demo-users", "10", "--demo-audit-per-user", "2")
    assert result.exit_code == 0, result.output
    assert count(db_settings, "User") == 262
    assert count(db_settings, "audit_log") == audit + 20
    refused = run("db", "seed", "--demo-users", "1", "--demo-audit-per-user", "-1")
    assert refused.exit_code != 0 and count(db_settings, "User") == 262


def test_reset_shows_counts_and_a_no_keeps_the_data(
    cli_env: Any, seeded_settings: Settings
) -> None:
    cli_env(seeded_settings)
    users = count(seeded_settings, "User")
    result = run("db", "reset", input="n\n")
    assert result.exit_code == 1
    assert "User" in result.output and str(users) in result.output
    assert count(seeded_settings, "User") == users
    dry = run("db", "reset", "--dry-run")
    assert dry.exit_code == 0 and "would drop" in dry.output
    assert count(seeded_settings, "User") == users


def test_reset_yes_recreates_migrates_and_seeds(cli_env: Any, seeded_settings: Settings) -> None:
    cli_env(seeded_settings)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        conn.execute("CREATE TABLE scratch (x int)")
    result = run("db", "reset", "--yes")
    assert result.exit_code == 0, result.output
    with psycopg.connect(seeded_settings.url_for()) as conn:
        assert conn.execute("SELECT to_regclass('scratch')").fetchone() == (None,)
    assert count(seeded_settings, "Role") > 0
    assert migrate.current_revision(seeded_settings.sqlalchemy_url()) == migrate.head_revision()


def test_reset_no_seed_leaves_it_empty(cli_env: Any, seeded_settings: Settings) -> None:
    cli_env(seeded_settings)
    assert run("db", "reset", "--yes", "--no-seed").exit_code == 0
    assert count(seeded_settings, "User") == 0


@pytest.mark.parametrize("command", [["db", "start"], ["db", "stop"], ["db", "restart"]])
def test_external_database_is_never_started_or_stopped(
    monkeypatch: pytest.MonkeyPatch, db_settings: Settings, command: list[str]
) -> None:
    monkeypatch.setenv("SMARTSTART_DATABASE_URL", db_settings.url_for())
    result = run(*command)
    assert result.exit_code != 0
    assert "SMARTSTART_DATABASE_URL" in result.output


def test_reset_refuses_an_external_database_without_force(
    monkeypatch: pytest.MonkeyPatch, seeded_settings: Settings
) -> None:
    monkeypatch.setenv("SMARTSTART_DATABASE_URL", seeded_settings.url_for())
    users = count(seeded_settings, "User")
    result = run("db", "reset", "--yes")
    assert result.exit_code != 0 and "--force" in result.output
    assert count(seeded_settings, "User") == users


def test_reset_external_with_force(
    monkeypatch: pytest.MonkeyPatch, seeded_settings: Settings, tmp_path: Path
) -> None:
    monkeypatch.setenv("SMARTSTART_DATABASE_URL", seeded_settings.url_for())
    # The seed writes initial-credentials into the home: never the checkout's .smartstart.
    monkeypatch.setenv("SMARTSTART_HOME", str(tmp_path))
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        conn.execute("INSERT INTO audit_log (action) VALUES ('marker')")
    result = run("db", "reset", "--yes", "--force")
    assert result.exit_code == 0, result.output
    assert count(seeded_settings, "audit_log") == 0
    assert count(seeded_settings, "Role") > 0
    assert (tmp_path / "initial-credentials").exists()


def test_wrong_password_is_one_readable_line(
    monkeypatch: pytest.MonkeyPatch, db_settings: Settings
) -> None:
    bad = db_settings.url_for().replace("smartstart_password", "nope")
    monkeypatch.setenv("SMARTSTART_DATABASE_URL", bad)
    result = run("db", "current")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "credentials" in result.output and "SMARTSTART_DATABASE_URL" in result.output


def test_unreachable_url_is_one_readable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTSTART_DATABASE_URL", "postgresql://u:p@127.0.0.1:1/x")
    result = run("db", "check")
    assert result.exit_code == 1
    assert "cannot reach" in result.output and "Traceback" not in result.output


def test_unknown_option_is_a_usage_error() -> None:
    result = run("db", "status", "--bogus")
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_invalid_configuration_is_one_readable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTSTART_PG_PORT", "not-a-port")
    result = run("status")
    assert result.exit_code == 1
    assert "SMARTSTART_PG_PORT" in result.output and "Traceback" not in result.output


def test_check_catches_disabled_or_dropped_triggers_and_checks(
    cli_env: Any, db_settings: Settings
) -> None:
    cli_env(db_settings)
    with psycopg.connect(db_settings.url_for(), autocommit=True) as conn:
        conn.execute('ALTER TABLE "User" DISABLE TRIGGER "User_derive"')
        conn.execute('DROP TRIGGER "Role_touch" ON "Role"')
        conn.execute('ALTER TABLE "User" DROP CONSTRAINT "User_password_bcrypt_check"')
    result = run("db", "check")
    assert result.exit_code == 1
    assert "disabled trigger: User_derive" in result.output
    assert "only in the models: trigger Role_touch" in result.output
    assert "only in the models: check constraint User_password_bcrypt_check" in result.output


def test_revision_autogenerate_writes_the_difference(
    cli_env: Any, db_settings: Settings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    head = migrate.head_revision()
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, copy)
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", copy)
    cli_env(db_settings)
    with psycopg.connect(db_settings.url_for(), autocommit=True) as conn:
        conn.execute('ALTER TABLE "User" ADD COLUMN "newField" VARCHAR(255)')
    result = run("db", "revision", "-m", "drop new field", "--autogenerate")
    assert result.exit_code == 0, result.output
    written = [p for p in (copy / "versions").glob("*.py") if "drop_new_field" in p.name]
    assert len(written) == 1
    text = written[0].read_text()
    assert "drop_column('User', 'newField')" in text or 'drop_column("User", "newField")' in text
    assert f"down_revision: str | None = '{head}'" in text


@pytest.mark.parametrize("weak", ["password", "passwordpassword"])
def test_seed_refuses_a_weak_admin_password_in_one_line(
    cli_env: Any, db_settings: Settings, monkeypatch: pytest.MonkeyPatch, weak: str
) -> None:
    cli_env(db_settings)
    monkeypatch.setenv("SMARTSTART_ADMIN_PASSWORD", weak)
    result = run("db", "seed")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "SMARTSTART_ADMIN_PASSWORD is refused" in lines[0]
    assert count(db_settings, "User") == count(db_settings, "Role") == 0


def test_reset_keeps_the_replaced_credentials_file_and_says_so(
    cli_env: Any, seeded_settings: Settings
) -> None:
    cli_env(seeded_settings)
    path = seeded_settings.home_dir / "initial-credentials"
    assert run("db", "reset", "--yes").exit_code == 0
    before = path.read_text()
    result = run("db", "reset", "--yes")
    assert result.exit_code == 0, result.output
    said = [line.strip() for line in result.output.splitlines() if "kept as" in line]
    assert len(said) == 1 and said[0].startswith(f"saved to {path} (mode 600); ")
    kept = Path(said[0].split("kept as ")[1].removesuffix(" (mode 600)"))
    assert kept.parent == path.parent and kept.read_text() == before
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert path.read_text() != before


def test_shell_runs_every_command_in_order(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    result = run(
        "db", "shell", "-c", "CREATE TABLE shell_a (x int)", "-c", "INSERT INTO shell_a VALUES (1)"
    )
    assert result.exit_code == 0
    assert count(db_settings, "shell_a") == 1


def test_shell_keeps_the_password_out_of_psqls_arguments(db_settings: Settings) -> None:
    # psql's `\!` runs a shell whose parent ($PPID) is psql: it prints psql's own argv.
    probe = (
        "\\! tr '\\0' ' ' < /proc/$PPID/cmdline; echo; "
        "echo passfile=$PGPASSFILE mode=$(stat -c %a $PGPASSFILE)"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "smartstart.cli.main",
            "db",
            "shell",
            "-c",
            probe,
            "-c",
            "SELECT 42",
        ],
        env=process_env(db_settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    argv, files = result.stdout.splitlines()[:2]
    assert "psql" in argv and db_settings.db_name in argv
    assert "smartstart_password" not in argv
    passfile = files.split()[0].removeprefix("passfile=")
    assert files.split()[1] == "mode=600"
    assert "42" in result.stdout  # the password in the passfile worked
    assert not Path(passfile).exists()  # and the file is gone


def test_shell_superuser_is_the_clusters_superuser(
    cli_env: Any, db_settings: Settings, pg_cluster: Cluster
) -> None:
    cli_env(db_settings)
    assert run("db", "shell", "-c", "CREATE ROLE ops_shell_role").exit_code != 0
    try:
        result = run("db", "shell", "--superuser", "-c", "CREATE ROLE ops_shell_role")
        assert result.exit_code == 0
        with pg_cluster.connect() as conn:
            row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'ops_shell_role'")
            assert row.fetchone() == (1,)
    finally:
        with pg_cluster.connect() as conn:
            conn.execute("DROP ROLE IF EXISTS ops_shell_role")


def test_shell_superuser_is_refused_for_an_external_database(
    monkeypatch: pytest.MonkeyPatch, db_settings: Settings
) -> None:
    monkeypatch.setenv("SMARTSTART_DATABASE_URL", db_settings.url_for())
    result = run("db", "shell", "--superuser", "-c", "SELECT 1")
    assert result.exit_code == 1
    assert "--superuser" in result.output and "SMARTSTART_DATABASE_URL" in result.output


def test_reset_empty_gives_the_guides_restore_an_empty_database(
    cli_env: Any, seeded_settings: Settings, tmp_path: Path
) -> None:
    cli_env(seeded_settings)
    users = count(seeded_settings, "User")
    bin_dir = find_bin_dir()
    backup = tmp_path / "backup.sql"
    # The guide's backup: a plain pg_dump by the platform's own role.
    with backup.open("w") as out:
        subprocess.run(
            [str(bin_dir / "pg_dump"), seeded_settings.url_for()], stdout=out, check=True
        )
    dry = run("db", "reset", "--empty", "--dry-run")
    assert dry.exit_code == 0 and "no schema, no seed" in dry.output
    assert count(seeded_settings, "User") == users
    assert run("db", "reset", "--empty", input="n\n").exit_code == 1
    assert count(seeded_settings, "User") == users

    result = run("db", "reset", "--empty", "--yes")
    assert result.exit_code == 0, result.output
    with psycopg.connect(seeded_settings.url_for()) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables == (0,)
    assert migrate.current_revision(seeded_settings.sqlalchemy_url()) is None

    # The guide's restore, without a single error: the extension has no comment that only
    # its owner (the cluster's superuser) could restore.
    with backup.open() as dump:
        restore = subprocess.run(
            ["psql", "-X", "-q", seeded_settings.url_for()],
            stdin=dump,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert restore.returncode == 0
    errors = [line for line in restore.stderr.splitlines() if "ERROR" in line]
    assert errors == [], restore.stderr
    assert count(seeded_settings, "User") == users
    assert migrate.current_revision(seeded_settings.sqlalchemy_url()) == migrate.head_revision()
