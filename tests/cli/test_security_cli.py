"""`smartstart security …` against the test cluster: read-only user, harden, audit logging,
the advisor."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from smartstart.api.app import create_app
from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.db import migrate
from smartstart.pg.cluster import Cluster
from tests.api.conftest import served
from tests.conftest import TEST_ADMIN_PASSWORD

runner = CliRunner()
PASSPHRASE = "a perfectly fine passphrase"
_n = itertools.count()


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def role_name() -> str:
    return f"ro_{os.getpid()}_{next(_n)}"


def as_role(settings: Settings, role: str, password: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=settings.pg_host,
        port=settings.pg_port,
        dbname=settings.db_name,
        user=role,
        password=password,
        autocommit=True,
    )


# -- readonly-user ----------------------------------------------------------------------


def test_readonly_user_can_select_and_cannot_write(cli_env: Any, seeded_settings: Settings) -> None:
    cli_env(seeded_settings)
    name = role_name()
    result = run("security", "readonly-user", name, "--password", PASSPHRASE)
    assert result.exit_code == 0, result.output
    with as_role(seeded_settings, name, PASSPHRASE) as ro:
        assert ro.execute('SELECT count(*) FROM "User"').fetchone()[0] > 0  # type: ignore[index]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            ro.execute("UPDATE \"User\" SET xp = xp + 1 WHERE email LIKE 'admin@%'")
        # Even with its read-only default switched off, it holds no write privilege.
        ro.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            ro.execute('DELETE FROM "Session"')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            ro.execute("CREATE TABLE not_allowed (id int)")
    # A table a later migration creates is readable too (default privileges).
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as owner:
        owner.execute("CREATE TABLE later_table (id int)")
    with as_role(seeded_settings, name, PASSPHRASE) as ro:
        assert ro.execute("SELECT count(*) FROM later_table").fetchone() == (0,)
    with psycopg.connect(seeded_settings.url_for()) as conn:
        row = conn.execute(
            "SELECT actor FROM audit_log WHERE action = 'security.readonly_user'"
            ' AND "resourceId" = %s',
            [name],
        ).fetchone()
    assert row is not None and row[0].startswith("cli:")


def test_readonly_user_generates_a_password_once_and_is_idempotent(
    cli_env: Any, db_settings: Settings
) -> None:
    cli_env(db_settings)
    name = role_name()
    first = run("security", "readonly-user", name)
    assert first.exit_code == 0, first.output
    password = re.search(rf"password for {name}: (\S+)", first.output)
    assert password is not None
    with as_role(db_settings, name, password.group(1)) as ro:
        assert ro.execute('SELECT count(*) FROM "Role"').fetchone() == (0,)
    again = run("security", "readonly-user", name)
    assert again.exit_code == 0, again.output
    assert "password for" not in again.output and "unchanged" in again.output
    with as_role(db_settings, name, password.group(1)) as ro:  # still the same password
        ro.execute("SELECT 1")


def test_readonly_user_dry_run_shows_the_sql_and_creates_nothing(
    cli_env: Any, db_settings: Settings, pg_cluster: Cluster
) -> None:
    cli_env(db_settings)
    name = role_name()
    result = run("security", "readonly-user", name, "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"CREATE ROLE \"{name}\" LOGIN PASSWORD '…';" in result.output
    assert "GRANT SELECT ON ALL TABLES IN SCHEMA public" in result.output
    with pg_cluster.connect() as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone() is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["smartstart_user"], "more privileges than a read-only user"),
        (["postgres"], "more privileges than a read-only user"),
        (["Robert'); DROP TABLE x;--"], "not a plain role name"),
        (["pg_reader"], "not a plain role name"),
        (["x" * 1_000_000], "at most 63"),
        (["ro\x00user"], "NUL"),
        (["ro_weak", "--password", "password1"], "password"),
        (["ro_nul_pw", "--password", "a perfectly\x00fine passphrase"], "NUL"),
        (["ro_big_pw", "--password", "p" * 1_000_000], "password"),
    ],
)
def test_readonly_user_refuses_bad_input_in_one_line(
    cli_env: Any, db_settings: Settings, pg_cluster: Cluster, args: list[str], message: str
) -> None:
    cli_env(db_settings)
    result = run("security", "readonly-user", *args)
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.count("error:") == 1 and len(result.output.strip().splitlines()) <= 3
    with pg_cluster.connect() as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_roles WHERE rolname LIKE 'ro\\_%%_pw'").fetchone()
            is None
        )
        superuser = conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'smartstart_user'"
        ).fetchone()
    assert superuser == (False,)


# -- harden ---------------------------------------------------------------------------------


def test_harden_keeps_migrations_and_the_brain_working(
    cli_env: Any, seeded_settings: Settings, pg_cluster: Cluster, tmp_path: Path
) -> None:
    cli_env(seeded_settings)
    reader = role_name()
    assert run("security", "readonly-user", reader, "--password", PASSPHRASE).exit_code == 0
    dry = run("security", "harden", "--dry-run")
    assert dry.exit_code == 0 and "REVOKE CREATE ON SCHEMA public FROM" in dry.output
    result = run("security", "harden", "--yes")
    assert result.exit_code == 0, result.output
    again = run("security", "harden", "--yes")  # idempotent
    assert again.exit_code == 0, again.output
    app_url = seeded_settings.url_for()
    with psycopg.connect(app_url, autocommit=True) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        ).fetchall()
        assert owners == [("smartstart_owner",)]
        # The guide's statement holds: no CREATE on public for the app's role …
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (id int)")
        # … nor DDL on the tables it reads and writes (the guide's Data Migration).
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute('ALTER TABLE "User" ADD COLUMN "newField" VARCHAR(255)')
        # DML is intact.
        conn.execute(
            "UPDATE \"User\" SET xp = xp + 1 WHERE email = 'admin@alicesolutionsgroup.com'"
        )

    # A migration runs after harden: one step down and up again, as the owner.
    down = run("db", "downgrade", "--yes")
    assert down.exit_code == 0, down.output
    assert migrate.current_revision(seeded_settings.sqlalchemy_url()) != migrate.head_revision()
    up = run("db", "migrate")
    assert up.exit_code == 0, up.output
    check = run("db", "check")
    assert check.exit_code == 0, check.output

    # The guide's Data Migration statements run as the owner (through the superuser).
    with pg_cluster.connect(seeded_settings.db_name) as su:
        su.execute("SET ROLE smartstart_owner")
        su.execute('CREATE INDEX idx_user_email_hardened ON "User"(email)')
        su.execute("DROP INDEX idx_user_email_hardened")
        su.execute("CREATE TABLE made_after_harden (id serial PRIMARY KEY, note text)")
    # What the owner creates later is the app's to write and the reader's to read.
    with psycopg.connect(app_url, autocommit=True) as conn:
        conn.execute("INSERT INTO made_after_harden (note) VALUES ('ok')")
    with as_role(seeded_settings, reader, PASSPHRASE) as ro:
        assert ro.execute("SELECT note FROM made_after_harden").fetchall() == [("ok",)]
    with pg_cluster.connect(seeded_settings.db_name) as su:
        su.execute("DROP TABLE made_after_harden")

    # The Brain serves reads and writes (a login writes a session and an audit row).
    with served(create_app(seeded_settings)) as base:
        login = httpx.post(
            f"{base}/api/auth/login",
            json={"identifier": "admin@alicesolutionsgroup.com", "password": TEST_ADMIN_PASSWORD},
        )
        assert login.status_code == 200, login.text
        token = login.json()["token"]
        users = httpx.get(f"{base}/api/users?limit=5", headers={"Authorization": f"Bearer {token}"})
        assert users.status_code == 200 and users.json()["items"]

    # A backup of the hardened database verifies (restored into a scratch database).
    backup = tmp_path / "hardened.dump"
    assert run("db", "backup", "-o", str(backup)).exit_code == 0
    verified = run("db", "verify", str(backup))
    assert verified.exit_code == 0, verified.output

    advice = json.loads(run("security", "check", "--json").output)
    states = {i["check"]: i["state"] for i in advice["items"]}
    assert states["create_on_public"] == "OK"
    with psycopg.connect(app_url) as conn:
        audited = conn.execute(
            "SELECT details->>'owner' FROM audit_log WHERE action = 'security.harden'"
        ).fetchall()
    assert audited == [("smartstart_owner",), ("smartstart_owner",)]


def test_harden_asks_first_and_a_refusal_changes_nothing(
    cli_env: Any, db_settings: Settings
) -> None:
    cli_env(db_settings)
    result = run("security", "harden", input="n\n")
    assert result.exit_code == 1 and "nothing was changed" in result.output
    with psycopg.connect(db_settings.url_for(), autocommit=True) as conn:
        conn.execute("CREATE TABLE still_allowed (id int)")


@pytest.mark.parametrize(
    ("owner", "message"),
    [("smartstart_user", "must differ"), ("postgres", "superuser"), ("Bad Name", "plain role")],
)
def test_harden_refuses_a_bad_owner(
    cli_env: Any, db_settings: Settings, owner: str, message: str
) -> None:
    cli_env(db_settings)
    result = run("security", "harden", "--owner", owner, "--yes")
    assert result.exit_code == 1 and message in result.output
    with psycopg.connect(db_settings.url_for(), autocommit=True) as conn:
        conn.execute("CREATE TABLE still_allowed (id int)")


# -- audit-logging --------------------------------------------------------------------------


def settings_now(settings: Settings) -> dict[str, str]:
    with psycopg.connect(settings.url_for()) as conn:
        return {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT name, setting FROM pg_settings"
                " WHERE name IN ('log_statement', 'log_min_duration_statement')"
            )
        }


def test_audit_logging_on_and_off_change_the_server_settings(
    cli_env: Any, db_settings: Settings
) -> None:
    cli_env(db_settings)
    try:
        on = run("security", "audit-logging", "on", "--min-duration", "250")
        assert on.exit_code == 0, on.output
        assert settings_now(db_settings) == {
            "log_statement": "all",
            "log_min_duration_statement": "250",
        }
        status = json.loads(run("security", "audit-logging", "status", "--json").output)
        assert {s["name"]: s["setting"] for s in status}["log_statement"] == "all"
    finally:
        off = run("security", "audit-logging", "off")
    assert off.exit_code == 0, off.output
    assert settings_now(db_settings) == {
        "log_statement": "none",
        "log_min_duration_statement": "-1",
    }


def test_audit_logging_for_an_external_server_prints_the_sql(
    monkeypatch: pytest.MonkeyPatch, db_settings: Settings
) -> None:
    monkeypatch.setenv("SMARTSTART_DATABASE_URL", db_settings.url_for())
    result = run("security", "audit-logging", "on")
    assert result.exit_code == 0, result.output
    assert "ALTER SYSTEM SET log_statement = 'all';" in result.output
    assert "SELECT pg_reload_conf();" in result.output
    assert settings_now(db_settings)["log_statement"] == "none"


@pytest.mark.parametrize(
    "args",
    [
        ["maybe"],
        ["on", "--min-duration", "-5"],
        ["on", "--min-duration", "soon"],
        ["on", "--statements", "everything"],
        ["on", "--statements", "all\x00"],
    ],
)
def test_audit_logging_refuses_bad_input(
    cli_env: Any, db_settings: Settings, args: list[str]
) -> None:
    cli_env(db_settings)
    result = run("security", "audit-logging", *args)
    assert result.exit_code != 0
    assert settings_now(db_settings)["log_statement"] == "none"


# -- check ------------------------------------------------------------------------------------


def test_check_reports_findings_with_their_fix(cli_env: Any, seeded_settings: Settings) -> None:
    cli_env(seeded_settings)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        conn.execute("CREATE FUNCTION leaky() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    result = run("security", "check", "--json")
    assert result.exit_code == 0, result.output  # warnings only on a loopback development box
    items = {i["check"]: i for i in json.loads(result.output)["items"]}
    assert set(items) >= {
        "database_passwords",
        "app_superuser",
        "create_on_public",
        "listen_addresses",
        "ssl",
        "hba_trust",
        "mutable_search_path",
        "non_bcrypt_hashes",
        "super_admins",
        "roles_without_permissions",
        "users_without_roles",
        "production_settings",
    }
    assert items["database_passwords"]["state"] == "WARN"  # the guide's default password
    assert items["create_on_public"]["state"] == "WARN"
    assert "security harden" in items["create_on_public"]["recommendation"]
    assert items["mutable_search_path"]["state"] == "WARN"
    assert "leaky()" in items["mutable_search_path"]["recommendation"]
    for name in ("app_superuser", "ssl", "hba_trust", "super_admins", "users_without_roles"):
        assert items[name]["state"] == "OK", items[name]
    text = run("security", "check")
    assert "fix: ALTER FUNCTION leaky()" in text.output


def test_check_exits_non_zero_on_a_crit_finding(
    cli_env: Any, seeded_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_env(seeded_settings)
    # A Brain reachable from the network with the guide's default database password.
    monkeypatch.setenv("SMARTSTART_API_HOST", "0.0.0.0")  # noqa: S104
    monkeypatch.setenv("SMARTSTART_TRUSTED_PROXIES", "0.0.0.0/0")
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        user = conn.execute(
            'INSERT INTO "User" (email, username, name, password, role) VALUES'
            " ('norole@example.com', 'norole', 'No Role', %s, 'MEMBER') RETURNING id",
            ["$2b$04$WVKvKa12safshzWEV6kU7.Wgv6PzC6oShpvCfBGfIGSlxfhqVfX8."],
        ).fetchone()
        assert user is not None
        conn.execute('ALTER TABLE "UserRole" DISABLE TRIGGER "UserRole_keep_primary"')
        conn.execute('DELETE FROM "UserRole" WHERE "userId" = %s', [user[0]])
        conn.execute('ALTER TABLE "UserRole" ENABLE TRIGGER "UserRole_keep_primary"')
    result = run("security", "check", "--json")
    assert result.exit_code == 2, result.output
    items = {i["check"]: i for i in json.loads(result.output)["items"]}
    assert items["database_passwords"]["state"] == "CRIT"
    problems = {d["setting"] for d in items["production_settings"]["details"]}
    assert problems == {
        "SMARTSTART_ENV",
        "SMARTSTART_COOKIE_SECURE",
        "SMARTSTART_TRUSTED_PROXIES",
    }
    assert items["users_without_roles"]["state"] == "WARN"
    assert items["users_without_roles"]["details"][0]["email"] == "norole@example.com"


def test_check_sees_a_role_with_the_guides_default_password(
    cli_env: Any, db_settings: Settings, pg_cluster: Cluster
) -> None:
    cli_env(db_settings)
    with pg_cluster.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS readonly_user")
        conn.execute("CREATE USER readonly_user WITH PASSWORD 'readonly_password'")
    try:
        items = {
            i["check"]: i for i in json.loads(run("security", "check", "--json").output)["items"]
        }
        roles = {d["role"] for d in items["database_passwords"]["details"]}
        assert "readonly_user" in roles
    finally:
        with pg_cluster.connect() as conn:
            conn.execute(sql.SQL("DROP ROLE readonly_user"))


def test_check_on_an_external_server_says_what_a_superuser_check_needs(
    monkeypatch: pytest.MonkeyPatch, seeded_settings: Settings
) -> None:
    monkeypatch.setenv("SMARTSTART_DATABASE_URL", seeded_settings.url_for())
    result = run("security", "check", "--json")
    assert result.exit_code == 0, result.output
    hba = {i["check"]: i for i in json.loads(result.output)["items"]}["hba_trust"]
    assert hba["state"] == "WARN" and "needs a superuser" in hba["reason"]
