"""At least one ACTIVE SUPER_ADMIN, whatever path removes one: raw SQL, races, the API."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import errors

from smartstart.api.app import create_app
from smartstart.config import Settings
from smartstart.domain import sessions
from tests.api.conftest import _FIXTURE_HASH

Conn = psycopg.Connection[Any]
PW = "$2b$12$" + "a" * 53
TRIALS = 5


def one(conn: Conn, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def add_user(conn: Conn, email: str, role: str, status: str = "ACTIVE") -> str:
    return one(
        conn,
        'INSERT INTO "User" (email, username, password, role, status)'
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        [email, email.split("@")[0], PW, role, status],
    )


def grant(conn: Conn, user_id: str, role: str) -> None:
    conn.execute(
        'INSERT INTO "UserRole" ("userId", "roleId") SELECT %s, id FROM "Role" WHERE name = %s',
        [user_id, role],
    )


def active_super_admins(conn: Conn) -> int:
    return int(
        one(
            conn,
            'SELECT count(*) FROM "UserRole" ur JOIN "Role" r ON r.id = ur."roleId"'
            ' JOIN "User" u ON u.id = ur."userId"'
            " WHERE r.name = 'SUPER_ADMIN' AND u.status = 'ACTIVE'",
        )
    )


@pytest.fixture
def roles(conn: Conn) -> None:
    conn.execute("INSERT INTO \"Role\" (name) VALUES ('SUPER_ADMIN'), ('ADMIN'), ('MEMBER')")


@pytest.fixture
def admin(conn: Conn, roles: None) -> str:
    """The only SUPER_ADMIN, by primary role."""
    return add_user(conn, "root@example.com", "SUPER_ADMIN")


def refused() -> Any:
    return pytest.raises(errors.CheckViolation, match="no ACTIVE SUPER_ADMIN")


# -- raw SQL ----------------------------------------------------------------------------


def test_empty_database_can_be_seeded_and_emptied_of_others(conn: Conn, roles: None) -> None:
    member = add_user(conn, "m@example.com", "MEMBER")
    conn.execute('DELETE FROM "User" WHERE id = %s', [member])  # no SUPER_ADMIN ever: no check
    add_user(conn, "root@example.com", "SUPER_ADMIN")
    assert active_super_admins(conn) == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE \"User\" SET status = 'SUSPENDED' WHERE id = %s",
        "UPDATE \"User\" SET status = 'INACTIVE' WHERE id = %s",
        "UPDATE \"User\" SET role = 'MEMBER' WHERE id = %s",
        'DELETE FROM "User" WHERE id = %s',  # the cascade to "UserRole"
    ],
    ids=["suspend", "deactivate", "demote", "delete"],
)
def test_raw_sql_cannot_remove_the_last_one(conn: Conn, admin: str, statement: str) -> None:
    with refused():
        conn.execute(statement, [admin])
    assert active_super_admins(conn) == 1


def test_raw_delete_of_an_additional_role_is_refused(conn: Conn, roles: None) -> None:
    uid = add_user(conn, "second@example.com", "ADMIN")
    grant(conn, uid, "SUPER_ADMIN")
    with refused():
        conn.execute(
            'DELETE FROM "UserRole" WHERE "roleId" = (SELECT id FROM "Role"'
            " WHERE name = 'SUPER_ADMIN')"
        )
    with refused():
        conn.execute(
            'UPDATE "UserRole" SET "roleId" = (SELECT id FROM "Role" WHERE name = \'MEMBER\')'
            ' WHERE "userId" = %s AND "roleId" = (SELECT id FROM "Role"'
            " WHERE name = 'SUPER_ADMIN')",
            [uid],
        )
    assert active_super_admins(conn) == 1


def test_renaming_or_deleting_the_role_is_refused(conn: Conn, roles: None) -> None:
    uid = add_user(conn, "second@example.com", "ADMIN")
    grant(conn, uid, "SUPER_ADMIN")
    with refused():
        conn.execute("UPDATE \"Role\" SET name = 'ROOT' WHERE name = 'SUPER_ADMIN'")
    with refused():
        conn.execute("DELETE FROM \"Role\" WHERE name = 'SUPER_ADMIN'")
    assert active_super_admins(conn) == 1


def test_truncating_users_is_refused(conn: Conn, admin: str) -> None:
    with pytest.raises(errors.CheckViolation, match="TRUNCATE"):
        conn.execute('TRUNCATE "User" CASCADE')
    assert active_super_admins(conn) == 1


def test_one_of_two_can_go_and_a_handover_in_one_transaction_works(conn: Conn, admin: str) -> None:
    other = add_user(conn, "other@example.com", "SUPER_ADMIN")
    conn.execute("UPDATE \"User\" SET status = 'SUSPENDED' WHERE id = %s", [other])
    with conn.transaction():  # checked at commit: the state in between does not count
        conn.execute("UPDATE \"User\" SET role = 'MEMBER' WHERE id = %s", [admin])
        conn.execute("UPDATE \"User\" SET status = 'ACTIVE' WHERE id = %s", [other])
    assert active_super_admins(conn) == 1
    # A suspended SUPER_ADMIN can be deleted while an active one remains.
    third = add_user(conn, "third@example.com", "SUPER_ADMIN", status="SUSPENDED")
    conn.execute('DELETE FROM "User" WHERE id = %s', [third])


def test_set_constraints_immediate_reports_inside_the_transaction(conn: Conn, admin: str) -> None:
    with pytest.raises(errors.CheckViolation), conn.transaction():
        conn.execute("UPDATE \"User\" SET status = 'SUSPENDED' WHERE id = %s", [admin])
        conn.execute(
            'SET CONSTRAINTS "UserRole_keep_super_admin", "User_keep_super_admin",'
            ' "Role_keep_super_admin" IMMEDIATE'
        )
        pytest.fail("the check did not run at SET CONSTRAINTS")
    assert active_super_admins(conn) == 1


# -- races ------------------------------------------------------------------------------


def race(
    settings: Settings,
    work: list[Callable[[Conn], None]],
    isolation: psycopg.IsolationLevel | None = None,
) -> list[BaseException | None]:
    """Run each piece of work in its own thread, connection and transaction, at once."""
    barrier = threading.Barrier(len(work))
    results: list[BaseException | None] = [None] * len(work)

    def run(i: int) -> None:
        try:
            with psycopg.connect(settings.url_for()) as c:
                c.isolation_level = isolation
                barrier.wait(timeout=30)
                work[i](c)
                c.commit()
        except BaseException as e:  # reported to the test thread
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.parametrize("how", ["unassign", "suspend", "demote"])
def test_concurrent_removals_of_the_last_two_exactly_one_wins(
    conn: Conn, db_settings: Settings, roles: None, how: str
) -> None:
    statements = {
        "unassign": 'DELETE FROM "UserRole" WHERE "userId" = %s'
        ' AND "roleId" = (SELECT id FROM "Role" WHERE name = \'SUPER_ADMIN\')',
        "suspend": "UPDATE \"User\" SET status = 'SUSPENDED' WHERE id = %s",
        "demote": "UPDATE \"User\" SET role = 'MEMBER' WHERE id = %s",
    }
    survivor = None
    for trial in range(TRIALS):
        primary = "ADMIN" if how == "unassign" else "SUPER_ADMIN"
        pair = [add_user(conn, f"{w}{trial}@example.com", primary) for w in ("x", "y")]
        for uid in pair if how == "unassign" else []:
            grant(conn, uid, "SUPER_ADMIN")
        if survivor:
            conn.execute('DELETE FROM "User" WHERE id = %s', [survivor])
        assert active_super_admins(conn) == 2

        def remove(uid: str) -> Callable[[Conn], None]:
            return lambda c: c.execute(statements[how], [uid]) and None

        results = race(db_settings, [remove(uid) for uid in pair])
        failures = [r for r in results if r is not None]
        assert len(failures) == 1, (trial, results)
        assert isinstance(failures[0], errors.CheckViolation), failures[0]
        assert failures[0].diag.constraint_name == "last_super_admin"
        assert active_super_admins(conn) == 1
        survivor = pair[results.index(failures[0])]


def parallel_deletes(
    client: TestClient, headers: dict[str, str], pair: list[str]
) -> tuple[list[int], list[str]]:
    """DELETE each user's SUPER_ADMIN role, both requests at once."""
    barrier = threading.Barrier(len(pair))
    codes = [0] * len(pair)
    bodies = [""] * len(pair)

    def call(i: int, uid: str) -> None:
        barrier.wait(timeout=30)
        resp = client.delete(f"/api/users/{uid}/roles/SUPER_ADMIN", headers=headers)
        codes[i], bodies[i] = resp.status_code, resp.text

    threads = [threading.Thread(target=call, args=(i, u)) for i, u in enumerate(pair)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return codes, bodies


def test_concurrent_unassigns_through_the_api(seeded_settings: Settings, seeded_conn: Conn) -> None:
    """Two DELETE /api/users/{X}/roles/SUPER_ADMIN at once: one 204, one 409."""
    db = seeded_conn
    survivors: list[str] = list(
        db.execute("SELECT id FROM \"User\" WHERE role = 'SUPER_ADMIN'").fetchall()
    )
    # The caller holds every permission without being a SUPER_ADMIN: neither removal
    # changes what it may do, so the race is decided by the invariant alone (had X
    # acted and removed itself first, its second request would rightly be a 403).
    one(db, "INSERT INTO \"Role\" (name) VALUES ('EVERYTHING') RETURNING id")
    db.execute(
        'INSERT INTO "RolePermission" ("roleId", "permissionId")'
        ' SELECT r.id, p.id FROM "Role" r, "Permission" p WHERE r.name = %s',
        ["EVERYTHING"],
    )
    caller = add_user(db, "caller@example.com", "EVERYTHING")
    token, _ = sessions.create(db, caller, lifetime=timedelta(hours=1))
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(seeded_settings)) as client:
        for trial in range(TRIALS):
            pair = [
                one(
                    db,
                    'INSERT INTO "User" (email, username, password, role)'
                    " VALUES (%s, %s, %s, 'ADMIN') RETURNING id",
                    [f"{w}{trial}@example.com", f"{w}{trial}", _FIXTURE_HASH],
                )
                for w in ("x", "y")
            ]
            for uid in pair:
                grant(db, uid, "SUPER_ADMIN")
            # Whoever held SUPER_ADMIN before steps aside: X and Y are the only ones left.
            db.execute('DELETE FROM "User" WHERE id = ANY(%s)', [[r[0] for r in survivors]])
            assert active_super_admins(db) == 2
            codes, bodies = parallel_deletes(client, headers, pair)
            assert sorted(codes) == [204, 409], (trial, codes, bodies)
            assert json.loads(bodies[codes.index(409)])["error"]["code"] == "last_super_admin"
            assert active_super_admins(db) == 1
            survivors = [(pair[codes.index(409)],)]


def test_the_domain_guard_takes_the_databases_lock(conn: Conn) -> None:
    """guards.ensure_not_last_super_admin serialises with the commit-time check."""
    from smartstart.domain import guards

    source = one(conn, "SELECT prosrc FROM pg_proc WHERE proname = 'smartstart_keep_super_admin'")
    assert f"pg_advisory_xact_lock({guards.SUPER_ADMIN_LOCK_KEY})" in source


def test_concurrent_removals_under_repeatable_read(
    conn: Conn, db_settings: Settings, roles: None
) -> None:
    """A transaction snapshot cannot see the other commit: the check refuses all the same."""
    survivor = None
    for trial in range(TRIALS):
        pair = [add_user(conn, f"{w}{trial}@example.com", "SUPER_ADMIN") for w in ("x", "y")]
        if survivor:
            conn.execute('DELETE FROM "User" WHERE id = %s', [survivor])
        work = [
            (
                lambda c, u=uid: (
                    c.execute("UPDATE \"User\" SET status = 'SUSPENDED' WHERE id = %s", [u])
                    and None
                )
            )
            for uid in pair
        ]
        results = race(db_settings, work, psycopg.IsolationLevel.REPEATABLE_READ)
        failures = [r for r in results if r is not None]
        assert len(failures) == 1, (trial, results)
        # 40001 or 40P01: the usual "retry me" of REPEATABLE READ; either way, refused.
        assert isinstance(
            failures[0],
            errors.CheckViolation | errors.SerializationFailure | errors.DeadlockDetected,
        )
        assert active_super_admins(conn) == 1
        survivor = pair[results.index(failures[0])]
