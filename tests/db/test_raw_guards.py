"""Raw-SQL holes closed by migration 0003: TRUNCATE, moved journey states, search_path, inet."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import errors

from smartstart.api.app import create_app
from smartstart.config import Settings
from smartstart.db import migrate
from smartstart.netaddr import ip_or_none
from tests.api.conftest import _FIXTURE_HASH

Conn = psycopg.Connection[Any]
PW = "$2b$12$" + "a" * 53


def one(conn: Conn, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def user(conn: Conn) -> str:
    conn.execute("INSERT INTO \"Role\" (name) VALUES ('MEMBER'), ('ADMIN')")
    uid = one(
        conn,
        'INSERT INTO "User" (email, username, password) VALUES (%s, %s, %s) RETURNING id',
        ["owl@example.com", "owl", PW],
    )
    conn.execute(
        'INSERT INTO "UserRole" ("userId", "roleId") SELECT %s, id FROM "Role" WHERE name = %s',
        [uid, "ADMIN"],
    )
    return uid


def roles_of(conn: Conn, uid: str) -> list[str]:
    rows = conn.execute(
        'SELECT r.name FROM "UserRole" ur JOIN "Role" r ON r.id = ur."roleId"'
        ' WHERE ur."userId" = %s ORDER BY 1',
        [uid],
    )
    return [r[0] for r in rows]


def test_truncate_user_role_keeps_the_primary_roles(conn: Conn, user: str) -> None:
    conn.execute('TRUNCATE "UserRole"')
    assert roles_of(conn, user) == ["MEMBER"]


@pytest.fixture
def stages(conn: Conn) -> tuple[str, str]:
    a = one(
        conn,
        'INSERT INTO "JourneyStage" (name, "order", "xpReward") VALUES (\'A\', 1, 30) RETURNING id',
    )
    b = one(
        conn,
        'INSERT INTO "JourneyStage" (name, "order", "xpReward") VALUES (\'B\', 2, 50) RETURNING id',
    )
    return a, b


def complete(conn: Conn, uid: str, stage: str) -> None:
    conn.execute(
        'INSERT INTO "UserJourneyState" ("userId", "stageId", status) VALUES (%s, %s, %s)',
        [uid, stage, "COMPLETED"],
    )


def xp(conn: Conn, uid: str) -> int:
    return int(one(conn, 'SELECT xp FROM "User" WHERE id = %s', [uid]))


def test_truncate_of_paid_journey_states_is_refused(
    conn: Conn, user: str, stages: tuple[str, str]
) -> None:
    complete(conn, user, stages[0])
    with pytest.raises(errors.IntegrityConstraintViolation, match="truncate"):
        conn.execute('TRUNCATE "UserJourneyState"')
    with pytest.raises(errors.UniqueViolation):
        complete(conn, user, stages[0])
    assert xp(conn, user) == 30


def test_truncate_of_unpaid_journey_states_and_of_users_works(
    conn: Conn, user: str, stages: tuple[str, str]
) -> None:
    conn.execute(
        'INSERT INTO "UserJourneyState" ("userId", "stageId") VALUES (%s, %s)', [user, stages[0]]
    )
    conn.execute('TRUNCATE "UserJourneyState"')
    complete(conn, user, stages[1])
    conn.execute('TRUNCATE "User" CASCADE')  # no SUPER_ADMIN here: the users may all go
    assert one(conn, 'SELECT count(*) FROM "UserJourneyState"') == 0


@pytest.mark.parametrize("column", ["stageId", "userId"])
def test_a_paid_state_cannot_be_moved(
    conn: Conn, user: str, stages: tuple[str, str], column: str
) -> None:
    complete(conn, user, stages[0])
    assert xp(conn, user) == 30
    other = stages[1] if column == "stageId" else user
    if column == "userId":
        other = one(
            conn,
            'INSERT INTO "User" (email, username, password) VALUES (%s, %s, %s) RETURNING id',
            ["two@example.com", "two", PW],
        )
    with pytest.raises(errors.IntegrityConstraintViolation, match="cannot move"):
        conn.execute(f'UPDATE "UserJourneyState" SET "{column}" = %s', [other])
    # The stage stays paid, so completing it again pays nothing: 30, never 130.
    with pytest.raises(errors.UniqueViolation):
        complete(conn, user, stages[0])
    complete(conn, user, stages[1])
    assert xp(conn, user) == 80


def test_an_unpaid_state_can_still_be_moved(conn: Conn, user: str, stages: tuple[str, str]) -> None:
    conn.execute(
        'INSERT INTO "UserJourneyState" ("userId", "stageId") VALUES (%s, %s)', [user, stages[0]]
    )
    conn.execute('UPDATE "UserJourneyState" SET "stageId" = %s', [stages[1]])


# -- search_path ----------------------------------------------------------------------


def test_every_function_pins_its_search_path(conn: Conn) -> None:
    rows = conn.execute(
        "SELECT p.proname, p.proconfig FROM pg_proc p"
        " WHERE p.pronamespace = current_schema()::regnamespace"
        # Functions of extensions (pg_stat_statements) are the extension's business.
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"
    ).fetchall()
    assert rows
    unpinned = [
        name for name, config in rows if not any(c.startswith("search_path=") for c in config or [])
    ]
    assert unpinned == []


def test_triggers_work_with_an_empty_search_path(conn: Conn, user: str) -> None:
    """pg_dump's restore script runs with search_path = ''."""
    conn.execute("SET search_path = ''")
    conn.execute("UPDATE public.\"User\" SET role = 'ADMIN', xp = 150 WHERE id = %s", [user])
    conn.execute('TRUNCATE public."UserRole"')
    conn.execute("RESET search_path")
    assert roles_of(conn, user) == ["ADMIN"]
    assert one(conn, 'SELECT level FROM "User" WHERE id = %s', [user]) == "FLEDGLING"


# -- ip as inet ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 2001:DB8::1 ", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("testclient", None),
        ("1.2.3.4, 5.6.7.8", None),
        ("", None),
        (None, None),
    ],
)
def test_ip_or_none(text: str | None, stored: str | None) -> None:
    assert ip_or_none(text) == stored


def test_migration_converts_ip_text_to_inet(db_settings: Settings) -> None:
    url = db_settings.sqlalchemy_url()
    migrate.downgrade(url, "0002")
    with psycopg.connect(db_settings.url_for(), autocommit=True) as c:
        c.execute(
            "INSERT INTO audit_log (action, ip) VALUES ('a', '10.0.0.9'), ('b', 'testclient'),"
            " ('c', '::1'), ('d', NULL)"
        )
    migrate.upgrade(url)
    with psycopg.connect(db_settings.url_for(), autocommit=True) as c:
        rows = c.execute("SELECT action, ip FROM audit_log ORDER BY action").fetchall()
        kinds = c.execute(
            "SELECT table_name, data_type FROM information_schema.columns"
            " WHERE column_name = 'ip' ORDER BY 1"
        ).fetchall()
    assert rows == [("a", "10.0.0.9"), ("b", None), ("c", "::1"), ("d", None)]
    assert kinds == [("Session", "inet"), ("audit_log", "inet")]


def test_test_client_host_is_stored_as_null(seeded_settings: Settings, seeded_conn: Conn) -> None:
    """Starlette's TestClient says its host is "testclient": not an address, so NULL."""
    seeded_conn.execute(
        'INSERT INTO "User" (email, username, password) VALUES (%s, %s, %s)',
        ["ipless@example.com", "ipless", _FIXTURE_HASH],
    )
    with TestClient(create_app(seeded_settings)) as client:
        resp = client.post(
            "/api/auth/login",
            json={"identifier": "ipless@example.com", "password": "correct horse battery staple"},
        )
        assert resp.status_code == 200, resp.text
        bad = client.post(
            "/api/auth/login", json={"identifier": "ipless@example.com", "password": "wrong!!"}
        )
        assert bad.status_code == 401
    ips = seeded_conn.execute(
        'SELECT s.ip FROM "Session" s JOIN "User" u ON u.id = s."userId" WHERE u.username = %s',
        ["ipless"],
    ).fetchall()
    assert ips == [(None,)]
    assert one(seeded_conn, "SELECT count(*) FROM audit_log WHERE ip IS NOT NULL") == 0
    assert one(seeded_conn, "SELECT count(*) FROM audit_log WHERE action LIKE 'auth.%%'") >= 2
