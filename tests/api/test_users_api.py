"""/api/users through the Brain, on a fresh seeded database per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.api.app import create_app
from smartstart.api.schemas import UserAccount
from smartstart.config import Settings
from smartstart.domain import passwords
from smartstart.domain.resolve import PUBLIC_COLUMNS, UserRow

Conn = psycopg.Connection[Any]
ADMIN_EMAIL = "admin@alicesolutionsgroup.com"
PW = "a perfectly fine passphrase"


@pytest.fixture
def api(seeded_settings: Settings) -> Iterator[TestClient]:
    """The Brain with bcrypt cost 4, so that creating users and passwords is fast."""
    fast = seeded_settings.model_copy(update={"bcrypt_rounds": 4})
    # An address, not TestClient's "testclient" (which the inet column stores as NULL).
    with TestClient(create_app(fast), client=("203.0.113.5", 50000)) as c:
        yield c


def admin_id(db: Conn) -> str:
    row = db.execute('SELECT id FROM "User" WHERE email = %s', [ADMIN_EMAIL]).fetchone()
    assert row is not None
    return str(row[0])


def audit_count(db: Conn) -> int:
    row = db.execute("SELECT count(*) FROM audit_log").fetchone()
    assert row is not None
    return int(row[0])


def new_user(api: TestClient, headers: dict[str, str], **kw: Any) -> dict[str, Any]:
    body = {"email": "new@example.com", "username": "newbie", "password": PW, **kw}
    resp = api.post("/api/users", json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


# -- access ------------------------------------------------------------------------


def test_member_is_refused_users_read_but_reads_and_edits_own_profile(
    api: TestClient, make_user: Any, db: Conn
) -> None:
    member = make_user("MEMBER")
    h = member["headers"]
    assert api.get("/api/users", headers=h).status_code == 403
    assert api.get(f"/api/users/{member['id']}", headers=h).status_code == 403
    assert api.post("/api/users/x/suspend", headers=h).status_code == 403
    me = api.get("/api/users/me", headers=h)
    assert me.status_code == 200 and me.json()["id"] == member["id"]
    assert "password" not in me.json()
    before = audit_count(db)
    patched = api.patch("/api/users/me", json={"name": "Me Myself", "username": "me_2"}, headers=h)
    assert patched.status_code == 200 and patched.json()["username"] == "me_2"
    assert audit_count(db) == before + 1
    # The profile endpoint cannot change anything else.
    for body in ({"role": "SUPER_ADMIN"}, {"status": "ACTIVE"}, {"xp": 10**6}, {"email": "a@b"}):
        assert api.patch("/api/users/me", json=body, headers=h).status_code == 422
    assert api.get("/api/users/me").status_code == 401


def test_taken_username_on_own_profile_is_409(api: TestClient, make_user: Any) -> None:
    member = make_user("MEMBER")
    resp = api.patch("/api/users/me", json={"username": "admin"}, headers=member["headers"])
    assert resp.status_code == 409
    assert resp.json()["error"]["details"]["field"] == "username"


# -- create / get ------------------------------------------------------------------


def test_get_one_user_authenticates_like_every_route(
    api: TestClient, make_user: Any, db: Conn, admin_headers: dict[str, str]
) -> None:
    # GET /api/users/{id} reads the user in the session lookup's own statement: the row
    # must still never reach a caller without a live session holding users:read.
    target = make_user("MEMBER")
    path = f"/api/users/{target['id']}"
    assert api.get(path).status_code == 401
    assert api.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    member = make_user("MEMBER")
    denied = api.get(path, headers=member["headers"])
    assert denied.status_code == 403 and target["email"] not in denied.text
    row = db.execute(
        "SELECT actor, \"resourceId\" FROM audit_log WHERE action = 'authz.denied'"
    ).fetchone()
    assert row == (member["id"], "users:read")
    moderator = make_user("MODERATOR")
    ok = api.get(path, headers=moderator["headers"])
    assert ok.status_code == 200 and ok.json()["email"] == target["email"]
    db.execute('UPDATE "Session" SET "revokedAt" = now() WHERE "userId" = %s', [moderator["id"]])
    assert api.get(path, headers=moderator["headers"]).status_code == 401
    assert api.get(path, headers=admin_headers).status_code == 200


def test_create_then_get_without_the_hash(
    api: TestClient, admin_headers: dict[str, str], db: Conn
) -> None:
    user = new_user(api, admin_headers, name="New Person", role="DEVELOPER")
    assert user["role"] == "DEVELOPER" and user["level"] == "OWLET"
    assert "password" not in user
    got = api.get(f"/api/users/{user['id']}", headers=admin_headers)
    assert got.status_code == 200 and got.json() == user
    row = db.execute('SELECT password FROM "User" WHERE id = %s', [user["id"]]).fetchone()
    assert row is not None and passwords.verify(PW, row[0])


def test_duplicates_are_409_naming_the_field(
    api: TestClient, admin_headers: dict[str, str]
) -> None:
    new_user(api, admin_headers)
    email = api.post(
        "/api/users",
        json={"email": "NEW@Example.COM", "username": "other", "password": PW},
        headers=admin_headers,
    )
    assert email.status_code == 409
    assert email.json()["error"] == {
        "code": "conflict",
        "message": "a user with this email already exists",
        "details": {"field": "email"},
    }
    username = api.post(
        "/api/users",
        json={"email": "other@example.com", "username": "newbie", "password": PW},
        headers=admin_headers,
    )
    assert username.status_code == 409
    assert username.json()["error"]["details"]["field"] == "username"


INVALID_CREATES: list[dict[str, Any]] = [
    {"email": "x@example.com", "username": "xx", "password": "password1234"},  # common
    {"email": "x@example.com", "username": "xx", "password": "short"},
    {"email": "x@example.com", "username": "xx", "password": PW, "isAdmin": True},  # unknown
    {"email": "x@example.com", "username": "xx", "password": PW, "role": "NOPE"},
    {"email": "x@example.com", "username": "xx", "password": PW, "status": "BANNED"},
    {"email": "no at sign", "username": "xx", "password": PW},
    {"email": "x@example.com", "username": "x" * 51, "password": PW},
    {"email": "x@example.com", "username": "xx", "password": PW, "name": "a\x00b"},
    {"email": "x@example.com", "username": "xx"},
    {"email": 5, "username": "xx", "password": PW},
]


def test_invalid_create_is_422(api: TestClient, admin_headers: dict[str, str], db: Conn) -> None:
    before = audit_count(db)
    for body in INVALID_CREATES:
        resp = api.post("/api/users", json=body, headers=admin_headers)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["error"]["code"] == "invalid"
    assert audit_count(db) == before


def test_malformed_json_is_400(api: TestClient, admin_headers: dict[str, str]) -> None:
    resp = api.post(
        "/api/users",
        content=b'{"email": ',
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    assert resp.status_code == 400


def test_unknown_or_odd_ids_are_404(api: TestClient, admin_headers: dict[str, str]) -> None:
    for bad in ["no-such-id", "%00", "x" * 300, "' OR '1'='1", "%25%5F"]:
        for method, suffix, body in (
            ("GET", "", None),
            ("PATCH", "", {"name": "x"}),
            ("POST", "/suspend", None),
            ("DELETE", "", None),
            ("POST", "/xp", {"amount": 1, "reason": "r"}),
            ("PUT", "/password", {"password": PW}),
        ):
            path = f"/api/users/{bad}{suffix}"
            resp = api.request(method, path, json=body, headers=admin_headers)
            # A NUL anywhere in a request is refused at the edge (api/edge.py).
            expected = (422, "invalid") if bad == "%00" else (404, "not_found")
            assert resp.status_code == expected[0], (method, path, resp.text)
            assert resp.json()["error"]["code"] == expected[1]


# -- list --------------------------------------------------------------------------


@pytest.fixture
def population(db: Conn) -> list[str]:
    """Twelve extra users with varied xp, status and roles; returns their ids."""
    ids = []
    for i in range(12):
        row = db.execute(
            'INSERT INTO "User" (email, username, name, password, role, status, xp)'
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            [
                f"Pop{i}@Example.com",
                f"pop{i}",
                f"Population Member {i}",
                "$2b$04$" + "a" * 53,
                "MODERATOR" if i % 4 == 0 else "MEMBER",
                "SUSPENDED" if i % 5 == 0 else "ACTIVE",
                i * 60,
            ],
        ).fetchone()
        assert row is not None
        ids.append(str(row[0]))
    return ids


def test_list_search_filter_sort(
    api: TestClient, admin_headers: dict[str, str], population: list[str]
) -> None:
    def ids(**params: Any) -> list[str]:
        resp = api.get("/api/users", params={"limit": 500, **params}, headers=admin_headers)
        assert resp.status_code == 200, resp.text
        return [u["id"] for u in resp.json()["items"]]

    assert set(ids(q="population member")) == set(population)
    short = api.get("/api/users", params={"q": "p"}, headers=admin_headers)
    assert short.status_code == 422
    assert short.json()["error"]["message"] == "search needs at least 2 characters"
    assert short.json()["error"]["details"] == {"field": "q", "min_length": 2}
    assert ids(q="pop1@EXAMPLE") == [population[1]]
    assert set(ids(role="MODERATOR")) == {population[0], population[4], population[8]}
    assert set(ids(status="SUSPENDED")) == {population[0], population[5], population[10]}
    assert set(ids(level="NIGHT_OWL")) == {population[i] for i in range(9, 12)}  # 540..660
    assert ids(sort="xp", order="desc")[0] == population[11]
    usernames = [
        u["username"]
        for u in api.get(
            "/api/users", params={"sort": "username", "order": "asc"}, headers=admin_headers
        ).json()["items"]
    ]
    assert usernames == sorted(usernames)


def test_cursor_walks_all_pages_without_duplicates(
    api: TestClient, admin_headers: dict[str, str], population: list[str], db: Conn
) -> None:
    total = db.execute('SELECT count(*) FROM "User"').fetchone()
    assert total is not None
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 5, "sort": "xp", "order": "asc"}
    for _ in range(10):
        page = api.get("/api/users", params=params, headers=admin_headers).json()
        seen.extend(u["id"] for u in page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert len(seen) == len(set(seen)) == total[0] == len(population) + 2


def test_sql_metacharacters_are_harmless(
    api: TestClient, admin_headers: dict[str, str], population: list[str], db: Conn
) -> None:
    for params in (
        {"q": "%"},
        {"q": "_"},
        {"q": "\\"},
        {"q": "' OR 1=1 --"},
        {"q": '\'); DROP TABLE "User"; --'},
        {"q": "\x00"},
        {"role": "' OR '1'='1"},
    ):
        resp = api.get("/api/users", params=params, headers=admin_headers)
        assert resp.status_code in (200, 422), resp.text
        if resp.status_code == 200:
            assert resp.json()["items"] == [], params
    assert db.execute('SELECT count(*) FROM "User"').fetchone() == (len(population) + 2,)


def test_bad_list_parameters_are_422_not_500(
    api: TestClient, admin_headers: dict[str, str]
) -> None:
    for params in (
        {"sort": "password"},
        {"sort": "xp; DROP TABLE audit_log"},
        {"order": "up"},
        {"limit": 0},
        {"limit": 501},
        {"limit": "many"},
        {"status": "GONE"},
        {"level": "EAGLE"},
        {"cursor": "garbage!"},
        {"cursor": "x" * 2000},
    ):
        resp = api.get("/api/users", params=params, headers=admin_headers)
        assert resp.status_code == 422, (params, resp.text)
    # Unknown query parameters are ignored, as HTTP usually does.
    assert api.get("/api/users", params={"x": "1"}, headers=admin_headers).status_code == 200


def test_a_cursor_for_another_sort_is_422(
    api: TestClient, admin_headers: dict[str, str], population: list[str]
) -> None:
    page = api.get("/api/users", params={"limit": 1, "sort": "xp"}, headers=admin_headers).json()
    resp = api.get(
        "/api/users",
        params={"limit": 1, "sort": "email", "cursor": page["next_cursor"]},
        headers=admin_headers,
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["details"]["field"] == "cursor"


# -- status, sessions and the last SUPER_ADMIN ---------------------------------------


def test_suspend_revokes_sessions_and_activate_lets_them_back(
    api: TestClient, admin_headers: dict[str, str], make_user: Any
) -> None:
    member = make_user("MEMBER")
    assert api.get("/api/users/me", headers=member["headers"]).status_code == 200
    resp = api.post(f"/api/users/{member['id']}/suspend", headers=admin_headers)
    assert resp.status_code == 200 and resp.json()["status"] == "SUSPENDED"
    assert api.get("/api/users/me", headers=member["headers"]).status_code == 401
    resp = api.post(f"/api/users/{member['id']}/activate", headers=admin_headers)
    assert resp.json()["status"] == "ACTIVE"
    # Revoked stays revoked: activation does not bring old sessions back.
    assert api.get("/api/users/me", headers=member["headers"]).status_code == 401


def test_password_reset_revokes_sessions(
    api: TestClient, admin_headers: dict[str, str], make_user: Any, db: Conn
) -> None:
    member = make_user("MEMBER")
    common = api.put(
        f"/api/users/{member['id']}/password",
        json={"password": "temppassword"},
        headers=admin_headers,
    )
    assert common.status_code == 422
    assert api.get("/api/users/me", headers=member["headers"]).status_code == 200
    resp = api.put(
        f"/api/users/{member['id']}/password", json={"password": PW}, headers=admin_headers
    )
    assert resp.status_code == 204 and resp.content == b""
    assert api.get("/api/users/me", headers=member["headers"]).status_code == 401
    row = db.execute('SELECT password FROM "User" WHERE id = %s', [member["id"]]).fetchone()
    assert row is not None and passwords.verify(PW, row[0])


def test_last_super_admin_cannot_be_suspended_deleted_or_demoted_until_another_exists(
    api: TestClient, admin_headers: dict[str, str], make_user: Any, db: Conn
) -> None:
    aid = admin_id(db)
    before = audit_count(db)
    for method, suffix, body in (
        ("POST", "/suspend", None),
        ("POST", "/deactivate", None),
        ("DELETE", "", None),
        ("PATCH", "", {"role": "ADMIN"}),
        ("PATCH", "", {"status": "SUSPENDED"}),
    ):
        resp = api.request(method, f"/api/users/{aid}{suffix}", json=body, headers=admin_headers)
        assert resp.status_code == 409, (method, suffix, resp.text)
        assert resp.json()["error"]["details"]["reason"] == "last_super_admin"
    assert audit_count(db) == before
    other = make_user("SUPER_ADMIN")
    resp = api.patch(f"/api/users/{aid}", json={"role": "ADMIN"}, headers=other["headers"])
    assert resp.status_code == 200 and resp.json()["role"] == "ADMIN"
    # Now `other` is the last one: they cannot suspend themselves either.
    resp = api.post(f"/api/users/{other['id']}/suspend", headers=other["headers"])
    assert resp.status_code == 409


def test_no_escalation_through_user_management(
    api: TestClient, admin_headers: dict[str, str], make_user: Any, db: Conn
) -> None:
    admin = make_user("ADMIN")
    h = admin["headers"]
    member = make_user("MEMBER")
    create = api.post(
        "/api/users",
        json={
            "email": "boss@example.com",
            "username": "boss",
            "password": PW,
            "role": "SUPER_ADMIN",
        },
        headers=h,
    )
    assert create.status_code == 403
    promote = api.patch(f"/api/users/{member['id']}", json={"role": "SUPER_ADMIN"}, headers=h)
    assert promote.status_code == 403
    hijack = api.put(f"/api/users/{admin_id(db)}/password", json={"password": PW}, headers=h)
    assert hijack.status_code == 403
    assert hijack.json()["error"]["details"]["reason"] == "outranked"
    assert (
        api.patch(f"/api/users/{admin['id']}", json={"role": "SUPER_ADMIN"}, headers=h).status_code
        == 403
    )
    # What an ADMIN holds, they may hand out.
    ok = api.patch(f"/api/users/{member['id']}", json={"role": "MODERATOR"}, headers=h)
    assert ok.status_code == 200


def test_moderator_without_users_delete_gets_403(api: TestClient, make_user: Any) -> None:
    moderator = make_user("MODERATOR")
    member = make_user("MEMBER")
    resp = api.delete(f"/api/users/{member['id']}", headers=moderator["headers"])
    assert resp.status_code == 403
    assert resp.json()["error"]["details"] == {"permission": "users:delete", "reason": "missing"}


# -- XP and reputation -----------------------------------------------------------------


def test_xp_and_reputation(api: TestClient, admin_headers: dict[str, str], make_user: Any) -> None:
    uid = make_user("MEMBER")["id"]

    def post(suffix: str, body: Any) -> Any:
        return api.post(f"/api/users/{uid}/{suffix}", json=body, headers=admin_headers)

    def put(suffix: str, body: Any) -> Any:
        return api.put(f"/api/users/{uid}/{suffix}", json=body, headers=admin_headers)

    r = post("xp", {"amount": 150, "reason": "welcome bonus"})
    assert r.status_code == 200 and (r.json()["xp"], r.json()["level"]) == (150, "FLEDGLING")
    r = post("xp", {"amount": -151, "reason": "too much"})
    assert r.status_code == 422 and r.json()["error"]["details"]["xp"] == 150
    for bad in (
        {"amount": 1},  # no reason
        {"amount": 1, "reason": ""},
        {"amount": True, "reason": "bool"},
        {"amount": "1", "reason": "string"},
        {"amount": 1.5, "reason": "float"},
        {"amount": 2**40, "reason": "huge"},
        {"amount": 1, "reason": "r", "level": "WISE_OWL"},
    ):
        assert post("xp", bad).status_code == 422, bad
    r = put("xp", {"xp": 1000})
    assert (r.json()["xp"], r.json()["level"]) == (1000, "WISE_OWL")
    assert put("xp", {"xp": -1}).status_code == 422
    assert put("xp", {"xp": 5, "extra": 1}).status_code == 422
    r = post("reputation", {"amount": -3, "reason": "spam"})
    assert r.status_code == 200 and r.json()["reputation"] == -3
    r = put("reputation", {"reputation": 10, "reason": "appeal"})
    assert r.json()["reputation"] == 10


# -- audit: one row per write endpoint, before/after, never a hash ----------------------

WRITES: list[tuple[str, str, dict[str, Any] | None, int, str]] = [
    ("POST", "", {"email": "a1@example.com", "username": "a1", "password": PW}, 201, "create"),
    ("PATCH", "/{id}", {"name": "Renamed", "role": "MODERATOR"}, 200, "update"),
    ("POST", "/{id}/suspend", None, 200, "suspend"),
    ("POST", "/{id}/activate", None, 200, "activate"),
    ("POST", "/{id}/deactivate", None, 200, "deactivate"),
    ("PUT", "/{id}/password", {"password": PW}, 204, "set_password"),
    ("POST", "/{id}/xp", {"amount": 5, "reason": "r"}, 200, "add_xp"),
    ("PUT", "/{id}/xp", {"xp": 7}, 200, "set_xp"),
    ("POST", "/{id}/reputation", {"amount": 5, "reason": "r"}, 200, "add_reputation"),
    ("PUT", "/{id}/reputation", {"reputation": 7}, 200, "set_reputation"),
    ("DELETE", "/{id}", None, 204, "delete"),
    ("PATCH", "/me", {"name": "Me"}, 200, "update_profile"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "verb"), WRITES)
def test_every_write_leaves_exactly_one_audit_row(
    api: TestClient,
    admin_headers: dict[str, str],
    make_user: Any,
    db: Conn,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    verb: str,
) -> None:
    target = make_user("MEMBER")
    headers = target["headers"] if path == "/me" else admin_headers
    before = audit_count(db)
    resp = api.request(
        method, "/api/users" + path.replace("{id}", target["id"]), json=body, headers=headers
    )
    assert resp.status_code == status, resp.text
    assert audit_count(db) == before + 1
    row = db.execute(
        'SELECT actor, action, resource, "resourceId", details, ip FROM audit_log'
        " ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert row is not None
    actor, action, resource, resource_id, details, ip = row
    assert action == f"users.{verb}" and resource == "user"
    assert actor == (target["id"] if path == "/me" else admin_id(db))
    assert resource_id == (resp.json()["id"] if verb == "create" else target["id"])
    assert ip == "203.0.113.5"
    if verb != "create":
        assert "before" in details
    if verb != "delete":
        assert "after" in details
    text = json.dumps(details)
    assert "$2b$" not in text and "$2a$" not in text and PW not in text
    assert "password" not in details.get("before", {})
    assert "password" not in details.get("after", {})


# -- lastActive --------------------------------------------------------------------


def test_last_active_is_written_at_most_once_a_minute(
    api: TestClient, make_user: Any, db: Conn
) -> None:
    member = make_user("MEMBER")
    old = "2000-01-01T00:00:00+00:00"
    db.execute('UPDATE "User" SET "lastActive" = %s WHERE id = %s', [old, member["id"]])
    assert api.get("/api/users/me", headers=member["headers"]).status_code == 200
    first = db.execute('SELECT "lastActive" FROM "User" WHERE id = %s', [member["id"]]).fetchone()
    assert first is not None and first[0].year > 2000
    # Put it back: a second request within the minute must not write it again.
    db.execute('UPDATE "User" SET "lastActive" = %s WHERE id = %s', [old, member["id"]])
    assert api.get("/api/users/me", headers=member["headers"]).status_code == 200
    second = db.execute('SELECT "lastActive" FROM "User" WHERE id = %s', [member["id"]]).fetchone()
    assert second is not None and second[0].year == 2000


def test_openapi_documents_every_users_route(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    paths = {p for p in spec["paths"] if p.startswith("/api/users")}
    assert {
        "/api/users",
        "/api/users/me",
        "/api/users/{user_id}",
        "/api/users/{user_id}/suspend",
        "/api/users/{user_id}/activate",
        "/api/users/{user_id}/deactivate",
        "/api/users/{user_id}/password",
        "/api/users/{user_id}/xp",
        "/api/users/{user_id}/reputation",
    } <= paths
    user_schema = spec["components"]["schemas"]["UserAccount"]
    assert "password" not in user_schema["properties"]


def test_guessable_passwords_are_422_naming_what_is_wrong(
    api: TestClient, admin_headers: dict[str, str], db: Conn
) -> None:
    weak = {
        " " * 12: "whitespace",
        "aaaaaaaaaaaa": "repeated",
        "123456789012": "sequence",
        "passwordpassword": "repeated",
        "qwertyuiopas": "keyboard",
        "abcabcabcabc": "repeated",
    }
    for password, reason in weak.items():
        body = {"email": "x@example.com", "username": "xx", "password": password}
        resp = api.post("/api/users", json=body, headers=admin_headers)
        assert resp.status_code == 422, (password, resp.text)
        error = resp.json()["error"]
        assert error["details"] == {"field": "password", "reason": reason}, password
    assert db.execute('SELECT count(*) FROM "User"').fetchone() == (2,)


def test_the_api_schema_and_the_domain_row_name_the_same_fields() -> None:
    # Kept apart on purpose (the API's contract vs the domain's row); they must agree,
    # or the hot read (the row serialised as is) would break its documented shape.
    assert list(UserAccount.model_fields) == list(UserRow.__annotations__)
    assert tuple(UserRow.__annotations__) == PUBLIC_COLUMNS
