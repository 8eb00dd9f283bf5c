"""The schema's invariants, exercised the way operators change data: raw SQL.

Every test gets a fresh migrated, empty database (`conn`, autocommit) and
inserts the few rows it needs itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors

from smartstart.config import Settings
from smartstart.db.models import LEVELS, level_for

PW = "$2b$12$" + "a" * 53  # looks like bcrypt; the CHECK only looks at the prefix
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)

Conn = psycopg.Connection[Any]


# -- helpers ------------------------------------------------------------------


def one(conn: Conn, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None, f"no row for {query!r}"
    return row[0]


def add_role(conn: Conn, name: str) -> str:
    return one(conn, 'INSERT INTO "Role" (name) VALUES (%s) RETURNING id', [name])


def add_user(conn: Conn, email: str, role: str = "MEMBER", **cols: Any) -> str:
    values = {"email": email, "username": email.split("@")[0], "password": PW, "role": role}
    values.update(cols)
    names = ", ".join(f'"{k}"' for k in values)
    marks = ", ".join(["%s"] * len(values))
    return one(
        conn, f'INSERT INTO "User" ({names}) VALUES ({marks}) RETURNING id', list(values.values())
    )


def add_stage(conn: Conn, name: str, order: int, xp_reward: int) -> str:
    return one(
        conn,
        'INSERT INTO "JourneyStage" (name, "order", "xpReward") VALUES (%s, %s, %s) RETURNING id',
        [name, order, xp_reward],
    )


def add_session(conn: Conn, user_id: str, token: str, revoked_at: datetime | None = None) -> str:
    return one(
        conn,
        'INSERT INTO "Session" ("tokenHash", "userId", "expiresAt", "revokedAt") '
        "VALUES (%s, %s, now() + interval '1 day', %s) RETURNING id",
        [token, user_id, revoked_at],
    )


def user_roles(conn: Conn, user_id: str) -> list[str]:
    rows = conn.execute(
        'SELECT r.name FROM "UserRole" ur JOIN "Role" r ON r.id = ur."roleId" '
        'WHERE ur."userId" = %s ORDER BY r.name',
        [user_id],
    ).fetchall()
    return [r[0] for r in rows]


def xp_of(conn: Conn, user_id: str) -> int:
    return int(one(conn, 'SELECT xp FROM "User" WHERE id = %s', [user_id]))


def sessions(conn: Conn, user_id: str) -> dict[str, datetime | None]:
    rows = conn.execute(
        'SELECT "tokenHash", "revokedAt" FROM "Session" WHERE "userId" = %s', [user_id]
    ).fetchall()
    return {token: revoked for token, revoked in rows}


@pytest.fixture
def roles(conn: Conn) -> dict[str, str]:
    """MEMBER, ADMIN and GUEST roles: name -> id."""
    return {name: add_role(conn, name) for name in ("MEMBER", "ADMIN", "GUEST")}


@pytest.fixture
def user(conn: Conn, roles: dict[str, str]) -> str:
    return add_user(conn, "owl@example.com")


# -- "updatedAt" ----------------------------------------------------------------


def _setup_user(conn: Conn) -> tuple[str, str, str]:
    add_role(conn, "MEMBER")
    uid = add_user(conn, "t@example.com", updatedAt=LONG_AGO)
    return "User", uid, "UPDATE \"User\" SET name = 'Renamed' WHERE id = %s"


def _setup_role(conn: Conn) -> tuple[str, str, str]:
    rid = one(
        conn, 'INSERT INTO "Role" (name, "updatedAt") VALUES (\'X\', %s) RETURNING id', [LONG_AGO]
    )
    return "Role", rid, "UPDATE \"Role\" SET description = 'changed' WHERE id = %s"


def _setup_permission(conn: Conn) -> tuple[str, str, str]:
    pid = one(
        conn,
        'INSERT INTO "Permission" (name, resource, action, "updatedAt") '
        "VALUES ('users:read', 'users', 'read', %s) RETURNING id",
        [LONG_AGO],
    )
    return "Permission", pid, "UPDATE \"Permission\" SET description = 'changed' WHERE id = %s"


def _setup_stage(conn: Conn) -> tuple[str, str, str]:
    sid = one(
        conn,
        'INSERT INTO "JourneyStage" (name, "order", "updatedAt") '
        "VALUES ('S', 1, %s) RETURNING id",
        [LONG_AGO],
    )
    return "JourneyStage", sid, 'UPDATE "JourneyStage" SET active = false WHERE id = %s'


def _setup_state(conn: Conn) -> tuple[str, str, str]:
    add_role(conn, "MEMBER")
    uid = add_user(conn, "t@example.com")
    sid = add_stage(conn, "S", 1, 0)
    state = one(
        conn,
        'INSERT INTO "UserJourneyState" ("userId", "stageId", "updatedAt") '
        "VALUES (%s, %s, %s) RETURNING id",
        [uid, sid, LONG_AGO],
    )
    return (
        "UserJourneyState",
        state,
        "UPDATE \"UserJourneyState\" SET status = 'SKIPPED' WHERE id = %s",
    )


@pytest.mark.parametrize(
    "setup",
    [_setup_user, _setup_role, _setup_permission, _setup_stage, _setup_state],
    ids=["User", "Role", "Permission", "JourneyStage", "UserJourneyState"],
)
def test_updated_at_follows_every_update(
    conn: Conn, setup: Callable[[Conn], tuple[str, str, str]]
) -> None:
    table, row_id, update = setup(conn)
    # An INSERT may set "updatedAt" (imports keep their history) ...
    assert one(conn, f'SELECT "updatedAt" FROM "{table}" WHERE id = %s', [row_id]) == LONG_AGO
    # ... but any UPDATE that does not mention it moves it to the statement's time,
    before = one(conn, "SELECT now()")
    assert conn.execute(update, [row_id]).rowcount == 1
    after_update = one(conn, f'SELECT "updatedAt" FROM "{table}" WHERE id = %s', [row_id])
    assert after_update >= before
    # and an UPDATE cannot set it back in time either.
    conn.execute(f'UPDATE "{table}" SET "updatedAt" = %s WHERE id = %s', [LONG_AGO, row_id])
    assert one(conn, f'SELECT "updatedAt" FROM "{table}" WHERE id = %s', [row_id]) >= after_update


# -- level derived from xp --------------------------------------------------------

BOUNDARIES = [
    (0, "OWLET"),
    (99, "OWLET"),
    (100, "FLEDGLING"),
    (499, "FLEDGLING"),
    (500, "NIGHT_OWL"),
    (999, "NIGHT_OWL"),
    (1000, "WISE_OWL"),
    (1500, "WISE_OWL"),
    (2_000_000_000, "WISE_OWL"),
]


@pytest.mark.parametrize(("xp", "level"), BOUNDARIES)
def test_level_derived_on_insert(conn: Conn, roles: dict[str, str], xp: int, level: str) -> None:
    uid = add_user(conn, "lvl@example.com", xp=xp)
    assert one(conn, 'SELECT level FROM "User" WHERE id = %s', [uid]) == level


@pytest.mark.parametrize(("xp", "level"), BOUNDARIES)
def test_level_derived_on_update(conn: Conn, user: str, xp: int, level: str) -> None:
    # Start on the far side of the band so that the level must change.
    start = 5000 if xp < 1000 else 0
    conn.execute('UPDATE "User" SET xp = %s WHERE id = %s', [start, user])
    conn.execute('UPDATE "User" SET xp = %s WHERE id = %s', [xp, user])
    assert one(conn, 'SELECT level FROM "User" WHERE id = %s', [user]) == level


def test_guide_xp_update_makes_a_wise_owl(conn: Conn, roles: dict[str, str]) -> None:
    add_user(conn, "developer@alicesolutionsgroup.com")
    conn.execute(
        'UPDATE "User" SET xp = 1500, reputation = 150 '
        "WHERE email = 'developer@alicesolutionsgroup.com'"
    )
    row = conn.execute(
        'SELECT level, xp, reputation FROM "User" '
        "WHERE email = 'developer@alicesolutionsgroup.com'"
    ).fetchone()
    assert row == ("WISE_OWL", 1500, 150)


def test_wrong_level_is_corrected(conn: Conn, roles: dict[str, str]) -> None:
    uid = add_user(conn, "liar@example.com", xp=120, level="WISE_OWL")
    assert one(conn, 'SELECT level FROM "User" WHERE id = %s', [uid]) == "FLEDGLING"
    conn.execute("UPDATE \"User\" SET level = 'WISE_OWL' WHERE id = %s", [uid])
    assert one(conn, 'SELECT level FROM "User" WHERE id = %s', [uid]) == "FLEDGLING"
    conn.execute("UPDATE \"User\" SET level = 'NO_SUCH_LEVEL', xp = 600 WHERE id = %s", [uid])
    assert one(conn, 'SELECT level FROM "User" WHERE id = %s', [uid]) == "NIGHT_OWL"


def test_sql_and_python_agree_on_levels(conn: Conn) -> None:
    probes = sorted({0, 1} | {f + d for _, f in LEVELS for d in (-1, 0, 1) if f + d >= 0})
    for xp in probes:
        assert one(conn, "SELECT smartstart_level_for(%s)", [xp]) == level_for(xp), xp


# -- the primary role in "UserRole" --------------------------------------------------


def test_primary_role_is_assigned_on_insert(conn: Conn, roles: dict[str, str]) -> None:
    uid = add_user(conn, "new@example.com", role="ADMIN")
    assert user_roles(conn, uid) == ["ADMIN"]


def test_guide_user_then_user_role_insert_both_succeed(conn: Conn, roles: dict[str, str]) -> None:
    conn.execute(
        'INSERT INTO "User" (id, email, username, name, "firstName", "lastName", '
        'password, role, level, status, "createdAt", "updatedAt") VALUES ('
        "'user_123', 'newuser@example.com', 'newuser', 'New User', 'New', 'User', "
        "'$2b$12$hashedpassword', 'MEMBER', 'OWLET', 'ACTIVE', NOW(), NOW())"
    )
    cur = conn.execute(
        'INSERT INTO "UserRole" ("userId", "roleId", "assignedAt") VALUES ('
        "(SELECT id FROM \"User\" WHERE email = 'newuser@example.com'), "
        "(SELECT id FROM \"Role\" WHERE name = 'MEMBER'), NOW())"
    )
    assert cur.rowcount == 0  # already assigned: a no-op, not an error
    assert one(conn, 'SELECT count(*) FROM "UserRole" WHERE "userId" = %s', ["user_123"]) == 1
    # The columns the guide omits have their defaults.
    row = conn.execute(
        'SELECT xp, reputation, "lastActive" IS NOT NULL FROM "User" WHERE id = %s', ["user_123"]
    ).fetchone()
    assert row == (0, 0, True)


def test_secondary_role_can_be_added_and_removed(conn: Conn, user: str, roles: dict) -> None:
    conn.execute(
        'INSERT INTO "UserRole" ("userId", "roleId") VALUES (%s, %s)', [user, roles["ADMIN"]]
    )
    assert user_roles(conn, user) == ["ADMIN", "MEMBER"]
    cur = conn.execute(
        'DELETE FROM "UserRole" WHERE "userId" = %s AND "roleId" = %s', [user, roles["ADMIN"]]
    )
    assert cur.rowcount == 1
    assert user_roles(conn, user) == ["MEMBER"]


def test_changing_primary_role_moves_the_assignment(conn: Conn, user: str) -> None:
    conn.execute("UPDATE \"User\" SET role = 'ADMIN' WHERE id = %s", [user])
    assert user_roles(conn, user) == ["ADMIN"]
    conn.execute("UPDATE \"User\" SET role = 'GUEST' WHERE id = %s", [user])
    assert user_roles(conn, user) == ["GUEST"]


def test_promotion_to_an_already_held_secondary_role(
    conn: Conn, user: str, roles: dict[str, str]
) -> None:
    conn.execute(
        'INSERT INTO "UserRole" ("userId", "roleId") VALUES (%s, %s)', [user, roles["ADMIN"]]
    )
    conn.execute("UPDATE \"User\" SET role = 'ADMIN' WHERE id = %s", [user])
    assert user_roles(conn, user) == ["ADMIN"]


def test_deleting_the_primary_role_assignment_is_refused(
    conn: Conn, user: str, roles: dict[str, str]
) -> None:
    with pytest.raises(errors.IntegrityConstraintViolation, match="primary role"):
        conn.execute(
            'DELETE FROM "UserRole" WHERE "userId" = %s AND "roleId" = %s', [user, roles["MEMBER"]]
        )
    assert user_roles(conn, user) == ["MEMBER"]


def test_repointing_the_primary_role_assignment_is_refused(
    conn: Conn, user: str, roles: dict[str, str]
) -> None:
    """An UPDATE of the "UserRole" row must not remove the primary role either."""
    with pytest.raises(errors.IntegrityConstraintViolation, match="primary role"):
        conn.execute(
            'UPDATE "UserRole" SET "roleId" = %s WHERE "userId" = %s AND "roleId" = %s',
            [roles["GUEST"], user, roles["MEMBER"]],
        )
    assert user_roles(conn, user) == ["MEMBER"]


def test_unknown_primary_role_is_rejected(conn: Conn, roles: dict[str, str]) -> None:
    with pytest.raises(errors.ForeignKeyViolation):
        add_user(conn, "x@example.com", role="NO_SUCH_ROLE")


def test_role_of_a_user_cannot_be_deleted_but_can_be_renamed(conn: Conn, user: str) -> None:
    with pytest.raises(errors.ForeignKeyViolation):
        conn.execute("DELETE FROM \"Role\" WHERE name = 'MEMBER'")
    conn.execute("UPDATE \"Role\" SET name = 'CITIZEN' WHERE name = 'MEMBER'")
    assert one(conn, 'SELECT role FROM "User" WHERE id = %s', [user]) == "CITIZEN"
    assert user_roles(conn, user) == ["CITIZEN"]


def test_deleting_a_user_cascades(conn: Conn, roles: dict[str, str]) -> None:
    admin = add_user(conn, "boss@example.com", role="ADMIN")
    uid = add_user(conn, "gone@example.com")
    other = add_user(conn, "stays@example.com")
    conn.execute(
        'INSERT INTO "UserRole" ("userId", "roleId", "assignedBy") VALUES (%s, %s, %s)',
        [uid, roles["GUEST"], admin],
    )
    conn.execute(
        'INSERT INTO "UserRole" ("userId", "roleId", "assignedBy") VALUES (%s, %s, %s)',
        [other, roles["GUEST"], uid],
    )
    stage = add_stage(conn, "S", 1, 10)
    conn.execute(
        'INSERT INTO "UserJourneyState" ("userId", "stageId") VALUES (%s, %s)', [uid, stage]
    )
    add_session(conn, uid, "tok-gone")
    conn.execute(
        'INSERT INTO audit_log (actor, action, resource, "resourceId") '
        "VALUES (%s, 'users.create', 'User', %s)",
        [admin, uid],
    )

    assert conn.execute('DELETE FROM "User" WHERE id = %s', [uid]).rowcount == 1

    for table in ("UserRole", "UserJourneyState", "Session"):
        assert one(conn, f'SELECT count(*) FROM "{table}" WHERE "userId" = %s', [uid]) == 0, table
    # Assignments the deleted user made to others survive, without the dangling reference.
    row = conn.execute(
        'SELECT "assignedBy" FROM "UserRole" WHERE "userId" = %s AND "roleId" = %s',
        [other, roles["GUEST"]],
    ).fetchone()
    assert row == (None,)
    # The audit trail is not tied to the user row.
    assert one(conn, 'SELECT count(*) FROM audit_log WHERE "resourceId" = %s', [uid]) == 1
    assert user_roles(conn, other) == ["GUEST", "MEMBER"]


# -- journey: XP awarded exactly once ---------------------------------------------------


@pytest.fixture
def stage(conn: Conn) -> str:
    return add_stage(conn, "Profile Setup", 1, 150)


@pytest.fixture
def state(conn: Conn, user: str, stage: str) -> str:
    return one(
        conn,
        'INSERT INTO "UserJourneyState" ("userId", "stageId") VALUES (%s, %s) RETURNING id',
        [user, stage],
    )


def state_row(conn: Conn, state_id: str) -> dict[str, Any]:
    cur = conn.execute(
        'SELECT status, "startedAt", "completedAt", "xpAwardedAt" '
        'FROM "UserJourneyState" WHERE id = %s',
        [state_id],
    )
    names = [d.name for d in cur.description or []]
    row = cur.fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


def test_not_started_state_awards_nothing(conn: Conn, user: str, state: str) -> None:
    assert xp_of(conn, user) == 0
    assert state_row(conn, state) == {
        "status": "NOT_STARTED",
        "startedAt": None,
        "completedAt": None,
        "xpAwardedAt": None,
    }


def test_in_progress_sets_started_at_only(conn: Conn, user: str, state: str) -> None:
    conn.execute("UPDATE \"UserJourneyState\" SET status = 'IN_PROGRESS' WHERE id = %s", [state])
    row = state_row(conn, state)
    assert row["startedAt"] is not None
    assert row["completedAt"] is None and row["xpAwardedAt"] is None
    assert xp_of(conn, user) == 0


def test_guide_completion_update_awards_xp_once(conn: Conn, user: str, state: str) -> None:
    guide_update = (
        'UPDATE "UserJourneyState" SET status = \'COMPLETED\', "completedAt" = NOW() '
        'WHERE "userId" = %s AND "stageId" = (SELECT id FROM "JourneyStage" '
        "WHERE name = 'Profile Setup')"
    )
    assert conn.execute(guide_update, [user]).rowcount == 1
    assert xp_of(conn, user) == 150
    assert one(conn, 'SELECT level FROM "User" WHERE id = %s', [user]) == "FLEDGLING"
    row = state_row(conn, state)
    assert row["status"] == "COMPLETED"
    assert row["startedAt"] is not None
    assert row["completedAt"] is not None
    assert row["xpAwardedAt"] is not None
    # The same statement again changes the row but awards nothing more.
    assert conn.execute(guide_update, [user]).rowcount == 1
    assert xp_of(conn, user) == 150


def test_toggling_completion_does_not_award_again(conn: Conn, user: str, state: str) -> None:
    for status in ("COMPLETED", "IN_PROGRESS", "COMPLETED", "NOT_STARTED", "COMPLETED"):
        conn.execute('UPDATE "UserJourneyState" SET status = %s WHERE id = %s', [status, state])
        assert xp_of(conn, user) == 150, status


def test_awarded_marker_cannot_be_reset_to_award_again(conn: Conn, user: str, state: str) -> None:
    conn.execute("UPDATE \"UserJourneyState\" SET status = 'COMPLETED' WHERE id = %s", [state])
    awarded = state_row(conn, state)["xpAwardedAt"]
    conn.execute('UPDATE "UserJourneyState" SET "xpAwardedAt" = NULL WHERE id = %s', [state])
    assert state_row(conn, state)["xpAwardedAt"] == awarded
    conn.execute(
        'UPDATE "UserJourneyState" SET status = \'NOT_STARTED\', "xpAwardedAt" = NULL '
        "WHERE id = %s",
        [state],
    )
    conn.execute(
        'UPDATE "UserJourneyState" SET status = \'COMPLETED\', "xpAwardedAt" = NULL WHERE id = %s',
        [state],
    )
    assert state_row(conn, state)["xpAwardedAt"] == awarded
    assert xp_of(conn, user) == 150


def test_inserting_a_completed_state_awards_once(conn: Conn, user: str, stage: str) -> None:
    # Even a claim that the XP was already awarded is not trusted on insert.
    sid = one(
        conn,
        'INSERT INTO "UserJourneyState" ("userId", "stageId", status, "xpAwardedAt") '
        "VALUES (%s, %s, 'COMPLETED', now()) RETURNING id",
        [user, stage],
    )
    assert xp_of(conn, user) == 150
    row = state_row(conn, sid)
    assert row["startedAt"] is not None and row["completedAt"] is not None
    assert row["startedAt"] <= row["completedAt"]
    conn.execute("UPDATE \"UserJourneyState\" SET status = 'COMPLETED' WHERE id = %s", [sid])
    assert xp_of(conn, user) == 150


def test_completing_several_stages_in_one_statement(conn: Conn, user: str) -> None:
    stages = [add_stage(conn, f"S{i}", i, 10 * i) for i in range(1, 5)]
    for s in stages:
        conn.execute(
            'INSERT INTO "UserJourneyState" ("userId", "stageId") VALUES (%s, %s)', [user, s]
        )
    cur = conn.execute(
        'UPDATE "UserJourneyState" SET status = \'COMPLETED\' WHERE "userId" = %s', [user]
    )
    assert cur.rowcount == 4
    assert xp_of(conn, user) == 10 + 20 + 30 + 40


UPSERT_COMPLETED = (
    'INSERT INTO "UserJourneyState" ("userId", "stageId", status) '
    "SELECT %s, id, 'COMPLETED' FROM \"JourneyStage\" WHERE name = 'Profile Setup' "
)


def test_upsert_of_a_completed_state_awards_once(conn: Conn, user: str, stage: str) -> None:
    """INSERT ... ON CONFLICT DO UPDATE (an idempotent "mark completed") awards exactly once."""
    upsert = (
        UPSERT_COMPLETED
        + 'ON CONFLICT ("userId", "stageId") DO UPDATE SET status = EXCLUDED.status'
    )
    conn.execute(upsert, [user])  # creates the state: awards
    assert xp_of(conn, user) == 150
    conn.execute(upsert, [user])  # conflicts: already awarded
    assert xp_of(conn, user) == 150


def test_upsert_onto_an_open_state_awards_once(conn: Conn, user: str, state: str) -> None:
    upsert = (
        UPSERT_COMPLETED
        + 'ON CONFLICT ("userId", "stageId") DO UPDATE SET status = EXCLUDED.status'
    )
    conn.execute(upsert, [user])  # the NOT_STARTED state becomes COMPLETED: awards once
    assert xp_of(conn, user) == 150


def test_skipped_insert_of_a_completed_state_awards_nothing(
    conn: Conn, user: str, state: str
) -> None:
    """A row that ON CONFLICT DO NOTHING does not insert pays nothing.

    journey._transition creates states this way; two concurrent completions race there.
    """
    assert conn.execute(UPSERT_COMPLETED + "ON CONFLICT DO NOTHING", [user]).rowcount == 0
    assert xp_of(conn, user) == 0


def test_concurrent_completions_award_once(
    conn: Conn, db_settings: Settings, user: str, state: str
) -> None:
    n = 8
    barrier = threading.Barrier(n)
    failures: list[BaseException] = []

    def complete() -> None:
        try:
            with psycopg.connect(db_settings.url_for(), autocommit=True) as c:
                barrier.wait(timeout=30)
                c.execute(
                    "UPDATE \"UserJourneyState\" SET status = 'COMPLETED' WHERE id = %s", [state]
                )
        except BaseException as e:  # reported below, in the test thread
            failures.append(e)

    threads = [threading.Thread(target=complete) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    assert xp_of(conn, user) == 150


def test_one_state_per_user_and_stage(conn: Conn, user: str, stage: str, state: str) -> None:
    with pytest.raises(errors.UniqueViolation):
        conn.execute(
            'INSERT INTO "UserJourneyState" ("userId", "stageId") VALUES (%s, %s)', [user, stage]
        )


def test_stage_with_history_cannot_be_deleted(conn: Conn, stage: str, state: str) -> None:
    with pytest.raises(errors.ForeignKeyViolation):
        conn.execute('DELETE FROM "JourneyStage" WHERE id = %s', [stage])


def test_invalid_journey_status_is_rejected(conn: Conn, state: str) -> None:
    with pytest.raises(errors.CheckViolation):
        conn.execute("UPDATE \"UserJourneyState\" SET status = 'DONE' WHERE id = %s", [state])


# -- sessions end when access is revoked -------------------------------------------------


@pytest.mark.parametrize("status", ["SUSPENDED", "INACTIVE", "PENDING"])
def test_leaving_active_revokes_all_sessions(
    conn: Conn, roles: dict[str, str], status: str
) -> None:
    uid = add_user(conn, "suspicious@example.com")
    other = add_user(conn, "innocent@example.com")
    add_session(conn, uid, "a")
    add_session(conn, uid, "b")
    add_session(conn, uid, "old", revoked_at=LONG_AGO)
    add_session(conn, other, "c")
    cur = conn.execute(
        "UPDATE \"User\" SET status = %s WHERE email = 'suspicious@example.com'", [status]
    )
    assert cur.rowcount == 1
    mine = sessions(conn, uid)
    assert mine["a"] is not None and mine["b"] is not None
    assert mine["old"] == LONG_AGO  # an already revoked session keeps its time
    assert sessions(conn, other) == {"c": None}


def test_staying_active_keeps_sessions(conn: Conn, user: str) -> None:
    add_session(conn, user, "a")
    conn.execute("UPDATE \"User\" SET status = 'ACTIVE', xp = 10 WHERE id = %s", [user])
    assert sessions(conn, user) == {"a": None}


def test_reactivated_user_does_not_get_sessions_back(conn: Conn, user: str) -> None:
    add_session(conn, user, "a")
    conn.execute("UPDATE \"User\" SET status = 'SUSPENDED' WHERE id = %s", [user])
    conn.execute("UPDATE \"User\" SET status = 'ACTIVE' WHERE id = %s", [user])
    assert sessions(conn, user)["a"] is not None


def test_password_change_revokes_sessions(conn: Conn, roles: dict[str, str]) -> None:
    uid = add_user(conn, "admin@alicesolutionsgroup.com", role="ADMIN")
    other = add_user(conn, "other@example.com")
    add_session(conn, uid, "a")
    add_session(conn, other, "b")
    conn.execute(
        "UPDATE \"User\" SET password = '$2b$12$newhashedpassword' "
        "WHERE email = 'admin@alicesolutionsgroup.com'"
    )
    assert sessions(conn, uid)["a"] is not None
    assert sessions(conn, other) == {"b": None}


def test_unchanged_password_keeps_sessions(conn: Conn, user: str) -> None:
    add_session(conn, user, "a")
    conn.execute('UPDATE "User" SET password = password WHERE id = %s', [user])
    assert sessions(conn, user) == {"a": None}


# -- RBAC changes are announced -------------------------------------------------------------


@pytest.fixture
def listener(db_settings: Settings) -> Any:
    with psycopg.connect(db_settings.url_for(), autocommit=True) as c:
        c.execute("LISTEN smartstart_rbac")
        yield c


def received(listener: Conn, timeout: float = 5.0, quiet: float = 0.3) -> list[str]:
    """Payloads that arrive within timeout, stopping once none came for `quiet` seconds."""
    payloads: list[str] = []
    deadline = time.monotonic() + timeout
    wait = timeout
    while time.monotonic() < deadline:
        got = [n.payload for n in listener.notifies(timeout=wait, stop_after=1)]
        if not got:
            break
        payloads.extend(got)
        wait = quiet
    return payloads


def rbac_version(conn: Conn) -> int:
    return int(one(conn, "SELECT version FROM rbac_version WHERE id = 1"))


def test_user_role_insert_notifies(conn: Conn, user: str, roles: dict, listener: Conn) -> None:
    version = rbac_version(conn)
    conn.execute(
        'INSERT INTO "UserRole" ("userId", "roleId") VALUES (%s, %s)', [user, roles["ADMIN"]]
    )
    assert "UserRole" in received(listener)
    assert rbac_version(conn) > version


def test_role_permission_insert_notifies(conn: Conn, roles: dict, listener: Conn) -> None:
    pid = one(
        conn,
        "INSERT INTO \"Permission\" (name, resource, action) VALUES ('db:read', 'db', 'read') "
        "RETURNING id",
    )
    assert "Permission" in received(listener)
    version = rbac_version(conn)
    conn.execute(
        'INSERT INTO "RolePermission" ("roleId", "permissionId") VALUES (%s, %s)',
        [roles["ADMIN"], pid],
    )
    assert received(listener) == ["RolePermission"]
    assert rbac_version(conn) > version


def test_role_insert_notifies(conn: Conn, listener: Conn) -> None:
    version = rbac_version(conn)
    add_role(conn, "AUDITOR")
    assert received(listener) == ["Role"]
    assert rbac_version(conn) > version


def test_primary_role_change_notifies(conn: Conn, user: str, listener: Conn) -> None:
    version = rbac_version(conn)
    conn.execute("UPDATE \"User\" SET role = 'ADMIN' WHERE id = %s", [user])
    assert {"User", "UserRole"} <= set(received(listener))
    assert rbac_version(conn) > version


def test_rbac_change_in_a_rolled_back_transaction_is_not_announced(
    conn: Conn, roles: dict, listener: Conn
) -> None:
    version = rbac_version(conn)
    with pytest.raises(errors.UniqueViolation), conn.transaction():
        add_role(conn, "AUDITOR")
        add_role(conn, "AUDITOR")
    assert received(listener, timeout=0.5) == []
    assert rbac_version(conn) == version


def test_non_rbac_change_is_silent(conn: Conn, user: str, listener: Conn) -> None:
    version = rbac_version(conn)
    conn.execute("UPDATE \"User\" SET xp = xp + 5, name = 'Quiet' WHERE id = %s", [user])
    assert received(listener, timeout=0.5) == []
    assert rbac_version(conn) == version


# -- constraints ---------------------------------------------------------------------------


def test_email_is_unique_case_insensitively(conn: Conn, user: str) -> None:
    with pytest.raises(errors.UniqueViolation):
        add_user(conn, "OWL@Example.COM", username="other")


def test_username_is_unique(conn: Conn, user: str) -> None:
    with pytest.raises(errors.UniqueViolation):
        add_user(conn, "someone@example.com", username="owl")


@pytest.mark.parametrize("password", ["hunter2", "", "2b$12$abc", "$1$md5crypt"])
def test_plain_text_password_is_rejected(conn: Conn, roles: dict, password: str) -> None:
    with pytest.raises(errors.CheckViolation, match="User_password_bcrypt_check"):
        add_user(conn, "pw@example.com", password=password)


def test_plain_text_password_update_is_rejected(conn: Conn, user: str) -> None:
    with pytest.raises(errors.CheckViolation, match="User_password_bcrypt_check"):
        conn.execute("UPDATE \"User\" SET password = 'newpassword' WHERE id = %s", [user])


@pytest.mark.parametrize("status", ["BANNED", "active", ""])
def test_invalid_status_is_rejected(conn: Conn, user: str, status: str) -> None:
    with pytest.raises(errors.CheckViolation, match="User_status_check"):
        conn.execute('UPDATE "User" SET status = %s WHERE id = %s', [status, user])


def test_negative_xp_is_rejected(conn: Conn, roles: dict, user: str) -> None:
    with pytest.raises(errors.CheckViolation, match="User_xp_check"):
        add_user(conn, "neg@example.com", xp=-1)
    with pytest.raises(errors.CheckViolation, match="User_xp_check"):
        conn.execute('UPDATE "User" SET xp = xp - 1 WHERE id = %s', [user])


@pytest.mark.parametrize("email", ["no-at-sign", "two@@example.com", "sp ace@example.com"])
def test_malformed_email_is_rejected(conn: Conn, roles: dict, email: str) -> None:
    with pytest.raises(errors.CheckViolation, match="User_email_check"):
        add_user(conn, email, username="malformed")


def test_permission_name_is_resource_colon_action(conn: Conn) -> None:
    with pytest.raises(errors.CheckViolation):
        conn.execute(
            'INSERT INTO "Permission" (name, resource, action) '
            "VALUES ('users.read', 'users', 'read')"
        )


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_xp_increments_are_not_lost(
    conn: Conn, db_settings: Settings, roles: dict
) -> None:
    uid = add_user(conn, "busy@example.com", xp=990)
    n = 20
    barrier = threading.Barrier(n)
    failures: list[BaseException] = []

    def bump() -> None:
        try:
            with psycopg.connect(db_settings.url_for(), autocommit=True) as c:
                barrier.wait(timeout=30)
                c.execute('UPDATE "User" SET xp = xp + 1 WHERE id = %s', [uid])
        except BaseException as e:  # reported below, in the test thread
            failures.append(e)

    threads = [threading.Thread(target=bump) for _ in range(n)]
    started = datetime.now(UTC)
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert datetime.now(UTC) - started < timedelta(seconds=60)
    row = conn.execute('SELECT xp, level FROM "User" WHERE id = %s', [uid]).fetchone()
    assert row == (1010, "WISE_OWL")
