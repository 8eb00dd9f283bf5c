"""role_holders (migration 0005): the triggers keep each role's holder counts exact."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.types.json

from smartstart.config import Settings
from smartstart.domain import rbac

Conn = psycopg.Connection[Any]
HASH = "$2b$04$" + "a" * 53


def _add(conn: Conn, name: str, role: str = "MEMBER") -> str:
    row = conn.execute(
        'INSERT INTO "User" (email, username, password, role) VALUES (%s, %s, %s, %s) RETURNING id',
        [f"{name}@x.example", name, HASH, role],
    ).fetchone()
    assert row is not None
    return str(row[0])


def _assign(conn: Conn, user_id: str, role: str) -> None:
    conn.execute(
        'INSERT INTO "UserRole" ("userId", "roleId") SELECT %s, id FROM "Role" WHERE name = %s',
        [user_id, role],
    )


def _kept(conn: Conn) -> dict[str, tuple[int, int]]:
    rows = conn.execute(
        "SELECT r.name, COALESCE(sum(h.holders), 0)::int, COALESCE(sum(h.primaries), 0)::int"
        ' FROM "Role" r LEFT JOIN role_holders h ON h."roleId" = r.id GROUP BY r.name'
    ).fetchall()
    return {name: (holders, primaries) for name, holders, primaries in rows}


def _counted(conn: Conn) -> dict[str, tuple[int, int]]:
    rows = conn.execute(
        'SELECT r.name, (SELECT count(*) FROM "UserRole" ur WHERE ur."roleId" = r.id)::int,'
        ' (SELECT count(*) FROM "User" u WHERE u.role = r.name)::int FROM "Role" r'
    ).fetchall()
    return {name: (holders, primaries) for name, holders, primaries in rows}


def test_counts_follow_every_kind_of_write(seeded_conn: Conn) -> None:
    conn = seeded_conn
    assert _kept(conn) == _counted(conn)
    a, b, c = _add(conn, "a"), _add(conn, "b", "GUEST"), _add(conn, "c", "DEVELOPER")
    _assign(conn, a, "MODERATOR")
    _assign(conn, a, "MODERATOR")  # a no-op (dedupe trigger): counted once
    _assign(conn, b, "MODERATOR")
    assert _kept(conn)["MODERATOR"] == (2, 0)
    conn.execute('UPDATE "User" SET role = %s WHERE id = %s', ["MODERATOR", a])  # primary moves
    conn.execute('UPDATE "User" SET role = %s WHERE id = %s', ["ADMIN", c])
    conn.execute('UPDATE "User" SET xp = 700 WHERE id = %s', [b])  # no role change
    conn.execute(
        'DELETE FROM "UserRole" WHERE "userId" = %s AND "roleId" <> '
        "(SELECT id FROM \"Role\" WHERE name = 'GUEST')",
        [b],
    )
    assert _kept(conn) == _counted(conn)
    conn.execute('DELETE FROM "User" WHERE id = %s', [a])  # assignments go by cascade
    assert _kept(conn) == _counted(conn)
    with conn.transaction():
        conn.execute('TRUNCATE "UserRole"')  # additional roles go, primary ones come back
    assert _kept(conn) == _counted(conn)


def test_renaming_and_deleting_a_role(seeded_conn: Conn) -> None:
    conn = seeded_conn
    conn.execute('INSERT INTO "Role" (name) VALUES (%s)', ["TEMP_ROLE"])
    u, v = _add(conn, "u", "TEMP_ROLE"), _add(conn, "v")
    _assign(conn, v, "TEMP_ROLE")
    conn.execute('UPDATE "Role" SET name = %s WHERE name = %s', ["RENAMED", "TEMP_ROLE"])
    assert _kept(conn)["RENAMED"] == (2, 1) == _counted(conn)["RENAMED"]
    conn.execute('UPDATE "User" SET role = %s WHERE id = %s', ["MEMBER", u])
    conn.execute('DELETE FROM "Role" WHERE name = %s', ["RENAMED"])  # v's assignment cascades
    assert _kept(conn) == _counted(conn)
    left = conn.execute(
        "SELECT count(*) FROM role_holders h WHERE NOT EXISTS"
        ' (SELECT 1 FROM "Role" r WHERE r.id = h."roleId")'
    ).fetchone()
    assert left == (0,)


def test_listed_roles_show_the_kept_counts(seeded_conn: Conn, seeded_settings: Settings) -> None:
    conn = seeded_conn
    for i in range(3):
        _add(conn, f"g{i}", "GUEST")
    listed = {r["name"]: r["users"] for r in rbac.list_roles(conn, settings=seeded_settings).items}
    assert listed == {name: holders for name, (holders, _) in _counted(conn).items()}


def test_backends_add_to_their_own_shard_rows(seeded_settings: Settings) -> None:
    # A transaction that assigned MEMBER holds its shard row until it commits; another
    # backend's count goes to another row, so it does not wait (unless both pids share
    # a shard: the test picks one that does not).
    url = seeded_settings.url_for()
    with psycopg.connect(url, autocommit=True) as first:
        pid = first.info.backend_pid
        others = [psycopg.connect(url, autocommit=True) for _ in range(4)]
        try:
            second = next(o for o in others if o.info.backend_pid % 64 != pid % 64)
            member = first.execute('SELECT id FROM "Role" WHERE name = %s', ["MEMBER"]).fetchone()
            assert member is not None
            deltas = psycopg.types.json.Jsonb([{"roleId": member[0], "holders": 1, "primaries": 1}])
            with first.transaction():
                _add(first, "first")
                with second.transaction(force_rollback=True):
                    second.execute("SET LOCAL lock_timeout = '2s'")
                    second.execute("SELECT smartstart_role_holders_add(%s)", [deltas])
            shards = first.execute(
                'SELECT count(*) FROM role_holders WHERE "roleId" = %s AND shard = %s',
                [member[0], pid % 64],
            ).fetchone()
            assert shards == (1,)
            assert _kept(first) == _counted(first)
        finally:
            for o in others:
                o.close()
