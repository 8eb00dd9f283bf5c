"""`smartstart users …` through Typer's CliRunner against a fresh seeded database."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from smartstart.cli import common
from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.domain import passwords, sessions

runner = CliRunner()
PW = "a perfectly fine passphrase"
ADMIN_EMAIL = "admin@alicesolutionsgroup.com"


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, ["users", *args], input=input)


@pytest.fixture
def db(cli_env: Any, seeded_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI pointed at a fresh seeded database (bcrypt cost 4); a connection to it."""
    monkeypatch.setenv("SMARTSTART_BCRYPT_ROUNDS", "4")
    cli_env(seeded_settings)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone at a terminal: CliRunner's input is what they type at the prompts."""
    monkeypatch.setattr(common, "interactive", lambda: True)


def one(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def create(username: str, *extra: str) -> dict[str, Any]:
    result = run(
        "create",
        "--email",
        f"{username}@example.com",
        "--username",
        username,
        "--password",
        PW,
        "--json",
        *extra,
    )
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def test_create_show_and_duplicates(db: psycopg.Connection[Any]) -> None:
    user = create("ada", "--name", "Ada Lovelace", "--role", "DEVELOPER")
    assert user["role"] == "DEVELOPER" and "password" not in user
    for ident in (user["id"], "ADA@example.COM", "ada"):
        shown = run("show", ident, "--json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.output)["id"] == user["id"]
    table = run("show", "ada")
    assert "Ada Lovelace" in table.output and "$2b$" not in table.output
    dup = run("create", "--email", "Ada@Example.com", "--username", "other", "--password", PW)
    assert dup.exit_code == 1 and "email already exists" in dup.output
    dup = run("create", "--email", "x@example.com", "--username", "ada", "--password", PW)
    assert dup.exit_code == 1 and "username already exists" in dup.output
    missing = run("show", "nobody")
    assert missing.exit_code == 1 and "no user" in missing.output
    assert one(db, "SELECT actor FROM audit_log WHERE action = 'users.create'") == (
        f"cli:{getpass.getuser()}"
    )


def test_create_asks_for_the_password_twice_hidden(
    db: psycopg.Connection[Any], terminal: None
) -> None:
    result = run(
        "create", "--email", "p@example.com", "--username", "prompted", input=f"{PW}\n{PW}\n"
    )
    assert result.exit_code == 0, result.output
    assert PW not in result.output  # hidden input is not echoed
    assert "Repeat for confirmation" in result.output
    hashed = one(db, """SELECT password FROM "User" WHERE username = 'prompted'""")
    assert passwords.verify(PW, hashed)


def test_create_refuses_a_common_password(db: psycopg.Connection[Any]) -> None:
    result = run(
        "create", "--email", "c@example.com", "--username", "common", "--password", "password1234"
    )
    assert result.exit_code == 1 and "commonly used" in result.output
    assert one(db, """SELECT count(*) FROM "User" WHERE username = 'common'""") == 0


def test_list_search_filters_json_and_pages(db: psycopg.Connection[Any]) -> None:
    for name in ("alpha", "beta", "gamma"):
        create(name)
    create("delta", "--role", "MODERATOR", "--status", "SUSPENDED")
    found = json.loads(run("list", "--search", "ALPH", "--json").output)
    assert [u["username"] for u in found["items"]] == ["alpha"]
    short = run("list", "--search", "a")
    assert short.exit_code != 0 and "search needs at least 2 characters" in short.output
    mods = json.loads(run("list", "--role", "MODERATOR", "--json").output)
    assert [u["username"] for u in mods["items"]] == ["delta"]
    suspended = json.loads(run("list", "--status", "SUSPENDED", "--json").output)
    assert [u["username"] for u in suspended["items"]] == ["delta"]
    seen: list[str] = []
    args = ["list", "--sort", "username", "--asc", "--limit", "2", "--json"]
    cursor: str | None = None
    while True:
        page = json.loads(run(*args, *(["--cursor", cursor] if cursor else [])).output)
        seen.extend(u["username"] for u in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(["admin", "developer", "alpha", "beta", "gamma", "delta"])
    table = run("list", "--limit", "2")
    assert table.exit_code == 0 and "more: --cursor" in table.output
    bad = run("list", "--status", "GONE")
    assert bad.exit_code == 1 and "status must be one of" in bad.output
    bad = run("list", "--sort", "password")
    assert bad.exit_code == 1


def test_update_suspend_activate_deactivate(db: psycopg.Connection[Any]) -> None:
    user = create("eve")
    sessions.create(db, user["id"], lifetime=timedelta(hours=1))
    updated = run("update", "eve", "--name", "Eve Example", "--role", "MODERATOR", "--json")
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.output)["role"] == "MODERATOR"
    assert run("update", "eve").exit_code == 1  # nothing to change
    assert "SUSPENDED" in run("suspend", "eve").output
    live = """SELECT count(*) FROM "Session" WHERE "userId" = %s AND "revokedAt" IS NULL"""
    assert one(db, live, [user["id"]]) == 0
    assert "ACTIVE" in run("activate", "eve@example.com").output
    assert "INACTIVE" in run("deactivate", user["id"]).output
    actions = [
        r[0]
        for r in db.execute(
            'SELECT action FROM audit_log WHERE "resourceId" = %s ORDER BY id', [user["id"]]
        )
    ]
    assert actions == [
        "users.create",
        "users.update",
        "users.suspend",
        "users.activate",
        "users.deactivate",
    ]


def test_passwd_prompts_twice_and_ends_sessions(
    db: psycopg.Connection[Any], terminal: None
) -> None:
    user = create("frank")
    sessions.create(db, user["id"], lifetime=timedelta(hours=1))
    new = "a brand new passphrase"
    mismatch = run("passwd", "frank", input=f"{new}\nsomething else\n")
    assert mismatch.exit_code != 0
    result = run("passwd", "frank", input=f"{new}\n{new}\n")
    assert result.exit_code == 0, result.output
    assert new not in result.output
    assert passwords.verify(new, one(db, 'SELECT password FROM "User" WHERE id = %s', [user["id"]]))
    live = """SELECT count(*) FROM "Session" WHERE "userId" = %s AND "revokedAt" IS NULL"""
    assert one(db, live, [user["id"]]) == 0
    weak = run("passwd", "frank", "--password", "temppassword")
    assert weak.exit_code == 1 and "commonly used" in weak.output
    stdin = run("passwd", "frank", "--password-stdin", input="yet another passphrase\n")
    assert stdin.exit_code == 0, stdin.output
    assert passwords.verify(
        "yet another passphrase", one(db, 'SELECT password FROM "User" WHERE id = %s', [user["id"]])
    )


def test_xp_commands(db: psycopg.Connection[Any]) -> None:
    create("gina")
    added = run("add-xp", "gina", "150", "--reason", "bonus", "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["level"] == "FLEDGLING"
    taken = run("add-xp", "gina", "--reason", "penalty", "--", "-50")
    assert taken.exit_code == 0, taken.output
    assert "100 XP" in taken.output
    below = run("add-xp", "gina", "--reason", "too much", "--", "-500")
    assert below.exit_code == 1 and "range" in below.output
    assert run("add-xp", "gina", "5").exit_code == 1  # no reason
    assert "WISE_OWL" in run("set-xp", "gina", "1000").output
    assert run("set-xp", "gina", "--", "-1").exit_code == 1
    assert "reputation 7" in run("add-reputation", "gina", "7", "--reason", "helpful").output
    assert "reputation 3" in run("set-reputation", "gina", "3").output


def test_delete_dry_run_confirmation_and_yes(db: psycopg.Connection[Any]) -> None:
    user = create("hank")
    sessions.create(db, user["id"], lifetime=timedelta(hours=1))
    exists = 'SELECT count(*) FROM "User" WHERE id = %s'
    dry = run("delete", "hank", "--dry-run")
    assert dry.exit_code == 0 and "would delete" in dry.output and "1 sessions" in dry.output
    assert one(db, exists, [user["id"]]) == 1
    no = run("delete", "hank", input="n\n")
    assert no.exit_code == 1 and "aborted" in no.output
    assert one(db, exists, [user["id"]]) == 1
    yes = run("delete", "hank", "--yes")
    assert yes.exit_code == 0, yes.output
    assert one(db, exists, [user["id"]]) == 0
    assert one(db, 'SELECT count(*) FROM "Session" WHERE "userId" = %s', [user["id"]]) == 0
    details = one(db, "SELECT details FROM audit_log WHERE action = 'users.delete'")
    assert details["before"]["username"] == "hank" and "$2b$" not in json.dumps(details)


def test_the_last_super_admin_is_protected(db: psycopg.Connection[Any]) -> None:
    for args in (("suspend", "admin"), ("deactivate", "admin"), ("delete", "admin", "--yes")):
        result = run(*args)
        assert result.exit_code == 1 and "last active SUPER_ADMIN" in result.output, args
    demote = run("update", "admin", "--role", "ADMIN")
    assert demote.exit_code == 1 and "last active SUPER_ADMIN" in demote.output
    create("second", "--role", "SUPER_ADMIN")
    assert run("suspend", "admin").exit_code == 0


def test_delete_plans_first_so_a_refusal_comes_before_any_question(
    db: psycopg.Connection[Any],
) -> None:
    audits = "SELECT count(*) FROM audit_log"
    before = one(db, audits)
    for args in (("delete", "admin", "--dry-run"), ("delete", "admin")):
        result = run(*args)  # no input: a question would abort with "aborted"
        assert result.exit_code == 1, args
        assert "last active SUPER_ADMIN" in result.output and "aborted" not in result.output
    assert one(db, audits) == before
    assert one(db, 'SELECT count(*) FROM "User" WHERE username = %s', ["admin"]) == 1


def test_no_question_is_asked_inside_a_transaction(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch, terminal: None
) -> None:
    import smartstart.cli.users as cli_users

    state = {"open": 0, "asked": 0}
    real_transaction = cli_users.transaction

    @contextmanager
    def tracked() -> Iterator[Any]:
        with real_transaction() as pair:
            state["open"] += 1
            try:
                yield pair
            finally:
                state["open"] -= 1

    def asks(real: Callable[..., Any]) -> Callable[..., Any]:
        def ask(*args: Any, **kwargs: Any) -> Any:
            assert state["open"] == 0, "a question was asked inside a transaction"
            state["asked"] += 1
            return real(*args, **kwargs)

        return ask

    monkeypatch.setattr(cli_users, "transaction", tracked)
    monkeypatch.setattr(typer, "prompt", asks(typer.prompt))
    monkeypatch.setattr(typer, "confirm", asks(typer.confirm))
    twice = f"{PW}\n{PW}\n"
    created = run("create", "--email", "ivy@example.com", "--username", "ivy", input=twice)
    assert created.exit_code == 0, created.output
    assert run("passwd", "ivy", input=twice).exit_code == 0
    deleted = run("delete", "ivy", input="y\n")
    assert deleted.exit_code == 0 and "deleted ivy" in deleted.output, deleted.output
    assert state["asked"] == 3
