"""smartstart.domain.auth on a real seeded database."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import bcrypt
import psycopg
import pytest

from smartstart.config import Settings
from smartstart.domain import auth, passwords, sessions
from smartstart.domain.audit import Actor
from smartstart.domain.errors import Forbidden, Invalid, NotFound, TooManyRequests, Unauthorized

PASSWORD = "correct horse battery staple"
FAST_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
IDLE = timedelta(hours=1)
_n = itertools.count()


@pytest.fixture
def settings(seeded_settings: Settings) -> Settings:
    """Cost-4 hashing so these tests stay fast."""
    return seeded_settings.model_copy(update={"bcrypt_rounds": 4})


def add_user(
    conn: psycopg.Connection[Any], status: str = "ACTIVE", password_hash: str = FAST_HASH
) -> dict[str, str]:
    n = next(_n)
    email, username = f"Auth{n}@Example.com", f"auth{n}"
    row = conn.execute(
        'INSERT INTO "User" (email, username, password, status) VALUES (%s, %s, %s, %s)'
        " RETURNING id",
        [email, username, password_hash, status],
    ).fetchone()
    assert row is not None
    return {"id": row[0], "email": email, "username": username}


def do_login(
    conn: psycopg.Connection[Any],
    settings: Settings,
    identifier: str,
    password: str = PASSWORD,
    ip: str | None = "203.0.113.7",
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    return auth.login(conn, identifier, password, ip=ip, user_agent="pytest", settings=settings)


def audit_rows(conn: psycopg.Connection[Any], prefix: str = "auth.") -> list[tuple[Any, ...]]:
    return conn.execute(
        'SELECT action, actor, "resourceId", details FROM audit_log WHERE action LIKE %s'
        " ORDER BY id",
        [prefix + "%"],
    ).fetchall()


def test_login_by_email_any_case_and_by_username(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    for identifier in (user["email"], user["email"].upper(), user["username"]):
        token, session, who = do_login(seeded_conn, settings, identifier)
        assert who["id"] == user["id"] and "password" not in who
        assert session["userId"] == user["id"] and session["ip"] == "203.0.113.7"
        principal = sessions.resolve(seeded_conn, token, idle_timeout=IDLE)
        assert principal is not None and principal.session_id == session["id"]
    rows = audit_rows(seeded_conn)
    assert [r[0] for r in rows] == ["auth.login"] * 3
    assert all(r[1] == user["id"] for r in rows)


def test_unknown_user_and_wrong_password_fail_alike(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    with pytest.raises(Unauthorized) as wrong:
        do_login(seeded_conn, settings, user["email"], "not the password at all")
    with pytest.raises(Unauthorized) as unknown:
        do_login(seeded_conn, settings, "nobody@example.com")
    assert wrong.value.message == unknown.value.message == auth.INVALID_CREDENTIALS
    assert wrong.value.details == unknown.value.details == {}
    rows = audit_rows(seeded_conn)
    assert [(r[0], r[3]["reason"]) for r in rows] == [
        ("auth.login_failed", "wrong_password"),
        ("auth.login_failed", "unknown_user"),
    ]
    assert rows[0][2] == user["id"] and rows[1][2] is None
    assert "not the password" not in str(rows)


def test_inactive_users_cannot_sign_in_and_only_learn_why_with_the_password(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    for status in ("SUSPENDED", "INACTIVE", "PENDING"):
        user = add_user(seeded_conn, status=status)
        with pytest.raises(Unauthorized):
            do_login(seeded_conn, settings, user["email"], "not the password at all")
        with pytest.raises(Forbidden) as exc:
            do_login(seeded_conn, settings, user["email"])
        assert exc.value.details == {"reason": "account_inactive", "status": status}
    assert seeded_conn.execute('SELECT count(*) FROM "Session"').fetchone() == (0,)


def test_a_failed_login_is_recorded_even_when_the_caller_rolls_back(
    seeded_settings: Settings, settings: Settings, seeded_conn: psycopg.Connection[Any]
) -> None:
    user = add_user(seeded_conn)
    with psycopg.connect(seeded_settings.url_for()) as tx:  # a transaction, like the API's
        with pytest.raises(Unauthorized):
            do_login(tx, settings, user["email"], "not the password at all")
        tx.rollback()
    assert [r[0] for r in audit_rows(seeded_conn)] == ["auth.login_failed"]
    row = seeded_conn.execute(
        'SELECT failures FROM "LoginThrottle" WHERE key = %s', [auth.account_key(user["email"])]
    ).fetchone()
    assert row == (1,)


def test_five_failures_lock_the_account_even_for_the_right_password(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    for i in range(auth.MAX_FAILURES):
        # email and username count against the same account
        who = user["username"] if i % 2 else user["email"]
        with pytest.raises(Unauthorized):
            do_login(seeded_conn, settings, who, "not the password at all", ip=f"198.51.100.{i}")
    with pytest.raises(TooManyRequests) as exc:
        do_login(seeded_conn, settings, user["username"])
    assert exc.value.retry_after >= 1
    actions = [r[0] for r in audit_rows(seeded_conn)]
    assert actions == ["auth.login_failed"] * 5 + ["auth.throttled"]

    cleared = auth.clear_throttle(seeded_conn, Actor.operator(), email=user["email"].upper())
    assert cleared == 1
    do_login(seeded_conn, settings, user["email"])
    assert audit_rows(seeded_conn)[-2][0] == "auth.throttle_cleared"


def test_lock_grows_exponentially_up_to_the_cap_and_resets_after_quiet(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    key = auth.account_key(user["email"])

    def fail_once() -> None:
        seeded_conn.execute(
            'UPDATE "LoginThrottle" SET "lockedUntil" = now() - interval \'1 second\''
            ' WHERE key = %s AND "lockedUntil" IS NOT NULL',
            [key],
        )
        with pytest.raises(Unauthorized):
            do_login(seeded_conn, settings, user["email"], "wrong password here", ip=None)

    def lock_seconds() -> float:
        row = seeded_conn.execute(
            'SELECT EXTRACT(EPOCH FROM "lockedUntil" - "lastFailureAt")::float8, failures'
            ' FROM "LoginThrottle" WHERE key = %s',
            [key],
        ).fetchone()
        assert row is not None
        return float(row[0] or 0)

    for _ in range(4):
        fail_once()
    assert lock_seconds() == 0
    for expected in (1, 2, 4, 8):
        fail_once()
        assert lock_seconds() == pytest.approx(expected, abs=1e-3)
    seeded_conn.execute('UPDATE "LoginThrottle" SET failures = 40 WHERE key = %s', [key])
    fail_once()
    assert lock_seconds() == pytest.approx(15 * 60, abs=1e-3)
    # after 15 quiet minutes (no failure, no lock) the count starts over
    seeded_conn.execute(
        'UPDATE "LoginThrottle" SET "lastFailureAt" = now() - interval \'40 minutes\','
        " \"lockedUntil\" = now() - interval '16 minutes' WHERE key = %s",
        [key],
    )
    with pytest.raises(Unauthorized):
        do_login(seeded_conn, settings, user["email"], "wrong password here", ip=None)
    row = seeded_conn.execute(
        'SELECT failures, "lockedUntil" FROM "LoginThrottle" WHERE key = %s', [key]
    ).fetchone()
    assert row == (1, None)


def test_a_success_clears_the_account_key_but_not_the_address(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            do_login(seeded_conn, settings, user["email"], "wrong password here")
    do_login(seeded_conn, settings, user["email"])
    keys = dict(seeded_conn.execute('SELECT key, failures FROM "LoginThrottle"').fetchall())
    assert keys == {"ip:203.0.113.7": 3}


def test_the_address_is_throttled_across_accounts(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    users = [add_user(seeded_conn) for _ in range(auth.IP_MAX_FAILURES // 4)]
    for user in users:
        for _ in range(4):  # under the per-account threshold
            with pytest.raises(Unauthorized):
                do_login(seeded_conn, settings, user["email"], "wrong password here")
    fresh = add_user(seeded_conn)
    with pytest.raises(TooManyRequests):
        do_login(seeded_conn, settings, fresh["email"])
    do_login(seeded_conn, settings, fresh["email"], ip="192.0.2.1")  # another address is fine
    assert auth.clear_throttle(seeded_conn, Actor.operator(), ip="203.0.113.7") == 1
    do_login(seeded_conn, settings, fresh["email"])


def test_clear_throttle_needs_a_target(seeded_conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(Invalid):
        auth.clear_throttle(seeded_conn, Actor.operator())
    assert audit_rows(seeded_conn) == []


def test_weak_hashes_are_upgraded_on_login_and_the_new_session_survives(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    stronger = settings.model_copy(update={"bcrypt_rounds": 5})
    token, _, _ = do_login(seeded_conn, stronger, user["email"])
    stored = seeded_conn.execute('SELECT password FROM "User" WHERE id = %s', [user["id"]])
    hashed = stored.fetchone()[0]  # type: ignore[index]
    assert hashed.startswith("$2b$05$") and passwords.verify(PASSWORD, hashed)
    assert sessions.resolve(seeded_conn, token, idle_timeout=IDLE) is not None
    assert audit_rows(seeded_conn)[-1][3]["rehashed"] is True


def test_long_passwords_are_prehashed_not_truncated(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    long_pw = "a1b2c3d4e5" * 10  # 100 characters
    user = add_user(seeded_conn, password_hash=passwords.hash_password(long_pw, 4))
    do_login(seeded_conn, settings, user["email"], long_pw)
    first = "x" * 72 + "A"
    second = "x" * 72 + "B"
    assert passwords.verify(first, passwords.hash_password(first, 4))
    assert not passwords.verify(second, passwords.hash_password(first, 4))


def test_change_own_password_requires_the_current_one(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    old_token, _, _ = do_login(seeded_conn, settings, user["email"])
    actor = Actor.user(user["id"], "203.0.113.7", "pytest")
    before = seeded_conn.execute('SELECT password FROM "User" WHERE id = %s', [user["id"]])
    old_hash = before.fetchone()

    with pytest.raises(Invalid) as exc:
        auth.change_own_password(
            seeded_conn, actor, user["id"], "wrong password here", "a brand new secret", settings
        )
    assert exc.value.details == {"field": "current_password"}
    for bad in ("short", "x" * 129, "password1234", PASSWORD):
        with pytest.raises(Invalid):
            auth.change_own_password(seeded_conn, actor, user["id"], PASSWORD, bad, settings)
    after = seeded_conn.execute('SELECT password FROM "User" WHERE id = %s', [user["id"]])
    assert after.fetchone() == old_hash
    assert sessions.resolve(seeded_conn, old_token, idle_timeout=IDLE) is not None

    token, session = auth.change_own_password(
        seeded_conn, actor, user["id"], PASSWORD, "a brand new secret", settings
    )
    assert sessions.resolve(seeded_conn, old_token, idle_timeout=IDLE) is None
    principal = sessions.resolve(seeded_conn, token, idle_timeout=IDLE)
    assert principal is not None and principal.session_id == session["id"]
    last = audit_rows(seeded_conn)[-1]
    assert last[0] == "auth.password_changed" and last[3]["sessions_ended"] == 1
    with pytest.raises(Unauthorized):
        do_login(seeded_conn, settings, user["email"])
    do_login(seeded_conn, settings, user["email"], "a brand new secret")


def test_wrong_current_passwords_count_against_the_account(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    actor = Actor.user(user["id"])
    for _ in range(auth.MAX_FAILURES):
        with pytest.raises(Invalid):
            auth.change_own_password(
                seeded_conn, actor, user["id"], "wrong password here", "a new passphrase", settings
            )
    with pytest.raises(TooManyRequests):
        auth.change_own_password(
            seeded_conn, actor, user["id"], PASSWORD, "a new passphrase", settings
        )
    with pytest.raises(TooManyRequests):
        do_login(seeded_conn, settings, user["email"])
    actions = [r[0] for r in audit_rows(seeded_conn)]
    assert actions == ["auth.password_change_failed"] * 5 + ["auth.throttled"] * 2


def test_list_sessions_states_and_paging(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    made = [
        sessions.create(seeded_conn, user["id"], lifetime=timedelta(hours=1))[1]["id"]
        for _ in range(4)
    ]
    seeded_conn.execute(
        'UPDATE "Session" SET "createdAt" = now() - make_interval(mins => %s) WHERE id = %s',
        [1, made[3]],
    )
    seeded_conn.execute('UPDATE "Session" SET "revokedAt" = now() WHERE id = %s', [made[0]])
    seeded_conn.execute(
        'UPDATE "Session" SET "expiresAt" = now() - interval \'1 second\' WHERE id = %s',
        [made[1]],
    )
    live = auth.list_user_sessions(seeded_conn, user["id"], settings)
    assert {s["id"] for s in live} == {made[2], made[3]}
    everything = auth.list_user_sessions(seeded_conn, user["id"], settings, include_ended=True)
    states = {s["id"]: s["state"] for s in everything}
    assert states == {made[0]: "revoked", made[1]: "expired", made[2]: "active", made[3]: "active"}
    assert everything[-1]["id"] == made[3]  # oldest last

    first = auth.list_user_sessions(seeded_conn, user["id"], settings, include_ended=True, limit=3)
    cursor = auth.encode_cursor(first[-1]["createdAt"], first[-1]["id"])
    rest = auth.list_user_sessions(
        seeded_conn, user["id"], settings, include_ended=True, cursor=cursor
    )
    assert [s["id"] for s in first + rest] == [s["id"] for s in everything]
    with pytest.raises(Invalid):
        auth.list_user_sessions(seeded_conn, user["id"], settings, cursor="not-a-cursor")


def test_revoke_own_session_only(seeded_conn: psycopg.Connection[Any]) -> None:
    alice, bob = add_user(seeded_conn), add_user(seeded_conn)
    _, bobs = sessions.create(seeded_conn, bob["id"], lifetime=timedelta(hours=1))
    actor = Actor.user(alice["id"])
    with pytest.raises(NotFound):
        auth.revoke_session(seeded_conn, actor, bobs["id"], user_id=alice["id"])
    assert auth.revoke_session(seeded_conn, Actor.operator(), bobs["id"]) is True
    assert [r[0] for r in audit_rows(seeded_conn)] == ["auth.session_revoked"]
    sessions.create(seeded_conn, bob["id"], lifetime=timedelta(hours=1))
    sessions.create(seeded_conn, bob["id"], lifetime=timedelta(hours=1))
    assert auth.revoke_all_sessions(seeded_conn, Actor.operator(), bob["id"]) == 2
    assert audit_rows(seeded_conn)[-1][0] == "auth.sessions_revoked"


def test_me_lists_roles_and_where_each_permission_comes_from(
    seeded_conn: psycopg.Connection[Any],
) -> None:
    row = seeded_conn.execute(
        "SELECT id FROM \"User\" WHERE email = 'developer@alicesolutionsgroup.com'"
    ).fetchone()
    assert row is not None
    data = auth.me(seeded_conn, row[0])
    assert data["user"]["username"] == "developer" and "password" not in data["user"]
    assert data["roles"] == ["DEVELOPER"]
    assert data["permissions"] and all(r == ["DEVELOPER"] for r in data["permissions"].values())
    with pytest.raises(NotFound):
        auth.me(seeded_conn, "no-such-id")
