"""The demo seed's bulk path: what the paused triggers guarantee holds, the schema is whole."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest
from psycopg import sql

from smartstart.config import Settings
from smartstart.db import demo, demo_bulk, migrate
from smartstart.errors import SmartStartError
from smartstart.pg.cluster import Cluster
from tests.conftest import _create_db as create_db
from tests.conftest import drop_db, settings_for
from tests.domain.test_analytics import SUMMARY, assert_exact

Conn = psycopg.Connection[Any]
DEMO = f"%@{demo.DEMO_DOMAIN}"


def _schema(conn: Conn) -> tuple[Any, ...]:
    """Indexes, constraints and trigger states of the tables the bulk path rebuilds."""
    tables = ["User", "UserRole", "UserJourneyState", "audit_log"]
    indexes = conn.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
        " WHERE indrelid::regclass::text = ANY(%s) ORDER BY 1",
        [[f'"{t}"' if t != "audit_log" else t for t in tables]],
    ).fetchall()
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint"
        " WHERE conrelid::regclass::text = ANY(%s) ORDER BY 1",
        [[f'"{t}"' if t != "audit_log" else t for t in tables]],
    ).fetchall()
    triggers = conn.execute(
        "SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"
    ).fetchall()
    return indexes, constraints, triggers


@pytest.fixture
def bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_bulk, "BULK_MIN", 1)


def test_bulk_users_are_what_the_triggers_would_have_made(
    bulk: None, seeded_conn: Conn, seeded_settings: Settings
) -> None:
    conn = seeded_conn
    before = _schema(conn)
    assert demo_bulk.use_bulk(conn, "User", 400)
    assert demo.demo_users(conn, 400, seed=7, rounds=4) == 400
    assert _schema(conn) == before  # every index, constraint and trigger as it was
    assert migrate.check(seeded_settings.sqlalchemy_url())["ok"]
    one = conn.execute(
        'SELECT count(*), count(DISTINCT id), min(xp), max(xp) FROM "User" WHERE email LIKE %s',
        [DEMO],
    ).fetchone()
    assert one is not None and one[:2] == (400, 400) and one[3] > one[2]
    wrong = conn.execute(
        "SELECT count(*) FILTER (WHERE u.level <> smartstart_level_for(u.xp)),"
        " count(*) FILTER (WHERE u.xp <> COALESCE(p.paid, 0)),"
        ' count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM "UserRole" ur JOIN "Role" r'
        ' ON r.id = ur."roleId" WHERE ur."userId" = u.id AND r.name = u.role))'
        ' FROM "User" u LEFT JOIN (SELECT s."userId", sum(js."xpReward") AS paid'
        ' FROM "UserJourneyState" s JOIN "JourneyStage" js ON js.id = s."stageId"'
        ' WHERE s."xpAwardedAt" IS NOT NULL GROUP BY 1) p ON p."userId" = u.id'
        " WHERE u.email LIKE %s",
        [DEMO],
    ).fetchone()
    assert wrong == (0, 0, 0)
    states = conn.execute(
        "SELECT count(*) FILTER (WHERE s.status = 'COMPLETED' AND s.\"xpAwardedAt\" IS NULL"
        " OR s.status <> 'COMPLETED' AND s.\"xpAwardedAt\" IS NOT NULL"
        ' OR s."startedAt" IS NULL OR s."startedAt" > COALESCE(s."completedAt", now())),'
        ' count(*) FROM "UserJourneyState" s JOIN "User" u ON u.id = s."userId"'
        " WHERE u.email LIKE %s",
        [DEMO],
    ).fetchone()
    assert states is not None and states[0] == 0 and states[1] > 400
    audit = conn.execute(
        'SELECT count(*) FROM audit_log a JOIN "User" u ON u.id = a.actor'
        ' WHERE u.email LIKE %s AND a."createdAt" BETWEEN u."createdAt" AND u."lastActive"',
        [DEMO],
    ).fetchone()
    assert audit == (400 * demo.DEMO_AUDIT_PER_USER,)
    kept = conn.execute(
        'SELECT bool_and(h.n = (SELECT count(*) FROM "UserRole" ur WHERE ur."roleId" = r.id))'
        ' FROM "Role" r, LATERAL (SELECT COALESCE(sum(holders), 0) AS n FROM role_holders'
        ' WHERE "roleId" = r.id) h'
    ).fetchone()
    assert kept == (True,)
    # The analytics summary (statement triggers, not paused) counted the bulk rows too.
    assert_exact(conn)
    # A second bulk run continues the numbering: no email is taken twice.
    demo.demo_users(conn, 50, seed=7, rounds=4, audit_per_user=0)
    assert conn.execute(
        'SELECT count(*), count(DISTINCT email) FROM "User" WHERE email LIKE %s', [DEMO]
    ).fetchone() == (450, 450)


def test_a_broken_invariant_rolls_everything_back(
    bulk: None, seeded_conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = seeded_conn
    before = _schema(conn)
    counts = 'SELECT (SELECT count(*) FROM "User"), (SELECT count(*) FROM audit_log)'
    rows = conn.execute(counts).fetchone()
    # Every 50th user loses its primary role's row: what the paused trigger would have added.
    skipping = demo_bulk._INSERT_ROLES.replace(
        "ON r.name = d.role", "ON r.name = d.role AND d.number %% 50 <> 0"
    )
    assert skipping != demo_bulk._INSERT_ROLES
    monkeypatch.setattr(demo_bulk, "_INSERT_ROLES", skipping)
    with pytest.raises(SmartStartError, match="users without their primary role: 4"):
        demo.demo_users(conn, 200, seed=1, rounds=4)
    assert conn.execute(counts).fetchone() == rows  # the audit entries too
    assert _schema(conn) == before


def test_a_duplicate_key_in_a_rebuilt_primary_key_rolls_everything_back(
    bulk: None, seeded_conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journey states' primary key is dropped for the insert and built again after:
    two states with one id make that build fail, and nothing of the run stays."""
    conn = seeded_conn
    before = _schema(conn)
    counts = (
        'SELECT (SELECT count(*) FROM "User"), (SELECT count(*) FROM "UserJourneyState"),'
        ' (SELECT count(*) FROM "UserRole"), (SELECT count(*) FROM audit_log)'
    )
    rows = conn.execute(counts).fetchone()
    twins = demo_bulk._INSERT_STATES.replace(
        "row_number() OVER ()", "(row_number() OVER () / 2 + 1)"
    )
    assert twins != demo_bulk._INSERT_STATES
    monkeypatch.setattr(demo_bulk, "_INSERT_STATES", twins)
    with pytest.raises(psycopg.errors.UniqueViolation, match="UserJourneyState_pkey"):
        demo.demo_users(conn, 200, seed=1, rounds=4)
    assert conn.execute(counts).fetchone() == rows  # the audit entries too
    assert _schema(conn) == before


def test_bulk_tables_have_fresh_statistics(bulk: None, seeded_conn: Conn) -> None:
    """The bulk transactions analyze what they filled before they commit (no ANALYZE after):
    the planner's row counts and column statistics include the new rows."""
    conn = seeded_conn
    demo.demo_users(conn, 400, seed=5, rounds=4)
    for table in ("User", "UserRole", "UserJourneyState", "audit_log"):
        ident = sql.Identifier(table)
        stored, estimated = conn.execute(
            sql.SQL(
                "SELECT (SELECT count(*) FROM {}), reltuples::bigint FROM pg_class"
                " WHERE oid = %s::regclass"
            ).format(ident),
            [ident.as_string(conn)],
        ).fetchone() or (0, -1)
        assert stored == estimated and stored >= 400, table
    roles = conn.execute(
        "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'User' AND attname = 'role'"
    ).fetchone()
    assert roles is not None and "MEMBER" in roles[0]


_USER_COLUMNS = (
    "id", "email", "username", "name", "firstName", "lastName", "password", "role", "status",
    "reputation", "lastActive", "createdAt",
)  # fmt: skip
_STATE_COLUMNS = ("id", "userId", "stageId", "status", "startedAt", "completedAt")


def _columns(names: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, names))


def _made(conn: Conn) -> dict[str, list[Any]]:
    """The demo users' rows, their assignments and states, the role holders and summaries
    (but the timestamps of the moment they were written)."""
    users = sql.SQL('SELECT {}, level, xp FROM "User" WHERE email LIKE %s ORDER BY id').format(
        _columns(_USER_COLUMNS)
    )
    states = sql.SQL(
        'SELECT {}, "xpAwardedAt" IS NOT NULL FROM "UserJourneyState" s'
        ' WHERE "userId" IN (SELECT id FROM "User" WHERE email LIKE %s) ORDER BY id'
    ).format(_columns(_STATE_COLUMNS))
    return {
        "users": conn.execute(users, [DEMO]).fetchall(),
        "roles": conn.execute('SELECT "userId", "roleId" FROM "UserRole" ORDER BY 1, 2').fetchall(),
        "states": conn.execute(states, [DEMO]).fetchall(),
        "holders": conn.execute(
            'SELECT "roleId", sum(holders), sum(primaries) FROM role_holders GROUP BY 1 ORDER BY 1'
        ).fetchall(),
        "summaries": conn.execute(SUMMARY).fetchall(),
    }


def test_bulk_rows_and_summaries_equal_the_triggers_replaying_them(
    bulk: None, seeded_conn: Conn, pg_cluster: Cluster, seeded_template: str
) -> None:
    """The bulk path's users, replayed row by row through every trigger into a twin
    database (XP paid by the award trigger, levels, primary roles, role holders and
    analytics summaries by theirs), come out the same."""
    demo.demo_users(seeded_conn, 300, seed=3, rounds=4, audit_per_user=0)
    bulk_made = _made(seeded_conn)
    assert len(bulk_made["users"]) == 300 and len(bulk_made["states"]) > 300
    twin = f"twin_{os.getpid()}"
    create_db(pg_cluster, twin, seeded_template)
    try:
        with psycopg.connect(settings_for(pg_cluster, twin).url_for(), autocommit=True) as c:
            with c.transaction(), c.cursor() as cur:
                names = _columns(_USER_COLUMNS)
                with cur.copy(sql.SQL('COPY "User" ({}) FROM STDIN').format(names)) as copy:
                    for row in bulk_made["users"]:
                        copy.write_row(row[: len(_USER_COLUMNS)])
                # Row by row, in order: each completed one pays its stage's XP to its user.
                cur.executemany(
                    sql.SQL('INSERT INTO "UserJourneyState" ({}) VALUES ({})').format(
                        _columns(_STATE_COLUMNS),
                        sql.SQL(", ").join(sql.Placeholder() * len(_STATE_COLUMNS)),
                    ),
                    [row[: len(_STATE_COLUMNS)] for row in bulk_made["states"]],
                )
            replayed = _made(c)
    finally:
        drop_db(pg_cluster, twin)
    for part, rows in bulk_made.items():
        assert replayed[part] == rows, part
