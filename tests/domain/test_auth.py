"""smartstart.domain.auth on a real seeded database."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import bcrypt
import psycopg
import pytest

from smartstart.config import Settings
from smartstart.domain import auth, passwords, sessions, throttle
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


def sign_in(
    settings: Settings,
    identifier: str,
    password: str = PASSWORD,
    ip: str | None = "203.0.113.7",
    device: str | None = None,
) -> auth.SignedIn:
    """auth.login, each of its transactions on a connection of its own (as the API's)."""
    return auth.login(
        lambda: psycopg.connect(settings.url_for()),
        identifier,
        password,
        ip=ip,
        user_agent="pytest",
        settings=settings,
        device=device,
    )


def do_login(
    conn: psycopg.Connection[Any],
    settings: Settings,
    identifier: str,
    password: str = PASSWORD,
    ip: str | None = "203.0.113.7",
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    signed = sign_in(settings, identifier, password, ip)
    return signed.token, signed.session, signed.user


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


def test_a_refused_login_is_recorded_although_it_raises(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    with pytest.raises(Unauthorized):
        do_login(seeded_conn, settings, user["email"], "not the password at all")
    assert [r[0] for r in audit_rows(seeded_conn)] == ["auth.login_failed"]
    row = seeded_conn.execute(
        'SELECT failures FROM "LoginThrottle" WHERE key = %s',
        [throttle.account_key(user["email"])],
    ).fetchone()
    assert row == (1,)


def test_no_connection_is_open_while_the_password_is_hashed(
    seeded_conn: psycopg.Connection[Any], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = add_user(seeded_conn)
    open_now, seen = [0], []

    @contextmanager
    def transaction() -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(settings.url_for()) as conn:
            open_now[0] += 1
            try:
                yield conn
            finally:
                open_now[0] -= 1

    checkpw = bcrypt.checkpw

    def watched(password: bytes, hashed: bytes) -> bool:
        seen.append(open_now[0])
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", watched)
    for identifier, password in ((user["email"], "a wrong password"), ("ghost", PASSWORD)):
        with pytest.raises(Unauthorized):
            auth.login(
                transaction, identifier, password, ip=None, user_agent=None, settings=settings
            )
    auth.login(transaction, user["email"], PASSWORD, ip=None, user_agent=None, settings=settings)
    assert seen == [0, 0, 0]


def test_failures_from_many_addresses_lock_the_account_for_unknown_devices(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    for i in range(throttle.ACCOUNT_MAX_FAILURES):
        # email and username count against the same account
        who = user["username"] if i % 2 else user["email"]
        with pytest.raises(Unauthorized):
            do_login(seeded_conn, settings, who, "not the password at all", ip=f"198.51.100.{i}")
    with pytest.raises(TooManyRequests) as exc:
        do_login(seeded_conn, settings, user["username"])
    assert exc.value.retry_after >= 1
    actions = [r[0] for r in audit_rows(seeded_conn)]
    assert actions == ["auth.login_failed"] * throttle.ACCOUNT_MAX_FAILURES + ["auth.throttled"]

    cleared = auth.clear_throttle(seeded_conn, Actor.operator(), email=user["email"].upper())
    assert cleared == 1 + throttle.ACCOUNT_MAX_FAILURES  # the account and its pairs
    do_login(seeded_conn, settings, user["email"])
    assert audit_rows(seeded_conn)[-2][0] == "auth.throttle_cleared"


def test_lock_grows_exponentially_up_to_the_cap_and_resets_after_quiet(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    key = throttle.account_key(user["email"])

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

    for _ in range(throttle.ACCOUNT_MAX_FAILURES - 1):
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
    users = [add_user(seeded_conn) for _ in range(throttle.IP_MAX_FAILURES // 4)]
    for user in users:
        for _ in range(4):  # under the per-account threshold
            with pytest.raises(Unauthorized):
                do_login(seeded_conn, settings, user["email"], "wrong password here")
    fresh = add_user(seeded_conn)
    with pytest.raises(TooManyRequests):
        do_login(seeded_conn, settings, fresh["email"])
    do_login(seeded_conn, settings, fresh["email"], ip="192.0.2.1")  # another address is fine
    # the address and its pairs with each account
    assert auth.clear_throttle(seeded_conn, Actor.operator(), ip="203.0.113.7") == 1 + len(users)
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
    ours = auth.apart(seeded_conn)
    before = seeded_conn.execute('SELECT password FROM "User" WHERE id = %s', [user["id"]])
    old_hash = before.fetchone()

    with pytest.raises(Invalid) as exc:
        auth.change_own_password(
            seeded_conn,
            actor,
            user["id"],
            "wrong password here",
            "a brand new secret",
            settings,
            refusals=auth.apart(seeded_conn),
        )
    assert exc.value.details == {"field": "current_password"}
    for bad in ("short", "x" * 129, "password1234", PASSWORD):
        with pytest.raises(Invalid):
            auth.change_own_password(
                seeded_conn, actor, user["id"], PASSWORD, bad, settings, refusals=ours
            )
    after = seeded_conn.execute('SELECT password FROM "User" WHERE id = %s', [user["id"]])
    assert after.fetchone() == old_hash
    assert sessions.resolve(seeded_conn, old_token, idle_timeout=IDLE) is not None

    token, session = auth.change_own_password(
        seeded_conn, actor, user["id"], PASSWORD, "a brand new secret", settings, refusals=ours
    )
    assert sessions.resolve(seeded_conn, old_token, idle_timeout=IDLE) is None
    principal = sessions.resolve(seeded_conn, token, idle_timeout=IDLE)
    assert principal is not None and principal.session_id == session["id"]
    last = audit_rows(seeded_conn)[-1]
    assert last[0] == "auth.password_changed" and last[3]["sessions_ended"] == 1
    with pytest.raises(Unauthorized):
        do_login(seeded_conn, settings, user["email"])
    do_login(seeded_conn, settings, user["email"], "a brand new secret")


def test_wrong_current_passwords_lock_password_changes_not_sign_ins(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    actor = Actor.user(user["id"])
    for _ in range(throttle.PASSWORD_MAX_FAILURES):
        with pytest.raises(Invalid):
            auth.change_own_password(
                seeded_conn,
                actor,
                user["id"],
                "wrong password here",
                "a new passphrase",
                settings,
                refusals=auth.apart(seeded_conn),
            )
    with pytest.raises(TooManyRequests):
        auth.change_own_password(
            seeded_conn,
            actor,
            user["id"],
            PASSWORD,
            "a new passphrase",
            settings,
            refusals=auth.apart(seeded_conn),
        )
    do_login(seeded_conn, settings, user["email"])  # a stolen session cannot lock the owner out
    actions = [r[0] for r in audit_rows(seeded_conn)]
    assert actions == ["auth.password_change_failed"] * 5 + ["auth.throttled", "auth.login"]


def test_a_refused_password_change_commits_nothing_of_the_callers_transaction(
    seeded_settings: Settings, settings: Settings
) -> None:
    """The domain never commits: the refusal is recorded apart, the caller's work rolls back."""
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as setup:
        user = add_user(setup)
    with psycopg.connect(seeded_settings.url_for()) as conn:
        conn.execute('UPDATE "User" SET name = %s WHERE id = %s', ["uncommitted", user["id"]])
        with pytest.raises(Invalid):
            auth.change_own_password(
                conn,
                Actor.user(user["id"]),
                user["id"],
                "wrong password here",
                "a new passphrase",
                settings,
                refusals=auth.apart(conn),
            )
        conn.rollback()
        row = conn.execute('SELECT name FROM "User" WHERE id = %s', [user["id"]]).fetchone()
        assert row is not None and row[0] != "uncommitted"
        actions = [r[0] for r in audit_rows(conn)]
        assert actions == ["auth.password_change_failed"]
        key = throttle.password_key(user["id"])
        failures = conn.execute(
            'SELECT failures FROM "LoginThrottle" WHERE key = %s', [key]
        ).fetchone()
        assert failures == (1,)


def test_revoke_plans_say_what_revoking_would_do_and_write_nothing(
    seeded_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    user = add_user(seeded_conn)
    do_login(seeded_conn, settings, user["email"])
    do_login(seeded_conn, settings, user["email"])
    every = auth.plan_revoke_all(seeded_conn, user["email"].lower(), settings)
    assert every.user["id"] == user["id"] and every.live == 2
    sid = auth.list_user_sessions(seeded_conn, user["id"], settings).items[0]["id"]
    one = auth.plan_revoke_session(seeded_conn, sid)
    assert one.live and one.session["email"] == user["email"]
    assert auth.revoke_session(seeded_conn, Actor.operator(), sid)
    assert not auth.plan_revoke_session(seeded_conn, sid).live
    assert auth.plan_revoke_all(seeded_conn, user["id"], settings).live == 1


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
    live = auth.list_user_sessions(seeded_conn, user["id"], settings).items
    assert {s["id"] for s in live} == {made[2], made[3]}
    everything = auth.list_user_sessions(
        seeded_conn, user["id"], settings, include_ended=True
    ).items
    states = {s["id"]: s["state"] for s in everything}
    assert states == {made[0]: "revoked", made[1]: "expired", made[2]: "active", made[3]: "active"}
    assert everything[-1]["id"] == made[3]  # oldest last

    first = auth.list_user_sessions(seeded_conn, user["id"], settings, include_ended=True, limit=3)
    rest = auth.list_user_sessions(
        seeded_conn, user["id"], settings, include_ended=True, cursor=first.next_cursor
    )
    assert rest.next_cursor is None
    assert [s["id"] for s in first.items + rest.items] == [s["id"] for s in everything]
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
