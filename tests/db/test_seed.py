"""Seed data and demo users, against a real migrated PostgreSQL database."""

from __future__ import annotations

import contextlib
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import psycopg
import pytest
from pydantic import SecretStr

from smartstart.config import Settings
from smartstart.db import credentials, demo, seed
from smartstart.db.models import LEVELS
from smartstart.domain import catalog, passwords
from smartstart.errors import ConfigurationError, SmartStartError

ADMIN = "admin@alicesolutionsgroup.com"
DEVELOPER = "developer@alicesolutionsgroup.com"
TABLES = (
    *("Role", "Permission", "RolePermission", "JourneyStage", "User", "UserRole"),
    *("UserJourneyState", "Session", "audit_log"),
)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "rbac.md"

# The guide's "Check user permissions" query, verbatim but for the bound email.
GUIDE_PERMISSIONS_SQL = """
SELECT
    u.email,
    r.name as role,
    p.name as permission,
    p.resource,
    p.action
FROM "User" u
JOIN "UserRole" ur ON u.id = ur."userId"
JOIN "Role" r ON ur."roleId" = r.id
JOIN "RolePermission" rp ON r.id = rp."roleId"
JOIN "Permission" p ON rp."permissionId" = p.id
WHERE u.email = %s
ORDER BY p.resource, p.action;
"""

GUIDE_PROFILE_SETUP_SQL = """
UPDATE "UserJourneyState"
SET status = 'COMPLETED', "completedAt" = NOW()
WHERE "userId" = (SELECT id FROM "User" WHERE email = 'admin@alicesolutionsgroup.com')
AND "stageId" = (SELECT id FROM "JourneyStage" WHERE name = 'Profile Setup');
"""

# What the API's endpoints will require (DESIGN.md, Interfaces).
API_PERMISSIONS = {
    "users:read",
    "users:write",
    "rbac:manage",
    "journey:manage",
    "analytics:read",
    "audit:read",
    "db:read",
    "db:backup",
    "db:restore",
}


@pytest.fixture
def home_settings(db_settings: Settings, tmp_path: Path) -> Settings:
    """The test database, with a home of its own and no admin password (so one is generated)."""
    return db_settings.model_copy(update={"home": tmp_path / "home", "admin_password": None})


def counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {
        t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]  # type: ignore[index]
        for t in TABLES
    }


def stored_hash(conn: psycopg.Connection[Any], email: str) -> str:
    row = conn.execute('SELECT password FROM "User" WHERE email = %s', [email]).fetchone()
    assert row is not None, email
    return str(row[0])


def user_permissions(conn: psycopg.Connection[Any], email: str) -> set[str]:
    return {row[2] for row in conn.execute(GUIDE_PERMISSIONS_SQL, [email]).fetchall()}


# --- seed ----------------------------------------------------------------------


def test_seed_creates_roles_permissions_stages_and_users(
    conn: psycopg.Connection[Any], home_settings: Settings
) -> None:
    assert seed.is_empty(conn)
    report = seed.seed(conn, home_settings)

    assert {r[0] for r in conn.execute('SELECT name FROM "Role"')} == set(catalog.ROLES)
    assert {r[0] for r in conn.execute('SELECT name FROM "Permission"')} == set(catalog.PERMISSIONS)
    grants = conn.execute('SELECT count(*) FROM "RolePermission"').fetchone()[0]  # type: ignore[index]
    assert grants == sum(len(p) for p in catalog.ROLE_PERMISSIONS.values())
    rows = counts(conn)
    assert report.created == {t: rows[t] for t in report.created}
    assert report.created["User"] == report.created["UserRole"] == 2
    assert report.created["JourneyStage"] == len(seed.JOURNEY_STAGES)
    assert rows["Session"] == rows["audit_log"] == 0
    assert not seed.is_empty(conn)

    users = conn.execute(
        'SELECT email, username, role, status FROM "User" ORDER BY email'
    ).fetchall()
    assert users == [
        (ADMIN, "admin", "SUPER_ADMIN", "ACTIVE"),
        (DEVELOPER, "developer", "DEVELOPER", "ACTIVE"),
    ]
    # The guide's five-table JOIN finds every permission for the admin.
    assert user_permissions(conn, ADMIN) == set(catalog.PERMISSIONS)
    assert user_permissions(conn, DEVELOPER) == set(catalog.ROLE_PERMISSIONS["DEVELOPER"])


def test_permission_matrix_is_consistent() -> None:
    assert set(catalog.ROLE_PERMISSIONS) == set(catalog.ROLES)
    for role, perms in catalog.ROLE_PERMISSIONS.items():
        assert set(perms) <= set(catalog.PERMISSIONS), role
        assert len(set(perms)) == len(perms), role
    assert set(catalog.ROLE_PERMISSIONS["SUPER_ADMIN"]) == set(catalog.PERMISSIONS)
    assert set(catalog.PERMISSIONS) >= API_PERMISSIONS
    # Roles are listed from most to least powerful, down to a minimal GUEST.
    sizes = [len(catalog.ROLE_PERMISSIONS[r]) for r in catalog.ROLES]
    assert sizes == sorted(sizes, reverse=True)
    assert catalog.ROLE_PERMISSIONS["GUEST"] == ("journey:read",)
    assert not {"db:restore", "db:admin"} & set(catalog.ROLE_PERMISSIONS["ADMIN"])


def test_stages_are_ordered_and_profile_setup_is_open_for_the_guide(
    conn: psycopg.Connection[Any], home_settings: Settings
) -> None:
    seed.seed(conn, home_settings)
    stages = conn.execute(
        'SELECT "order", name, "xpReward", description FROM "JourneyStage" ORDER BY "order"'
    ).fetchall()
    assert len(stages) >= 6
    assert [s[0] for s in stages] == list(range(1, len(stages) + 1))
    assert all(s[2] > 0 and s[3] for s in stages)
    reward = {s[1]: s[2] for s in stages}["Profile Setup"]

    before = conn.execute('SELECT xp, level FROM "User" WHERE email = %s', [ADMIN]).fetchone()
    assert before is not None
    with conn.cursor() as cur:
        cur.execute(GUIDE_PROFILE_SETUP_SQL)
        assert cur.rowcount == 1
    after = conn.execute('SELECT xp FROM "User" WHERE email = %s', [ADMIN]).fetchone()
    assert after is not None and after[0] == before[0] + reward


def test_seed_users_journey_states_award_xp(
    conn: psycopg.Connection[Any], home_settings: Settings
) -> None:
    seed.seed(conn, home_settings)
    rows = conn.execute(
        'SELECT u.email, u.xp, u.level, u.xp = COALESCE(sum(js."xpReward") FILTER ('
        "WHERE s.status = 'COMPLETED'), 0), count(s.id) "
        'FROM "User" u JOIN "UserJourneyState" s ON s."userId" = u.id '
        'JOIN "JourneyStage" js ON js.id = s."stageId" GROUP BY u.id ORDER BY u.email'
    ).fetchall()
    assert [(r[0], r[3]) for r in rows] == [(ADMIN, True), (DEVELOPER, True)]
    for email, xp, level, _, states in rows:
        assert states >= 3, email
        assert level == seed_level(xp), email
    assert rows[1][1] > rows[0][1]  # the developer is further along


def seed_level(xp: int) -> str:
    return [name for name, floor in LEVELS if xp >= floor][-1]


def test_seed_is_idempotent(conn: psycopg.Connection[Any], home_settings: Settings) -> None:
    first = seed.seed(conn, home_settings)
    assert first.credentials_file is not None
    file_before = first.credentials_file.read_text()
    rows_before = counts(conn)
    hashes_before = {e: stored_hash(conn, e) for e in (ADMIN, DEVELOPER)}

    second = seed.seed(conn, home_settings)

    assert second.total == 0
    assert set(second.created.values()) == {0}
    assert second.credentials == {} and second.credentials_file is None
    assert counts(conn) == rows_before
    assert {e: stored_hash(conn, e) for e in (ADMIN, DEVELOPER)} == hashes_before
    assert first.credentials_file.read_text() == file_before


def test_generated_credentials_file_is_private_and_verifies(
    conn: psycopg.Connection[Any], home_settings: Settings
) -> None:
    # The product's own cost, not the suite's cheaper one.
    report = seed.seed(conn, home_settings.model_copy(update={"bcrypt_rounds": 12}))

    path = home_settings.home_dir / "initial-credentials"
    assert report.credentials_file == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(report.credentials) == {ADMIN, DEVELOPER}
    assert report.credentials[ADMIN] != report.credentials[DEVELOPER]
    lines = dict(
        line.split("\t") for line in path.read_text().splitlines() if not line.startswith("#")
    )
    assert lines == report.credentials
    for email, password in report.credentials.items():
        assert len(password) >= 20
        hashed = stored_hash(conn, email)
        assert hashed.startswith("$2b$12$")
        assert bcrypt.checkpw(password.encode(), hashed.encode()), email


def test_admin_password_from_settings_is_used(
    conn: psycopg.Connection[Any], home_settings: Settings
) -> None:
    settings = home_settings.model_copy(update={"admin_password": SecretStr("s3cret admin pw")})
    report = seed.seed(conn, settings)

    assert report.credentials == {} and report.credentials_file is None
    assert not (settings.home_dir / "initial-credentials").exists()
    for email in (ADMIN, DEVELOPER):
        assert bcrypt.checkpw(b"s3cret admin pw", stored_hash(conn, email).encode()), email


def test_reseed_recreates_only_missing_user_and_keeps_other_credentials(
    conn: psycopg.Connection[Any], home_settings: Settings
) -> None:
    first = seed.seed(conn, home_settings)
    admin_hash = stored_hash(conn, ADMIN)
    conn.execute('DELETE FROM "User" WHERE email = %s', [DEVELOPER])

    second = seed.seed(conn, home_settings)

    assert second.created["User"] == 1 and set(second.credentials) == {DEVELOPER}
    assert second.credentials[DEVELOPER] != first.credentials[DEVELOPER]
    assert stored_hash(conn, ADMIN) == admin_hash
    text = (home_settings.home_dir / "initial-credentials").read_text()
    assert f"{ADMIN}\t{first.credentials[ADMIN]}\n" in text
    assert f"{DEVELOPER}\t{second.credentials[DEVELOPER]}\n" in text
    assert first.credentials[DEVELOPER] not in text


def test_reseed_does_not_restore_a_revoked_grant(
    conn: psycopg.Connection[Any], home_settings: Settings
) -> None:
    seed.seed(conn, home_settings)
    conn.execute(
        'DELETE FROM "RolePermission" rp USING "Role" r, "Permission" p '
        'WHERE rp."roleId" = r.id AND rp."permissionId" = p.id '
        "AND r.name = 'DEVELOPER' AND p.name = 'db:backup'"
    )
    report = seed.seed(conn, home_settings)
    assert report.created["RolePermission"] == 0
    assert "db:backup" not in user_permissions(conn, DEVELOPER)


def test_seed_failure_changes_nothing(
    conn: psycopg.Connection[Any], home_settings: Settings
) -> None:
    # Roles and permissions are inserted before the password is checked and refused.
    settings = home_settings.model_copy(update={"admin_password": SecretStr("password")})
    with pytest.raises(SmartStartError, match="SMARTSTART_ADMIN_PASSWORD"):
        seed.seed(conn, settings)
    assert seed.is_empty(conn)
    assert set(counts(conn).values()) == {0}


def test_unwritable_credentials_leave_no_user_behind(
    conn: psycopg.Connection[Any], db_settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "not-a-dir").write_text("")
    settings = db_settings.model_copy(
        update={"home": tmp_path / "not-a-dir", "admin_password": None}
    )
    with pytest.raises(OSError):
        seed.seed(conn, settings)
    assert seed.is_empty(conn)


def test_failed_seed_restores_the_credentials_file(
    conn: psycopg.Connection[Any], home_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = home_settings.home_dir
    home.mkdir(parents=True)
    (home / "initial-credentials").write_text("old@example.com\told-password\n")
    seed_users = seed._seed_users

    def seed_users_then_break_the_commit(cur: psycopg.Cursor[Any], *args: Any) -> None:
        seed_users(cur, *args)
        # "order" is unique, checked at commit: the commit fails after the file is written.
        cur.execute("""INSERT INTO "JourneyStage" (name, "order") VALUES ('dup', 1)""")

    monkeypatch.setattr(seed, "_seed_users", seed_users_then_break_the_commit)
    with pytest.raises(psycopg.errors.UniqueViolation):
        seed.seed(conn, home_settings)
    assert (home / "initial-credentials").read_text() == "old@example.com\told-password\n"
    assert sorted(p.name for p in home.iterdir()) == ["initial-credentials"]  # no copy left
    assert seed.is_empty(conn)


@pytest.mark.parametrize("weak", ["password", "aaaaaaaaaaaa", "passwordpassword", " " * 12])
def test_seed_holds_the_admin_password_to_the_policy(
    conn: psycopg.Connection[Any], home_settings: Settings, weak: str
) -> None:
    settings = home_settings.model_copy(update={"admin_password": SecretStr(weak)})
    with pytest.raises(ConfigurationError) as e:
        seed.seed(conn, settings)
    assert str(e.value).startswith("SMARTSTART_ADMIN_PASSWORD is refused: ")
    assert "\n" not in str(e.value)
    assert set(counts(conn).values()) == {0}


def test_seed_hashes_at_the_configured_cost(
    conn: psycopg.Connection[Any], home_settings: Settings
) -> None:
    fast = home_settings.model_copy(update={"bcrypt_rounds": 4})
    report = seed.seed(conn, fast)
    assert report.credentials
    for email, password in report.credentials.items():
        assert stored_hash(conn, email).startswith("$2b$04$"), email
        assert passwords.verify(password, stored_hash(conn, email))
    conn.execute('DELETE FROM "User" WHERE email = %s', [DEVELOPER])
    given = fast.model_copy(update={"admin_password": SecretStr("s3cret admin pw")})
    seed.seed(conn, given)
    assert stored_hash(conn, DEVELOPER).startswith("$2b$04$")
    demo.demo_users(conn, 3, seed=1, rounds=4)
    row = conn.execute(
        'SELECT DISTINCT password FROM "User" WHERE email LIKE %s', [f"%@{demo.DEMO_DOMAIN}"]
    ).fetchall()
    assert len(row) == 1 and row[0][0].startswith("$2b$04$")


def test_reseed_keeps_the_replaced_credentials_file_as_a_dated_copy(
    conn: psycopg.Connection[Any], home_settings: Settings
) -> None:
    path = home_settings.home_dir / "initial-credentials"
    first = seed.seed(conn, home_settings)
    assert first.credentials_kept is None  # nothing was replaced
    old_text = path.read_text()
    kept: list[Path] = []
    for _ in range(2):  # twice within a second: two copies, neither overwritten
        conn.execute('DELETE FROM "User" WHERE email = %s', [DEVELOPER])
        before = path.read_text()
        report = seed.seed(conn, home_settings)
        assert report.credentials_kept is not None
        assert report.credentials_kept.parent == path.parent
        assert report.credentials_kept.name.startswith("initial-credentials.20")
        assert report.credentials_kept.read_text() == before
        assert stat.S_IMODE(report.credentials_kept.stat().st_mode) == 0o600
        assert report.credentials[DEVELOPER] in path.read_text()
        kept.append(report.credentials_kept)
    assert kept[0] != kept[1] and kept[0].read_text() == old_text
    assert seed.seed(conn, home_settings).credentials_kept is None  # nothing new: no copy
    line = credentials.describe(path, kept[1])
    assert (
        line == f"saved to {path} (mode 600); the file it replaced is kept as {kept[1]} (mode 600)"
    )


def test_is_empty_sees_users_without_roles_and_roles_without_users(
    conn: psycopg.Connection[Any],
) -> None:
    assert seed.is_empty(conn)
    conn.execute("INSERT INTO \"Role\" (name) VALUES ('MEMBER')")
    assert not seed.is_empty(conn)


# --- demo users ------------------------------------------------------------------


@pytest.fixture
def seeded(conn: psycopg.Connection[Any], db_settings: Settings) -> psycopg.Connection[Any]:
    settings = db_settings.model_copy(update={"admin_password": SecretStr("pw for tests")})
    seed.seed(conn, settings)
    return conn


def test_demo_users_invariants(
    seeded: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = seeded
    monkeypatch.setattr(demo, "_DEMO_CHUNK", 400)
    calls: list[int] = []

    assert demo.demo_users(conn, 1000, progress=calls.append, seed=7) == 1000

    assert calls == [400, 800, 1000]
    is_demo = "email LIKE '%%@' || %s"
    one = conn.execute(
        f"SELECT count(*), count(DISTINCT lower(email)), count(DISTINCT username), "
        f'count(DISTINCT password), min("createdAt"), max("createdAt"), '
        f'bool_and("lastActive" >= "createdAt"), bool_and(level = smartstart_level_for(xp)) '
        f'FROM "User" WHERE {is_demo}',
        [demo.DEMO_DOMAIN],
    ).fetchone()
    assert one is not None
    total, emails, usernames, hashes, oldest, newest, active_after, levels_ok = one
    assert total == emails == usernames == 1000
    assert hashes == 1  # one shared hash
    now = datetime.now(UTC)
    assert now - timedelta(days=365) < oldest and newest <= now
    assert newest - oldest > timedelta(days=300)  # spread over the year
    assert active_after and levels_ok

    def distribution(column: str) -> dict[str, int]:
        return dict(
            conn.execute(
                f'SELECT {column}, count(*) FROM "User" WHERE {is_demo} GROUP BY 1',
                [demo.DEMO_DOMAIN],
            ).fetchall()
        )

    levels = distribution("level")
    assert set(levels) == {name for name, _ in LEVELS}
    roles = distribution("role")
    assert max(roles, key=lambda r: roles[r]) == "MEMBER" and roles["MEMBER"] > 600
    assert {"DEVELOPER", "MODERATOR", "GUEST"} <= set(roles) and "SUPER_ADMIN" not in roles
    statuses = distribution("status")
    assert statuses["ACTIVE"] > 700 and len(statuses) >= 3

    missing_primary = conn.execute(
        'SELECT count(*) FROM "User" u WHERE NOT EXISTS (SELECT 1 FROM "UserRole" ur '
        'JOIN "Role" r ON r.id = ur."roleId" WHERE ur."userId" = u.id AND r.name = u.role)'
    ).fetchone()
    assert missing_primary == (0,)

    # Journey states exist, completed stages form a prefix, and their XP is in the user's.
    journey = conn.execute(
        "SELECT count(*) FILTER (WHERE done > 0), count(*) FILTER (WHERE done <> top), "
        "count(*) FILTER (WHERE xp < earned), max(done) "
        "FROM (SELECT u.id, u.xp, count(s.id) FILTER (WHERE s.status = 'COMPLETED') AS done, "
        "COALESCE(max(js.\"order\") FILTER (WHERE s.status = 'COMPLETED'), 0) AS top, "
        "COALESCE(sum(js.\"xpReward\") FILTER (WHERE s.status = 'COMPLETED'), 0) AS earned "
        'FROM "User" u LEFT JOIN "UserJourneyState" s ON s."userId" = u.id '
        'LEFT JOIN "JourneyStage" js ON js.id = s."stageId" '
        f"WHERE u.{is_demo} GROUP BY u.id) t",
        [demo.DEMO_DOMAIN],
    ).fetchone()
    assert journey is not None
    with_progress, not_prefix, xp_short, furthest = journey
    assert with_progress > 400 and not_prefix == 0 and xp_short == 0 and furthest >= 5
    in_progress = conn.execute(
        "SELECT count(*) FROM \"UserJourneyState\" WHERE status = 'IN_PROGRESS' "
        'AND "startedAt" IS NOT NULL AND "completedAt" IS NULL'
    ).fetchone()
    assert in_progress is not None and in_progress[0] > 100


def test_demo_users_xp_is_what_their_completed_stages_paid(
    seeded: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = seeded
    monkeypatch.setattr(demo, "_DEMO_CHUNK", 150)
    assert demo.demo_users(conn, 400, seed=11) == 400
    is_demo = "u.email LIKE '%%@' || %s"
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE u.xp <> t.earned),"
        " count(*) FILTER (WHERE u.level <> smartstart_level_for(u.xp)),"
        ' count(*) FILTER (WHERE u."updatedAt" <> u."lastActive"),'
        " count(DISTINCT u.level)"
        ' FROM "User" u CROSS JOIN LATERAL (SELECT COALESCE(sum(js."xpReward"), 0) AS earned'
        '  FROM "UserJourneyState" s JOIN "JourneyStage" js ON js.id = s."stageId"'
        "  WHERE s.\"userId\" = u.id AND s.status = 'COMPLETED') t"
        f" WHERE {is_demo}",
        [demo.DEMO_DOMAIN],
    ).fetchone()
    # The XP equals the completed stages' rewards, the level follows it, and no user row
    # was updated after its insert (an award by trigger would have: updatedAt = now()).
    assert row == (400, 0, 0, 0, 4)
    paid = conn.execute(
        'SELECT count(*) FILTER (WHERE "xpAwardedAt" IS NULL), count(*)'
        " FROM \"UserJourneyState\" WHERE status = 'COMPLETED'"
    ).fetchone()
    assert paid is not None and paid[0] == 0 and paid[1] > 400  # paid: never paid again
    audit = conn.execute(
        "SELECT count(*), count(DISTINCT a.actor),"
        ' count(*) FILTER (WHERE a."createdAt" < u."createdAt" OR a."createdAt" > u."lastActive")'
        ' FROM audit_log a JOIN "User" u ON u.id = a.actor'
        f" WHERE {is_demo}",
        [demo.DEMO_DOMAIN],
    ).fetchone()
    assert audit == (400 * demo.DEMO_AUDIT_PER_USER, 400, 0)
    # The paused triggers are back: completing a further stage pays as always.
    enabled = conn.execute(
        "SELECT tgname, tgenabled FROM pg_trigger WHERE tgname = ANY(%s)",
        [["User_primary_role", "UserJourneyState_award_insert"]],
    ).fetchall()
    assert sorted(enabled) == [("UserJourneyState_award_insert", "O"), ("User_primary_role", "O")]
    user = conn.execute(
        'SELECT u.id, u.xp, js.id, js."xpReward" FROM "User" u, "JourneyStage" js'
        f" WHERE {is_demo} AND u.status = 'ACTIVE' AND NOT EXISTS (SELECT 1 FROM"
        ' "UserJourneyState" s WHERE s."userId" = u.id AND s."stageId" = js.id) LIMIT 1',
        [demo.DEMO_DOMAIN],
    ).fetchone()
    assert user is not None
    user_id, xp, stage_id, reward = user
    conn.execute(
        'INSERT INTO "UserJourneyState" ("userId", "stageId", status) VALUES (%s, %s, %s)',
        [user_id, stage_id, "COMPLETED"],
    )
    assert conn.execute('SELECT xp FROM "User" WHERE id = %s', [user_id]).fetchone() == (
        xp + reward,
    )


def test_demo_users_twice_do_not_collide(seeded: psycopg.Connection[Any]) -> None:
    assert demo.demo_users(seeded, 300, seed=1) == 300
    # The same seed again: same names, but numbering continues after the first batch.
    assert demo.demo_users(seeded, 300, seed=1) == 300
    row = seeded.execute(
        'SELECT count(*), count(DISTINCT lower(email)), count(DISTINCT username) FROM "User"'
    ).fetchone()
    assert row == (602, 602, 602)


def test_demo_users_concurrent_runs_do_not_collide(
    seeded: psycopg.Connection[Any], db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[BaseException] = []
    # Both runs pick their first number at the same moment unless the lock keeps
    # the second out: with the lock, the first gives up waiting after a second.
    barrier = threading.Barrier(2)
    next_number = demo._next_demo_number

    def meet_then_number(cur: psycopg.Cursor[Any]) -> int:
        number = next_number(cur)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=1)
        return number

    monkeypatch.setattr(demo, "_next_demo_number", meet_then_number)

    def run() -> None:
        try:
            with psycopg.connect(db_settings.url_for(), autocommit=True) as c:
                demo.demo_users(c, 200, seed=5)
        except BaseException as e:  # reported below: a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    row = seeded.execute('SELECT count(*), count(DISTINCT lower(email)) FROM "User"').fetchone()
    assert row == (402, 402)


def test_demo_users_with_one_connection_only(
    seeded: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The path taken when the server refuses a second connection.
    monkeypatch.setattr(demo, "_companion", lambda conn: contextlib.nullcontext(None))
    monkeypatch.setattr(demo, "_DEMO_CHUNK", 100)
    calls: list[int] = []
    assert demo.demo_users(seeded, 250, progress=calls.append, seed=2) == 250
    assert calls == [100, 200, 250]
    row = seeded.execute(
        'SELECT count(DISTINCT u.id), count(s.id) FROM "User" u '
        'JOIN "UserJourneyState" s ON s."userId" = u.id WHERE u.email LIKE %s',
        [f"%@{demo.DEMO_DOMAIN}"],
    ).fetchone()
    assert row is not None and row[0] > 100 and row[1] >= row[0]


def test_demo_users_refuses_an_open_transaction(seeded: psycopg.Connection[Any]) -> None:
    with psycopg.connect(seeded.info.dsn, password=seeded.info.password) as c:
        c.execute("SELECT 1")
        with pytest.raises(SmartStartError, match="transaction"):
            demo.demo_users(c, 10)
    assert seeded.execute('SELECT count(*) FROM "User"').fetchone() == (2,)


def test_demo_users_password_is_unusable_bcrypt(seeded: psycopg.Connection[Any]) -> None:
    demo.demo_users(seeded, 5, seed=3)
    row = seeded.execute(
        'SELECT DISTINCT password FROM "User" WHERE email LIKE %s', [f"%@{demo.DEMO_DOMAIN}"]
    ).fetchall()
    assert len(row) == 1
    hashed = row[0][0].encode()
    assert hashed.startswith(b"$2b$12$")
    for guess in (b"", b"password", b"demo", b"smartstart_password"):
        assert not bcrypt.checkpw(guess, hashed)


def test_demo_users_needs_seed(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(SmartStartError, match="seed"):
        demo.demo_users(conn, 10)
    assert conn.execute('SELECT count(*) FROM "User"').fetchone() == (0,)


def test_demo_users_zero_is_a_no_op(seeded: psycopg.Connection[Any]) -> None:
    assert demo.demo_users(seeded, 0) == 0
    assert seeded.execute('SELECT count(*) FROM "User"').fetchone() == (2,)


# --- docs/rbac.md ----------------------------------------------------------------


def matrix_table() -> str:
    roles = list(catalog.ROLES)
    lines = [
        "| permission | " + " | ".join(roles) + " |",
        "|---|" + "---|" * len(roles),
    ]
    for perm in catalog.PERMISSIONS:
        cells = ["✓" if perm in catalog.ROLE_PERMISSIONS[r] else "" for r in roles]
        lines.append(f"| `{perm}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def permissions_table() -> str:
    lines = ["| permission | allows |", "|---|---|"]
    lines += [f"| `{name}` | {desc} |" for name, desc in catalog.PERMISSIONS.items()]
    return "\n".join(lines) + "\n"


def roles_table() -> str:
    lines = ["| role | for |", "|---|---|"]
    lines += [f"| `{name}` | {desc} |" for name, desc in catalog.ROLES.items()]
    return "\n".join(lines) + "\n"


def stages_table() -> str:
    lines = ["| order | stage | XP | description |", "|---|---|---|---|"]
    lines += [
        f"| {s.order} | {s.name} | {s.xp_reward} | {s.description} |" for s in seed.JOURNEY_STAGES
    ]
    return "\n".join(lines) + "\n"


def levels_table() -> str:
    lines = ["| level | XP |", "|---|---|"]
    for i, (name, floor) in enumerate(LEVELS):
        upper = f"–{LEVELS[i + 1][1] - 1}" if i + 1 < len(LEVELS) else "+"
        lines.append(f"| `{name}` | {floor}{upper} |")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "table", [matrix_table, permissions_table, roles_table, stages_table, levels_table]
)
def test_docs_rbac_tables_match_the_seed_data(table: Any) -> None:
    expected = table()
    assert expected in DOCS.read_text(), (
        f"docs/rbac.md is out of date; its table should read:\n\n{expected}"
    )
