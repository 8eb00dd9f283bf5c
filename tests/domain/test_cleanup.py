"""Cleanup in batches: what is old goes, what is not stays, locks are skipped, runs audited."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from smartstart.domain import cleanup, sessions
from smartstart.domain.actor import Actor

HASH = "$2b$12$" + "a" * 53
_n = itertools.count()


def add_user(conn: psycopg.Connection[Any], idle_days: float, role: str = "MEMBER") -> str:
    n = next(_n)
    row = conn.execute(
        'INSERT INTO "User" (email, username, name, password, role, "lastActive")'
        " VALUES (%s, %s, %s, %s, %s, now() - %s) RETURNING id",
        [f"clean{n}@example.com", f"clean{n}", f"Clean {n}", HASH, role, timedelta(days=idle_days)],
    ).fetchone()
    assert row is not None
    return str(row[0])


def audit_rows(conn: psycopg.Connection[Any], action: str) -> list[dict[str, Any]]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT details FROM audit_log WHERE action = %s ORDER BY id", [action]
        ).fetchall()
    ]


def run(conn: psycopg.Connection[Any], kinds: Any, **kwargs: Any) -> cleanup.CleanupResult:
    with conn.transaction():
        plan = cleanup.plan_cleanup(conn, kinds, cleanup.Retention())
    return cleanup.execute(conn, Actor.operator(), plan, **kwargs)


def test_old_audit_rows_go_in_batches_and_the_run_is_audited(
    seeded_conn: psycopg.Connection[Any],
) -> None:
    conn = seeded_conn
    conn.execute("DELETE FROM audit_log")
    conn.execute(
        'INSERT INTO audit_log (action, "createdAt")'
        " SELECT 'old', now() - interval '31 days' - g * interval '1 minute'"
        " FROM generate_series(1, 23) g"
    )
    # Rows sharing one timestamp across batches (one transaction's now()).
    conn.execute(
        'INSERT INTO audit_log (action, "createdAt")'
        " SELECT 'old', now() - interval '40 days' FROM generate_series(1, 12)"
    )
    conn.execute(
        'INSERT INTO audit_log (action, "createdAt")'
        " SELECT 'recent', now() - interval '29 days' FROM generate_series(1, 5)"
    )
    with conn.transaction():
        plan = cleanup.plan_cleanup(conn, ["audit-logs"], cleanup.Retention())
    assert [(s.kind, s.count) for s in plan.steps] == [("audit-logs", 35)]
    seen: list[int] = []
    conn.execute("SET synchronous_commit = local")
    before = conn.execute("SHOW synchronous_commit").fetchone()
    result = cleanup.execute(
        conn, Actor.operator(), plan, batch_size=5, progress=lambda kind, n: seen.append(n)
    )
    assert result.done == {"audit-logs": 35} and result.error is None
    assert seen == [5, 5, 5, 5, 5, 5, 5, 0] and result.batches == 8
    left = conn.execute("SELECT action, count(*) FROM audit_log GROUP BY 1 ORDER BY 1").fetchall()
    assert left == [("cleanup.run", 1), ("recent", 5)]
    [details] = audit_rows(conn, "cleanup.run")
    assert details["steps"]["audit-logs"]["planned"] == 35
    assert details["steps"]["audit-logs"]["done"] == 35
    assert details["batches"] == 8
    # The batches' commits were not waited for; the connection is as it was after.
    assert conn.execute("SHOW synchronous_commit").fetchone() == before


def test_inactive_users_are_marked_and_lose_their_sessions_but_the_last_super_admin_stays(
    seeded_conn: psycopg.Connection[Any],
) -> None:
    conn = seeded_conn
    # Everyone of the seed idle for 100 days: the most recently active SUPER_ADMIN stays.
    conn.execute(
        """UPDATE "User"
           SET "lastActive" = now() - interval '100 days' - random() * interval '1 day'"""
    )
    admin = conn.execute(
        """SELECT id FROM "User" WHERE role = 'SUPER_ADMIN' AND status = 'ACTIVE'
           ORDER BY "lastActive" DESC LIMIT 1"""
    ).fetchone()
    assert admin is not None
    idle = [add_user(conn, 91) for _ in range(7)]
    recent = add_user(conn, 89)
    token, _ = sessions.create(conn, idle[0], lifetime=timedelta(hours=1))
    before = conn.execute("""SELECT count(*) FROM "User" WHERE status = 'ACTIVE'""").fetchone()
    assert before is not None
    with conn.transaction():
        plan = cleanup.plan_cleanup(conn, ["inactive-users"], cleanup.Retention())
    [step] = plan.steps
    assert step.kept == (admin[0],) and step.count == before[0] - 2
    result = cleanup.execute(conn, Actor.operator(), plan, batch_size=3)
    assert result.done == {"inactive-users": before[0] - 2}
    active = {r[0] for r in conn.execute("""SELECT id FROM "User" WHERE status = 'ACTIVE'""")}
    assert active == {admin[0], recent}
    # Their sessions ended with their status (the database's trigger).
    assert sessions.resolve(conn, token, idle_timeout=timedelta(hours=1)) is None
    # Each batch names its users: the change can be undone from the audit log.
    batches = audit_rows(conn, "users.deactivated")
    assert len(batches) == -(-step.count // 3)
    named = [u for b in batches for u in b["users"]]
    assert sorted(named) == sorted(set(named)) and set(idle) <= set(named)
    [run_row] = audit_rows(conn, "cleanup.run")
    assert run_row["steps"]["inactive-users"]["kept"] == [admin[0]]


def test_dead_sessions_go_and_live_ones_stay(seeded_conn: psycopg.Connection[Any]) -> None:
    conn = seeded_conn
    user = add_user(conn, 0)
    live, _ = sessions.create(conn, user, lifetime=timedelta(hours=1))
    expired, _ = sessions.create(conn, user, lifetime=timedelta(hours=1))
    revoked, revoked_row = sessions.create(conn, user, lifetime=timedelta(hours=1))
    idle, _ = sessions.create(conn, user, lifetime=timedelta(days=3))
    conn.execute(
        """UPDATE "Session" SET "expiresAt" = now() - interval '1 second' WHERE "tokenHash" = %s""",
        [sessions.hash_token(expired)],
    )
    sessions.revoke(conn, revoked_row["id"])
    conn.execute(
        """UPDATE "Session" SET "lastSeenAt" = now() - interval '3 hours' WHERE "tokenHash" = %s""",
        [sessions.hash_token(idle)],
    )
    result = run(conn, ["sessions"], batch_size=2)
    assert result.done == {"sessions": 3}
    left = [r[0] for r in conn.execute('SELECT "tokenHash" FROM "Session"')]
    assert left == [sessions.hash_token(live)]


def test_a_row_locked_elsewhere_is_skipped_not_waited_for(
    seeded_conn: psycopg.Connection[Any], seeded_settings: Any
) -> None:
    conn = seeded_conn
    locked, free = add_user(conn, 100), add_user(conn, 100)
    holder = psycopg.connect(seeded_settings.url_for())
    try:
        holder.execute("""SELECT 1 FROM "User" WHERE id = %s FOR UPDATE""", [locked])
        conn.execute("SET lock_timeout = '5s'")  # a wait would fail the run, not hang it
        done = threading.Event()
        result: list[cleanup.CleanupResult] = []
        worker = threading.Thread(
            target=lambda: (result.append(run(conn, ["inactive-users"])), done.set())
        )
        worker.start()
        assert done.wait(4), "the cleanup waited for a locked row"
        worker.join()
    finally:
        holder.close()
    statuses = dict(
        conn.execute("""SELECT id, status FROM "User" WHERE id = ANY(%s)""", [[locked, free]])
    )
    assert statuses == {locked: "ACTIVE", free: "INACTIVE"}
    assert result[0].error is None


def test_a_cleanup_needs_a_connection_that_commits_each_batch(
    seeded_settings: Any,
) -> None:
    with psycopg.connect(seeded_settings.url_for()) as conn:
        plan = cleanup.plan_cleanup(conn, ["sessions"], cleanup.Retention())
        with pytest.raises(ValueError, match="autocommit"):
            cleanup.execute(conn, Actor.operator(), plan)
