"""/api/auth: login, cookies and CSRF, session lifecycle, password change, throttling."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.api.app import create_app
from smartstart.config import Settings
from smartstart.domain import passwords, throttle
from tests.conftest import TEST_ADMIN_PASSWORD

PASSWORD = "correct horse battery staple"  # what make_user's users have (cost 4)
WRONG = "not the right password"
ADMIN = "admin@alicesolutionsgroup.com"
LOGIN = "/api/auth/login"


@pytest.fixture
def fast(seeded_settings: Settings) -> Iterator[TestClient]:
    """The Brain with cost-4 hashing, so make_user's users sign in without a rehash."""
    settings = seeded_settings.model_copy(update={"bcrypt_rounds": 4})
    with TestClient(create_app(settings)) as c:
        yield c


def login(client: TestClient, identifier: str, password: str = PASSWORD) -> Any:
    return client.post(LOGIN, json={"identifier": identifier, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def count_audit(db: psycopg.Connection[Any], action: str = "auth.%") -> int:
    row = db.execute("SELECT count(*) FROM audit_log WHERE action LIKE %s", [action]).fetchone()
    return int(row[0]) if row else 0


# -- login -------------------------------------------------------------------------


def test_login_by_email_any_case_or_username(
    fast: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    user = make_user("MEMBER", email="Mixed.Case@Example.com")
    for body in (
        {"identifier": "mixed.case@example.COM", "password": PASSWORD},
        {"email": "MIXED.CASE@example.com", "password": PASSWORD},
        {"username": user["username"], "password": PASSWORD},
    ):
        resp = fast.post(LOGIN, json=body)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        assert data["token_type"] == "bearer" and data["user"]["id"] == user["id"]
        assert "password" not in data["user"] and data["csrf_token"]
        assert resp.headers["cache-control"] == "no-store"
        me = fast.get("/api/auth/me", headers=bearer(data["token"]))
        assert me.status_code == 200 and me.json()["user"]["email"] == "Mixed.Case@Example.com"
    assert count_audit(db, "auth.login") == 3


def test_login_sets_an_httponly_lax_cookie_and_a_readable_csrf_cookie(
    fast: TestClient, make_user: Any
) -> None:
    resp = login(fast, make_user()["email"])
    cookies = {c.split("=", 1)[0]: c.lower() for c in resp.headers.get_list("set-cookie")}
    session, csrf = cookies["smartstart_session"], cookies["smartstart_csrf"]
    assert "httponly" in session and "samesite=lax" in session and "max-age=86400" in session
    assert "httponly" not in csrf and "samesite=lax" in csrf
    assert "secure" not in session
    assert resp.cookies["smartstart_session"] == resp.json()["token"]
    assert resp.cookies["smartstart_csrf"] == resp.json()["csrf_token"]


def test_cookies_are_secure_when_configured(seeded_settings: Settings, make_user: Any) -> None:
    settings = seeded_settings.model_copy(update={"bcrypt_rounds": 4, "cookie_secure": True})
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        resp = login(client, make_user()["email"])
    assert resp.status_code == 200
    assert all("; secure" in c.lower() for c in resp.headers.get_list("set-cookie"))


def test_wrong_password_and_unknown_user_get_the_same_answer(
    fast: TestClient, make_user: Any
) -> None:
    wrong = login(fast, make_user()["email"], WRONG)
    unknown = login(fast, "nobody@example.com", WRONG)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["message"] == "invalid email/username or password"
    assert "set-cookie" not in wrong.headers


def test_wrong_password_and_unknown_user_take_similar_time(
    seeded_settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A known user's real cost-12 hash and an unknown user's dummy check cost the same."""
    # At the suite's cost 4 a check is ~1 ms, within a loaded machine's noise: the
    # product's cost makes the hash the difference this test looks for.
    settings = seeded_settings.model_copy(update={"bcrypt_rounds": 12})
    db.execute(
        'UPDATE "User" SET password = %s WHERE email = %s',
        [passwords.hash_password(TEST_ADMIN_PASSWORD, 12), ADMIN],
    )
    with TestClient(create_app(settings)) as client:
        _similar_times(client)


def _similar_times(client: TestClient) -> None:
    def timed(identifier: str) -> float:
        start = time.perf_counter()
        assert login(client, identifier, WRONG).status_code == 401
        return time.perf_counter() - start

    timed(ADMIN)  # warm-up: first-request overheads are not the difference we look for
    pairs = [(timed(ADMIN), timed("nobody@example.com")) for _ in range(3)]  # interleaved
    known = statistics.median(k for k, _ in pairs)
    unknown = statistics.median(u for _, u in pairs)
    assert 0.5 <= known / unknown <= 2.0, (known, unknown)


def test_non_active_users_cannot_sign_in(fast: TestClient, make_user: Any) -> None:
    for status in ("SUSPENDED", "INACTIVE", "PENDING"):
        user = make_user(status=status)
        wrong = login(fast, user["email"], WRONG)
        assert wrong.status_code == 401  # the status is not revealed without the password
        resp = login(fast, user["email"])
        assert resp.status_code == 403
        assert resp.json()["error"]["details"] == {"reason": "account_inactive", "status": status}


@pytest.mark.parametrize(
    "body",
    [
        {"password": PASSWORD},
        {"email": "a@example.com", "username": "a", "password": PASSWORD},
        {"identifier": "a@example.com"},
        {"identifier": "a@example.com", "password": PASSWORD, "remember": True},
        {"identifier": "", "password": PASSWORD},
        {"identifier": 5, "password": PASSWORD},
        {"identifier": "a" * 400, "password": PASSWORD},
    ],
)
def test_malformed_logins_are_422(fast: TestClient, body: dict[str, Any]) -> None:
    resp = fast.post(LOGIN, json=body)
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid"


def test_malformed_json_is_400(fast: TestClient) -> None:
    resp = fast.post(LOGIN, content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400


# -- session lifecycle -------------------------------------------------------------


def test_expired_and_idle_sessions_are_401(
    fast: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    expired, idle, fine = make_user(), make_user(), make_user()
    db.execute(
        'UPDATE "Session" SET "expiresAt" = now() - interval \'1 second\' WHERE "userId" = %s',
        [expired["id"]],
    )
    db.execute(
        'UPDATE "Session" SET "lastSeenAt" = now() - interval \'3 hours\' WHERE "userId" = %s',
        [idle["id"]],
    )
    assert fast.get("/api/auth/me", headers=expired["headers"]).status_code == 401
    assert fast.get("/api/auth/me", headers=idle["headers"]).status_code == 401
    assert fast.get("/api/auth/me", headers=fine["headers"]).status_code == 200


def test_logout_kills_the_token_and_clears_cookies(
    fast: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    token = login(fast, make_user()["email"]).json()["token"]
    fast.cookies.clear()
    before = count_audit(db)
    resp = fast.post("/api/auth/logout", headers=bearer(token))
    assert resp.status_code == 204
    cleared = " ".join(resp.headers.get_list("set-cookie")).lower()
    assert 'smartstart_session=""' in cleared and "max-age=0" in cleared
    assert count_audit(db) == before + 1
    assert fast.get("/api/auth/me", headers=bearer(token)).status_code == 401
    assert fast.post("/api/auth/logout", headers=bearer(token)).status_code == 401


def test_suspending_a_user_by_raw_sql_ends_their_sessions(
    fast: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    user = make_user()
    assert fast.get("/api/auth/me", headers=user["headers"]).status_code == 200
    db.execute("UPDATE \"User\" SET status = 'SUSPENDED' WHERE id = %s", [user["id"]])
    db.execute("UPDATE \"User\" SET status = 'ACTIVE' WHERE id = %s", [user["id"]])
    assert fast.get("/api/auth/me", headers=user["headers"]).status_code == 401


def test_me_returns_roles_and_permission_sources(
    fast: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    user = make_user("DEVELOPER")
    db.execute(
        'INSERT INTO "UserRole" ("userId", "roleId") SELECT %s, id FROM "Role" WHERE name = %s',
        [user["id"], "MODERATOR"],
    )
    body = fast.get("/api/auth/me", headers=user["headers"]).json()
    assert body["roles"] == ["DEVELOPER", "MODERATOR"]
    assert body["session"]["via"] == "bearer"
    sources = {p["name"]: p["roles"] for p in body["permissions"]}
    assert sources["users:read"] == ["DEVELOPER", "MODERATOR"]
    assert sources["sessions:manage"] == ["MODERATOR"]
    assert sources["db:read"] == ["DEVELOPER"]
    assert fast.get("/api/auth/me").status_code == 401


def test_own_sessions_are_listed_with_the_current_one_marked(
    fast: TestClient, make_user: Any
) -> None:
    user = make_user()
    other = login(fast, user["email"]).json()
    fast.cookies.clear()
    page = fast.get("/api/auth/sessions", headers=user["headers"]).json()
    assert len(page["items"]) == 2 and page["next_cursor"] is None
    current = [s for s in page["items"] if s["current"]]
    assert len(current) == 1 and current[0]["id"] != other["session_id"]
    assert all(s["state"] == "active" for s in page["items"])

    first = fast.get("/api/auth/sessions", params={"limit": 1}, headers=user["headers"]).json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    rest = fast.get(
        "/api/auth/sessions",
        params={"limit": 1, "cursor": first["next_cursor"]},
        headers=user["headers"],
    ).json()
    assert {s["id"] for s in first["items"] + rest["items"]} == {s["id"] for s in page["items"]}
    bad = fast.get("/api/auth/sessions", params={"cursor": "'; DROP"}, headers=user["headers"])
    assert bad.status_code == 422


def test_deleting_a_session_works_for_ones_own_only(
    fast: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    alice, bob = make_user(), make_user()
    bobs = fast.get("/api/auth/sessions", headers=bob["headers"]).json()["items"][0]["id"]
    assert fast.delete(f"/api/auth/sessions/{bobs}", headers=alice["headers"]).status_code == 404
    assert fast.delete("/api/auth/sessions/nope", headers=alice["headers"]).status_code == 404
    assert fast.get("/api/auth/me", headers=bob["headers"]).status_code == 200

    second = login(fast, alice["email"]).json()
    fast.cookies.clear()
    before = count_audit(db)
    resp = fast.delete(f"/api/auth/sessions/{second['session_id']}", headers=alice["headers"])
    assert resp.status_code == 204
    assert count_audit(db) == before + 1
    assert fast.get("/api/auth/me", headers=bearer(second["token"])).status_code == 401
    assert fast.get("/api/auth/me", headers=alice["headers"]).status_code == 200


# -- password change ---------------------------------------------------------------


def test_changing_ones_password_ends_other_sessions_and_returns_a_new_one(
    fast: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    user = make_user()
    other = login(fast, user["email"]).json()["token"]
    fast.cookies.clear()
    before = count_audit(db)
    resp = fast.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "a much better passphrase"},
        headers=user["headers"],
    )
    assert resp.status_code == 200, resp.text
    assert count_audit(db) == before + 1
    new = resp.json()["token"]
    assert resp.cookies["smartstart_session"] == new
    assert fast.get("/api/auth/me", headers=bearer(new)).status_code == 200
    for old in (other, user["token"]):
        assert fast.get("/api/auth/me", headers=bearer(old)).status_code == 401
    assert login(fast, user["email"]).status_code == 401
    assert login(fast, user["email"], "a much better passphrase").status_code == 200


@pytest.mark.parametrize(
    ("current", "new", "field"),
    [
        (WRONG, "a much better passphrase", "current_password"),
        (PASSWORD, "too short", "new_password"),
        (PASSWORD, "x" * 129, "new_password"),
        (PASSWORD, "password1234", "new_password"),  # on the common-passwords list
    ],
)
def test_a_refused_password_change_changes_nothing(
    fast: TestClient,
    make_user: Any,
    db: psycopg.Connection[Any],
    current: str,
    new: str,
    field: str,
) -> None:
    user = make_user()
    hashed = db.execute('SELECT password FROM "User" WHERE id = %s', [user["id"]]).fetchone()
    resp = fast.post(
        "/api/auth/password",
        json={"current_password": current, "new_password": new},
        headers=user["headers"],
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["details"] == {"field": field}
    assert db.execute('SELECT password FROM "User" WHERE id = %s', [user["id"]]).fetchone() == (
        hashed
    )
    assert fast.get("/api/auth/me", headers=user["headers"]).status_code == 200


def test_a_100_character_password_works_and_bytes_past_72_count(
    fast: TestClient, make_user: Any
) -> None:
    user = make_user()
    # 100 characters that follow no pattern (the policy refuses "0123456789" * 10).
    long_pw = (
        "Seven wild geese flew over the frozen harbour at dawn, "
        "calling to the keeper who waved from his door"
    )
    resp = fast.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": long_pw},
        headers=user["headers"],
    )
    assert resp.status_code == 200
    assert login(fast, user["email"], long_pw).status_code == 200
    assert login(fast, user["email"], long_pw[:-1] + "X").status_code == 401

    other = make_user()
    pw73 = long_pw[:72] + "1"
    fast.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": pw73},
        headers=other["headers"],
    )
    assert login(fast, other["email"], pw73).status_code == 200
    assert login(fast, other["email"], long_pw[:72] + "2").status_code == 401


# -- throttling --------------------------------------------------------------------


def test_five_failures_lock_the_account_until_an_admin_clears_it(
    fast: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    user = make_user()
    for _ in range(5):
        assert login(fast, user["email"], WRONG).status_code == 401
    for password in (WRONG, PASSWORD):  # even the right password waits
        resp = login(fast, user["email"], password)
        assert resp.status_code == 429
        assert int(resp.headers["retry-after"]) >= 1
        assert resp.json()["error"]["details"]["retry_after"] >= 1

    member = make_user("MEMBER")
    denied = fast.delete(
        "/api/auth/throttle", params={"email": user["email"]}, headers=member["headers"]
    )
    assert denied.status_code == 403
    admin = make_user("SUPER_ADMIN")
    assert fast.delete("/api/auth/throttle", headers=admin["headers"]).status_code == 422
    before = count_audit(db)
    resp = fast.delete(
        "/api/auth/throttle", params={"email": user["email"].upper()}, headers=admin["headers"]
    )
    assert resp.status_code == 204
    assert count_audit(db) == before + 1
    assert login(fast, user["email"]).status_code == 200


def test_the_client_address_is_throttled_across_accounts(fast: TestClient, make_user: Any) -> None:
    users = [make_user() for _ in range(throttle.IP_MAX_FAILURES // 4)]
    for user in users:
        for _ in range(4):  # below the per-account threshold
            assert login(fast, user["email"], WRONG).status_code == 401
    fresh = make_user()
    assert login(fast, fresh["email"]).status_code == 429
    admin = make_user("SUPER_ADMIN")
    resp = fast.delete("/api/auth/throttle", params={"ip": "testclient"}, headers=admin["headers"])
    assert resp.status_code == 204
    assert login(fast, fresh["email"]).status_code == 200


# -- CSRF --------------------------------------------------------------------------


def test_cookie_authenticated_writes_need_the_csrf_header(fast: TestClient, make_user: Any) -> None:
    user = make_user()
    signed_in = login(fast, user["email"]).json()  # the client now holds both cookies
    csrf = signed_in["csrf_token"]
    assert fast.get("/api/auth/me").json()["session"]["via"] == "cookie"  # reads need none

    other = fast.get("/api/auth/sessions").json()["items"]
    target = next(s["id"] for s in other if not s["current"])
    assert fast.delete(f"/api/auth/sessions/{target}").status_code == 403
    wrong = fast.delete(f"/api/auth/sessions/{target}", headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    assert fast.post("/api/auth/logout").status_code == 403
    assert fast.get("/api/auth/me").status_code == 200  # still signed in

    ok = fast.delete(f"/api/auth/sessions/{target}", headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 204
    assert fast.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert fast.get("/api/auth/me").status_code == 401


def test_bearer_writes_need_no_csrf_header(fast: TestClient, make_user: Any) -> None:
    user = make_user()
    token = login(fast, user["email"]).json()["token"]
    fast.cookies.clear()
    assert fast.post("/api/auth/logout", headers=bearer(token)).status_code == 204


# -- audit and secrets -------------------------------------------------------------


def test_each_attempt_leaves_one_audit_row_and_no_secret_anywhere(
    fast: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    user = make_user()
    expected = []
    for identifier, password, action in (
        (user["email"], WRONG, "auth.login_failed"),
        ("ghost@example.com", WRONG, "auth.login_failed"),
        (user["username"], PASSWORD, "auth.login"),
    ):
        before = db.execute("SELECT coalesce(max(id), 0) FROM audit_log").fetchone()
        resp = login(fast, identifier, password)
        rows = db.execute(
            "SELECT action, details->>'identifier' FROM audit_log WHERE id > %s",
            [before[0] if before else 0],
        ).fetchall()
        assert rows == [(action, identifier)], resp.text
        expected.append(resp)
    token = expected[-1].json()["token"]

    for secret in (PASSWORD, WRONG, token, TEST_ADMIN_PASSWORD):
        hits = db.execute(
            "SELECT count(*) FROM audit_log WHERE details::text LIKE %s", [f"%{secret}%"]
        ).fetchone()
        assert hits == (0,), secret
    stored = db.execute(
        'SELECT "tokenHash" FROM "Session" WHERE id = %s', [expected[-1].json()["session_id"]]
    ).fetchone()
    assert stored is not None and stored[0] != token and len(stored[0]) == 64
    tables = db.execute(
        "SELECT quote_ident(table_name) FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    ).fetchall()
    for (table,) in tables:
        found = db.execute(
            f"SELECT count(*) FROM {table} t WHERE t::text LIKE %s", [f"%{token}%"]
        ).fetchone()
        assert found == (0,), table
