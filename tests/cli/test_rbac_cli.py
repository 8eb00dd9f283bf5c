"""`smartstart rbac …` through Typer's CliRunner against a seeded test database."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.db import seed

runner = CliRunner()
DEV_EMAIL = "developer@alicesolutionsgroup.com"
ADMIN_EMAIL = "admin@alicesolutionsgroup.com"


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def query(settings: Settings, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.url_for()) as conn:
        return conn.execute(sql, params).fetchall()


def audit_actions(settings: Settings) -> list[str]:
    return [r[0] for r in query(settings, "SELECT action FROM audit_log ORDER BY id")]


@pytest.fixture
def db(cli_env: Any, seeded_settings: Settings) -> Settings:
    return cli_env(seeded_settings)  # type: ignore[no-any-return]


def test_roles_and_permissions_listings(db: Settings) -> None:
    result = run("rbac", "roles", "--json")
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.output)["items"]] == sorted(seed.ROLES)
    assert json.loads(run("rbac", "roles", "list", "--json").output) == json.loads(result.output)
    table = run("rbac", "roles")
    assert table.exit_code == 0 and "SUPER_ADMIN" in table.output
    perm_table = run("rbac", "permissions", "list")
    assert perm_table.exit_code == 0 and "db:restore" in perm_table.output
    perms = json.loads(run("rbac", "permissions", "--json").output)
    assert [p["name"] for p in perms["items"]] == sorted(seed.PERMISSIONS)
    shown = json.loads(run("rbac", "roles", "show", "GUEST", "--json").output)
    assert shown["permissions"] == ["journey:read"]
    perm = json.loads(run("rbac", "permissions", "show", "db:restore", "--json").output)
    assert perm["roles"] == ["SUPER_ADMIN"]
    missing = run("rbac", "roles", "show", "NOPE")
    assert missing.exit_code == 1 and "no role 'NOPE'" in missing.output


def test_role_lifecycle_is_audited_as_the_cli(db: Settings) -> None:
    created = run("rbac", "roles", "create", "EDITOR", "-d", "Edits", "--json")
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["name"] == "EDITOR"
    dup = run("rbac", "roles", "create", "EDITOR")
    assert dup.exit_code == 1 and "already exists" in dup.output
    bad = run("rbac", "roles", "create", "editor")
    assert bad.exit_code == 1 and "invalid role name" in bad.output
    assert run("rbac", "roles", "update", "EDITOR", "--name", "WRITER").exit_code == 0
    assert run("rbac", "grant", "WRITER", "journey:read").exit_code == 0
    dry = run("rbac", "roles", "delete", "WRITER", "--dry-run")
    assert dry.exit_code == 0 and "would delete role WRITER: 1 grant(s)" in dry.output
    assert query(db, "SELECT name FROM \"Role\" WHERE name = 'WRITER'") == [("WRITER",)]
    declined = run("rbac", "roles", "delete", "WRITER", input="n\n")
    assert declined.exit_code == 1
    assert query(db, "SELECT name FROM \"Role\" WHERE name = 'WRITER'") == [("WRITER",)]
    deleted = run("rbac", "roles", "delete", "WRITER", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert query(db, "SELECT name FROM \"Role\" WHERE name = 'WRITER'") == []
    assert audit_actions(db) == ["roles.create", "roles.update", "rbac.grant", "roles.delete"]
    actors = {r[0] for r in query(db, "SELECT actor FROM audit_log")}
    assert len(actors) == 1 and actors.pop().startswith("cli:")


def test_deleting_a_primary_role_is_refused_even_in_a_dry_run(db: Settings) -> None:
    for args in (("--dry-run",), ("--yes",)):
        result = run("rbac", "roles", "delete", "DEVELOPER", *args)
        assert result.exit_code == 1
        assert "primary role of 1 user(s)" in result.output
    assert audit_actions(db) == []


def test_permission_lifecycle(db: Settings) -> None:
    created = run("rbac", "permissions", "create", "reports:read", "--json")
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["roles"] == ["SUPER_ADMIN"]
    assert run("rbac", "permissions", "update", "reports:read", "-d", "Reports").exit_code == 0
    builtin = run("rbac", "permissions", "delete", "users:read", "--yes")
    assert builtin.exit_code == 1 and "built-in" in builtin.output
    assert run("rbac", "permissions", "delete", "reports:read", "--dry-run").exit_code == 0
    assert query(db, "SELECT 1 FROM \"Permission\" WHERE name = 'reports:read'") == [(1,)]
    assert run("rbac", "permissions", "delete", "reports:read", "--yes").exit_code == 0
    assert query(db, "SELECT 1 FROM \"Permission\" WHERE name = 'reports:read'") == []
    assert audit_actions(db) == ["permissions.create", "permissions.update", "permissions.delete"]


def test_grant_revoke_and_check(db: Settings) -> None:
    denied = run("rbac", "check", DEV_EMAIL, "db:restore")
    assert denied.exit_code == 1 and "denied" in denied.output
    assert run("rbac", "grant", "DEVELOPER", "db:restore").exit_code == 0
    again = run("rbac", "grant", "DEVELOPER", "db:restore")
    assert again.exit_code == 0 and "nothing changed" in again.output
    allowed = run("rbac", "check", DEV_EMAIL, "db:restore", "--json")
    assert allowed.exit_code == 0
    assert json.loads(allowed.output)["via_roles"] == ["DEVELOPER"]
    dry = run("rbac", "revoke", "DEVELOPER", "db:restore", "--dry-run")
    assert dry.exit_code == 0 and "would revoke" in dry.output
    assert run("rbac", "check", DEV_EMAIL, "db:restore").exit_code == 0
    assert run("rbac", "revoke", "DEVELOPER", "db:restore", "--yes").exit_code == 0
    assert run("rbac", "check", DEV_EMAIL, "db:restore").exit_code == 1
    sa = run("rbac", "revoke", "SUPER_ADMIN", "db:restore", "--yes")
    assert sa.exit_code == 1 and "SUPER_ADMIN holds every permission" in sa.output
    assert audit_actions(db) == ["rbac.grant", "rbac.grant", "rbac.revoke"]


def test_assign_unassign_and_effective(db: Settings) -> None:
    assigned = run("rbac", "assign", DEV_EMAIL, "MODERATOR")
    assert assigned.exit_code == 0, assigned.output
    assert "DEVELOPER (primary), MODERATOR" in assigned.output
    eff = json.loads(run("rbac", "effective", DEV_EMAIL, "--json").output)
    by_name = {p["name"]: p["roles"] for p in eff["permissions"]}
    assert by_name["users:read"] == ["DEVELOPER", "MODERATOR"]
    assert by_name["sessions:manage"] == ["MODERATOR"]
    table = run("rbac", "effective", DEV_EMAIL)
    assert table.exit_code == 0 and "sessions:manage" in table.output
    primary = run("rbac", "unassign", DEV_EMAIL, "DEVELOPER", "--yes")
    assert primary.exit_code == 1 and "change the primary role instead" in primary.output
    assert run("rbac", "unassign", DEV_EMAIL, "MODERATOR", "--dry-run").exit_code == 0
    assert run("rbac", "unassign", DEV_EMAIL, "MODERATOR", "--yes").exit_code == 0
    eff = json.loads(run("rbac", "effective", DEV_EMAIL, "--json").output)
    assert "sessions:manage" not in {p["name"] for p in eff["permissions"]}
    assert audit_actions(db) == ["rbac.assign", "rbac.unassign"]
    unknown = run("rbac", "assign", "nobody@example.com", "MEMBER")
    assert unknown.exit_code == 1 and "no user" in unknown.output


def test_last_super_admin_is_protected_at_the_cli_too(db: Settings) -> None:
    assert run("rbac", "assign", DEV_EMAIL, "SUPER_ADMIN").exit_code == 0
    with psycopg.connect(db.url_for()) as conn:
        conn.execute("UPDATE \"User\" SET status = 'SUSPENDED' WHERE email = %s", [ADMIN_EMAIL])
    result = run("rbac", "unassign", DEV_EMAIL, "SUPER_ADMIN", "--yes")
    assert result.exit_code == 1 and "last active SUPER_ADMIN" in result.output


def test_matrix(db: Settings) -> None:
    m = json.loads(run("rbac", "matrix", "--json").output)
    assert m["roles"] == sorted(seed.ROLES)
    assert set(m["grants"]["DEVELOPER"]) == set(seed.ROLE_PERMISSIONS["DEVELOPER"])
    table = run("rbac", "matrix")
    assert table.exit_code == 0 and "db:restore" in table.output


# The commands that ask first, with the rows their write would change.
ASKING = [
    (("rbac", "roles", "delete", "WRITER"), "SELECT 1 FROM \"Role\" WHERE name = 'WRITER'"),
    (
        ("rbac", "permissions", "delete", "reports:read"),
        "SELECT 1 FROM \"Permission\" WHERE name = 'reports:read'",
    ),
    (
        ("rbac", "revoke", "WRITER", "reports:read"),
        'SELECT 1 FROM "RolePermission" rp JOIN "Role" r ON r.id = rp."roleId"'
        " WHERE r.name = 'WRITER'",
    ),
    (
        ("rbac", "unassign", DEV_EMAIL, "WRITER"),
        'SELECT 1 FROM "UserRole" ur JOIN "Role" r ON r.id = ur."roleId" WHERE r.name = \'WRITER\'',
    ),
]


ASKING_IDS = ["role-delete", "permission-delete", "revoke", "unassign"]


def _writer_role(db: Settings) -> None:
    for args in (
        ("rbac", "roles", "create", "WRITER"),
        ("rbac", "permissions", "create", "reports:read"),
        ("rbac", "grant", "WRITER", "reports:read"),
        ("rbac", "assign", DEV_EMAIL, "WRITER"),
    ):
        assert run(*args).exit_code == 0


@pytest.mark.parametrize(("args", "rows"), ASKING, ids=ASKING_IDS)
def test_no_transaction_is_open_while_asking(
    db: Settings, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], rows: str
) -> None:
    _writer_role(db)
    seen: list[list[tuple[Any, ...]]] = []

    def answer_no(question: str, yes: bool) -> None:
        seen.append(
            query(
                db,
                "SELECT state FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%%'",
            )
        )
        raise SystemExit(1)

    monkeypatch.setattr("smartstart.cli.rbac.confirm", answer_no)
    assert run(*args).exit_code == 1
    assert seen == [[]]  # asked once, with no transaction open
    assert query(db, rows) == [(1,)]


@pytest.mark.parametrize(("args", "rows"), ASKING, ids=ASKING_IDS)
def test_a_dry_run_only_reads(
    db: Settings, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], rows: str
) -> None:
    """A dry run does not make the change and undo it: it waits for no row another
    transaction holds, and leaves nothing behind."""
    _writer_role(db)
    audited = audit_actions(db)
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=2s")
    with psycopg.connect(db.url_for()) as holder:
        holder.execute(rows + " FOR UPDATE").fetchall()
        dry = run(*args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would " in dry.output and "nothing changed (dry run)" in dry.output
    assert query(db, rows) == [(1,)]
    assert audit_actions(db) == audited
