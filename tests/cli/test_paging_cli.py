"""Every CLI listing: --json prints {items, next_cursor}; --limit/--cursor walk the pages;
a forged cursor or a bad limit is one clear line and exit 1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from smartstart.cli import common
from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.domain import sessions
from tests.cursors import forgeries

runner = CliRunner()
ADMIN = "admin@alicesolutionsgroup.com"
HASH = "$2b$04$WVKvKa12safshzWEV6kU7.Wgv6PzC6oShpvCfBGfIGSlxfhqVfX8."  # never used to sign in

# name: (command, the rows it lists in its order)
LISTINGS: dict[str, tuple[list[str], str]] = {
    "users": (["users", "list"], 'SELECT id FROM "User" ORDER BY "createdAt" DESC, id DESC'),
    "sessions": (
        ["auth", "sessions", ADMIN, "--all"],
        'SELECT s.id FROM "Session" s JOIN "User" u ON u.id = s."userId"'
        f" WHERE u.email = '{ADMIN}' ORDER BY s.\"createdAt\" DESC, s.id DESC",
    ),
    "roles": (["rbac", "roles"], 'SELECT id FROM "Role" ORDER BY name'),
    "roles list": (["rbac", "roles", "list"], 'SELECT id FROM "Role" ORDER BY name'),
    "permissions": (["rbac", "permissions"], 'SELECT id FROM "Permission" ORDER BY name'),
    "stages": (["journey", "stages", "--all"], 'SELECT id FROM "JourneyStage" ORDER BY "order"'),
    "audit": (["audit", "list"], "SELECT id FROM audit_log ORDER BY id DESC"),
}
NAMES = list(LISTINGS)


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", 200)


@pytest.fixture
def db(cli_env: Any, seeded_settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A seeded database with at least five rows in every listing."""
    cli_env(seeded_settings)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        admin = conn.execute('SELECT id FROM "User" WHERE email = %s', [ADMIN]).fetchone()
        assert admin is not None
        for _ in range(5):
            sessions.create(conn, admin[0], lifetime=timedelta(hours=1))
        conn.execute(
            'INSERT INTO "User" (email, username, password)'
            " SELECT 'paging' || n || '@example.com', 'paging' || n, %s"
            " FROM generate_series(1, 4) n",
            [HASH],
        )
        # Equal timestamps: the id must break the tie, or a page boundary would skip or repeat.
        conn.execute('UPDATE "User" SET "createdAt" = date_trunc(\'hour\', now())')
        conn.execute('UPDATE "Session" SET "createdAt" = date_trunc(\'hour\', now())')
        conn.execute(
            "INSERT INTO audit_log (actor, action, details)"
            " SELECT 'cli:test', 'test.paging', '{}' FROM generate_series(1, 7)"
        )
        yield conn


def run(name: str, *args: str) -> Any:
    return runner.invoke(app, [*LISTINGS[name][0], *args])


def page(name: str, *args: str) -> dict[str, Any]:
    result = run(name, "--json", *args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"items", "next_cursor"}, name
    return data  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", NAMES)
def test_json_is_one_page_object_and_the_pages_walk_every_row_once(
    db: psycopg.Connection[Any], name: str
) -> None:
    expected = [r[0] for r in db.execute(LISTINGS[name][1])]
    assert len(expected) >= 5
    whole = page(name, "--limit", "500")
    assert [r["id"] for r in whole["items"]] == expected and whole["next_cursor"] is None
    seen: list[Any] = []
    cursor: list[str] = []
    for _ in range(len(expected)):
        p = page(name, "--limit", "2", *cursor)
        seen.extend(r["id"] for r in p["items"])
        if p["next_cursor"] is None:
            break
        cursor = ["--cursor", p["next_cursor"]]
    assert seen == expected
    table = run(name, "--limit", "2")
    assert table.exit_code == 0 and "more: --cursor " in table.stderr


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "kind",
    ["edited payload", "edited tag", "another listing", "NUL", "truncated", "no tag", "garbage"]
    + ["huge"],
)
def test_a_forged_cursor_is_one_clear_line(
    db: psycopg.Connection[Any], name: str, kind: str
) -> None:
    genuine = page(name, "--limit", "1")["next_cursor"]
    foreign = page("audit" if name != "audit" else "users", "--limit", "1")["next_cursor"]
    result = run(name, "--limit", "1", "--cursor", forgeries(genuine, foreign)[kind])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: the cursor is invalid")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("limit", ["0", "501"])
def test_a_limit_out_of_range_is_the_same_error_as_the_api(
    db: psycopg.Connection[Any], limit: str
) -> None:
    for name in NAMES:
        result = run(name, "--limit", limit)
        assert result.exit_code == 1, name
        assert result.stderr == "error: limit must be a whole number from 1 to 500\n", name


def test_audit_list_shows_the_actor_by_email(db: psycopg.Connection[Any]) -> None:
    admin = db.execute('SELECT id FROM "User" WHERE email = %s', [ADMIN]).fetchone()
    assert admin is not None
    db.execute(
        "INSERT INTO audit_log (actor, action, details) VALUES (%s, 'test.by_user', '{}')",
        [admin[0]],
    )
    table = run("audit", "--action", "test.*")
    assert table.exit_code == 0, table.output
    assert ADMIN in table.stdout and admin[0] not in table.stdout
    assert "cli:test" in table.stdout  # an actor that is not a user shows as it is
    entry = page("audit", "--action", "test.by_user")["items"][0]
    assert (entry["actor"], entry["actorEmail"]) == (admin[0], ADMIN)
