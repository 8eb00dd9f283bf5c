"""Every CLI argument naming a user takes an id, an email (any case) or a username;
stages take an id or a name (resolve_user, resolve_stage)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from smartstart.cli.main import app
from smartstart.config import Settings

runner = CliRunner()
DEV_EMAIL = "developer@alicesolutionsgroup.com"


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.fixture
def db(cli_env: Any, seeded_settings: Settings) -> Settings:
    return cli_env(seeded_settings)  # type: ignore[no-any-return]


def dev_id(settings: Settings) -> str:
    with psycopg.connect(settings.url_for()) as conn:
        row = conn.execute('SELECT id FROM "User" WHERE email = %s', [DEV_EMAIL]).fetchone()
    assert row is not None
    return str(row[0])


def refs(settings: Settings) -> list[str]:
    return [dev_id(settings), DEV_EMAIL.upper(), "developer"]


def test_user_reads_take_any_reference(db: Settings) -> None:
    uid = dev_id(db)
    for ref in refs(db):
        for args in (
            ("users", "show", ref, "--json"),
            ("rbac", "effective", ref, "--json"),
            ("rbac", "check", ref, "users:read", "--json"),
            ("journey", "show", ref, "--json"),
        ):
            result = run(*args)
            assert result.exit_code == 0, (args, result.output)
            data = json.loads(result.output)
            found = data.get("id") or data["user"]["id"]
            assert found == uid, args
        sessions = run("auth", "sessions", ref, "--json")
        assert sessions.exit_code == 0, sessions.output
    missing = run("rbac", "effective", "nobody")
    assert missing.exit_code == 1 and "no user" in missing.output


def test_user_writes_take_any_reference(db: Settings) -> None:
    uid, email, username = refs(db)
    assigned = run("rbac", "assign", username, "GUEST")
    assert assigned.exit_code == 0, assigned.output
    unassigned = run("rbac", "unassign", email, "GUEST", "--yes")
    assert unassigned.exit_code == 0, unassigned.output
    xp = run("users", "add-xp", username, "5", "--reason", "test", "--json")
    assert xp.exit_code == 0, xp.output
    assert json.loads(xp.output)["id"] == uid
    done = run("journey", "complete", username, "first project", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["status"] == "COMPLETED"
    suspended = run("users", "suspend", email, "--json")
    assert suspended.exit_code == 0 and json.loads(suspended.output)["status"] == "SUSPENDED"
