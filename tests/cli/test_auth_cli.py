"""`smartstart auth …` through Typer's CliRunner against the test cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.domain import sessions, throttle

runner = CliRunner()
ADMIN = "admin@alicesolutionsgroup.com"
IDLE = timedelta(hours=1)


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


@pytest.fixture
def db(cli_env: Any, seeded_settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """The CLI pointed at a fresh seeded database, and an autocommit connection to it."""
    cli_env(seeded_settings)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        yield conn


def user_id(db: psycopg.Connection[Any], email: str = ADMIN) -> str:
    row = db.execute('SELECT id FROM "User" WHERE email = %s', [email]).fetchone()
    assert row is not None
    return str(row[0])


def new_session(db: psycopg.Connection[Any], email: str = ADMIN) -> tuple[str, str]:
    token, row = sessions.create(db, user_id(db, email), lifetime=timedelta(hours=1), ip="10.0.0.9")
    return token, str(row["id"])


def audit_actions(db: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in db.execute(
            "SELECT action, actor FROM audit_log WHERE action LIKE 'auth.%' ORDER BY id"
        )
    ]


def lock(db: psycopg.Connection[Any], key: str) -> None:
    db.execute(
        'INSERT INTO "LoginThrottle" (key, failures, "lockedUntil")'
        " VALUES (%s, 9, now() + interval '10 minutes')",
        [key],
    )


def test_unlock_an_account_and_an_address(db: psycopg.Connection[Any]) -> None:
    lock(db, throttle.account_key(ADMIN))
    lock(db, "ip:10.1.2.3")
    result = run("auth", "unlock", "ADMIN@alicesolutionsgroup.com")
    assert result.exit_code == 0, result.output
    assert "unlocked" in result.output
    assert db.execute('SELECT key FROM "LoginThrottle"').fetchall() == [("ip:10.1.2.3",)]
    assert run("auth", "unlock", "--ip", "10.1.2.3").exit_code == 0
    assert db.execute('SELECT count(*) FROM "LoginThrottle"').fetchone() == (0,)
    actions = audit_actions(db)
    assert [a for a, _ in actions] == ["auth.throttle_cleared"] * 2
    assert all(actor.startswith("cli:") for _, actor in actions)


def test_unlock_needs_a_target(db: psycopg.Connection[Any]) -> None:
    result = run("auth", "unlock")
    assert result.exit_code == 1 and "EMAIL" in result.output
    assert audit_actions(db) == []


def test_sessions_lists_a_users_sessions(db: psycopg.Connection[Any]) -> None:
    _, live = new_session(db)
    _, ended = new_session(db)
    sessions.revoke(db, ended)
    result = run("auth", "sessions", ADMIN.upper(), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["items"]
    assert [(r["id"], r["state"], r["ip"]) for r in rows] == [(live, "active", "10.0.0.9")]
    everything = json.loads(run("auth", "sessions", "admin", "--all", "--json").output)["items"]
    assert {r["id"]: r["state"] for r in everything} == {live: "active", ended: "revoked"}
    table = run("auth", "sessions", ADMIN)
    assert table.exit_code == 0 and live[:8] in table.output
    missing = run("auth", "sessions", "nobody@example.com")
    assert missing.exit_code == 1 and "no user" in missing.output


def test_revoke_one_session_asks_first(db: psycopg.Connection[Any]) -> None:
    token, sid = new_session(db)
    dry = run("auth", "revoke", sid, "--dry-run")
    assert dry.exit_code == 0 and ADMIN in dry.output and "nothing was changed" in dry.output
    refused = run("auth", "revoke", sid, input="n\n")
    assert refused.exit_code == 1
    assert sessions.resolve(db, token, idle_timeout=IDLE) is not None
    assert audit_actions(db) == []

    result = run("auth", "revoke", sid, "--yes")
    assert result.exit_code == 0, result.output
    assert sessions.resolve(db, token, idle_timeout=IDLE) is None
    assert [a for a, _ in audit_actions(db)] == ["auth.session_revoked"]
    again = run("auth", "revoke", sid, "--yes")
    assert again.exit_code == 0 and "already ended" in again.output
    unknown = run("auth", "revoke", "no-such-session", "--yes")
    assert unknown.exit_code == 1 and "no such session" in unknown.output


def test_revoke_every_session_of_a_user(db: psycopg.Connection[Any]) -> None:
    tokens = [new_session(db)[0] for _ in range(3)]
    other, _ = new_session(db, "developer@alicesolutionsgroup.com")
    result = run("auth", "revoke", "--user", ADMIN, "--all", "--yes")
    assert result.exit_code == 0, result.output
    assert "ended 3 session(s)" in result.output
    assert all(sessions.resolve(db, t, idle_timeout=IDLE) is None for t in tokens)
    assert sessions.resolve(db, other, idle_timeout=IDLE) is not None
    assert [a for a, _ in audit_actions(db)] == ["auth.sessions_revoked"]


@pytest.mark.parametrize(
    "args",
    [
        ("auth", "revoke"),
        ("auth", "revoke", "--user", ADMIN),  # --all is required to end them all
        ("auth", "revoke", "some-id", "--user", ADMIN, "--all"),
    ],
)
def test_revoke_refuses_ambiguous_requests(db: psycopg.Connection[Any], args: tuple[str]) -> None:
    token, _ = new_session(db)
    result = run(*args, "--yes")
    assert result.exit_code == 1
    assert sessions.resolve(db, token, idle_timeout=IDLE) is not None
