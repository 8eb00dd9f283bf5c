"""/api/roles, /api/permissions, grants, /api/users/{id}/roles|permissions, /api/authz/check,
/api/rbac/matrix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.db import seed

Conn = psycopg.Connection[Any]
ADMIN_EMAIL = "admin@alicesolutionsgroup.com"
DEV_EMAIL = "developer@alicesolutionsgroup.com"


def audit_rows(db: Conn) -> list[tuple[str, str | None]]:
    return [
        (r[0], r[1]) for r in db.execute('SELECT action, "resourceId" FROM audit_log ORDER BY id')
    ]


def user_id(db: Conn, email: str) -> str:
    row = db.execute('SELECT id FROM "User" WHERE email = %s', [email]).fetchone()
    assert row is not None
    return str(row[0])


def error(resp: Any) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


@pytest.fixture
def writes(db: Conn) -> Callable[[Any], Any]:
    """Call a write and assert it left exactly one audit row (returns the response)."""

    def run(call: Any) -> Any:
        before = len(audit_rows(db))
        resp = call()
        rows = audit_rows(db)
        assert len(rows) == before + 1, rows[before:]
        return resp

    return run


# -- access ------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/api/roles"),
    ("POST", "/api/roles"),
    ("GET", "/api/roles/ADMIN"),
    ("PATCH", "/api/roles/ADMIN"),
    ("DELETE", "/api/roles/GUEST"),
    ("GET", "/api/permissions"),
    ("POST", "/api/permissions"),
    ("PATCH", "/api/permissions/users:read"),
    ("DELETE", "/api/permissions/users:read"),
    ("PUT", "/api/roles/MEMBER/permissions/users:read"),
    ("DELETE", "/api/roles/MEMBER/permissions/users:read"),
    ("GET", "/api/users/x/roles"),
    ("PUT", "/api/users/x/roles/MEMBER"),
    ("DELETE", "/api/users/x/roles/MEMBER"),
    ("GET", "/api/users/x/permissions"),
    ("GET", "/api/authz/check?user=x&permission=users:read"),
    ("GET", "/api/rbac/matrix"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_needs_a_session_and_a_permission(
    client: TestClient, make_user: Any, method: str, path: str
) -> None:
    assert client.request(method, path).status_code == 401
    guest = make_user("GUEST")
    resp = client.request(method, path, headers=guest["headers"], json={})
    assert resp.status_code == 403
    assert error(resp)["details"]["permission"] in {
        "roles:read",
        "roles:manage",
        "rbac:manage",
        "permissions:read",
        "users:read",
    }


def test_moderator_reads_roles_but_cannot_manage(client: TestClient, make_user: Any) -> None:
    mod = make_user("MODERATOR")
    assert client.get("/api/roles", headers=mod["headers"]).status_code == 200
    assert client.get("/api/permissions", headers=mod["headers"]).status_code == 403
    resp = client.post("/api/roles", json={"name": "EDITOR"}, headers=mod["headers"])
    assert error(resp)["details"] == {"permission": "roles:manage", "reason": "missing"}


# -- roles -------------------------------------------------------------------------------


def test_list_roles_pages(client: TestClient, admin_headers: dict[str, str]) -> None:
    page = client.get("/api/roles", params={"limit": 4}, headers=admin_headers).json()
    assert [r["name"] for r in page["items"]] == sorted(seed.ROLES)[:4]
    rest = client.get(
        "/api/roles", params={"cursor": page["next_cursor"]}, headers=admin_headers
    ).json()
    assert [r["name"] for r in rest["items"]] == sorted(seed.ROLES)[4:]
    assert rest["next_cursor"] is None
    for bad in ({"cursor": "%%%"}, {"cursor": "AA"}, {"limit": 0}, {"limit": 501}):
        resp = client.get("/api/roles", params=bad, headers=admin_headers)
        assert resp.status_code == 422, bad


def test_role_crud(
    client: TestClient, admin_headers: dict[str, str], db: Conn, writes: Any
) -> None:
    created = writes(
        lambda: client.post(
            "/api/roles", json={"name": "EDITOR", "description": "Edits"}, headers=admin_headers
        )
    )
    assert created.status_code == 201
    role = created.json()
    assert (role["name"], role["permissions"], role["users"]) == ("EDITOR", [], 0)
    assert client.get(f"/api/roles/{role['id']}", headers=admin_headers).json() == role
    assert client.get("/api/roles/EDITOR", headers=admin_headers).json() == role
    dup = client.post("/api/roles", json={"name": "EDITOR"}, headers=admin_headers)
    assert dup.status_code == 409 and error(dup)["details"]["field"] == "name"

    patched = writes(
        lambda: client.patch(
            f"/api/roles/{role['id']}", json={"name": "WRITER"}, headers=admin_headers
        )
    )
    assert patched.status_code == 200
    assert patched.json()["name"] == "WRITER" and patched.json()["description"] == "Edits"
    cleared = writes(
        lambda: client.patch("/api/roles/WRITER", json={"description": None}, headers=admin_headers)
    )
    assert cleared.json()["description"] is None

    deleted = writes(lambda: client.delete("/api/roles/WRITER", headers=admin_headers))
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get("/api/roles/WRITER", headers=admin_headers).status_code == 404
    actions = [a for a, _ in audit_rows(db)]
    assert actions == ["roles.create", "roles.update", "roles.update", "roles.delete"]


def test_role_input_errors_are_4xx(client: TestClient, admin_headers: dict[str, str]) -> None:
    h = admin_headers
    for body in (
        {"name": "editor"},
        {"name": "E"},
        {"name": "A" * 51},
        {"name": "EDITOR", "extra": 1},
        {"name": 5},
        {},
        {"name": "EDITOR", "description": "x" * 501},
    ):
        resp = client.post("/api/roles", json=body, headers=h)
        assert resp.status_code == 422, body
        assert error(resp)["code"] == "invalid"
    malformed = client.post(
        "/api/roles", content=b"{nope", headers={**h, "content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert client.get("/api/roles/NOPE", headers=h).status_code == 404
    assert client.get('/api/roles/\'; DROP TABLE "Role"--', headers=h).status_code == 404
    assert client.get("/api/roles/" + "x" * 400, headers=h).status_code == 422
    assert client.patch("/api/roles/NOPE", json={}, headers=h).status_code == 404
    assert client.delete("/api/roles/NOPE", headers=h).status_code == 404
    taken = client.patch("/api/roles/GUEST", json={"name": "ADMIN"}, headers=h)
    assert taken.status_code == 409 and error(taken)["details"]["field"] == "name"
    system = client.patch("/api/roles/SUPER_ADMIN", json={"name": "ROOT"}, headers=h)
    assert system.status_code == 409


def test_deleting_a_primary_role_is_409_with_a_clear_message(
    client: TestClient, admin_headers: dict[str, str], db: Conn
) -> None:
    resp = client.delete("/api/roles/DEVELOPER", headers=admin_headers)
    assert resp.status_code == 409
    err = error(resp)
    assert err["details"] == {"reason": "role_in_use", "users": 1}
    assert "primary role of 1 user(s); change their role first" in err["message"]
    assert client.get("/api/roles/DEVELOPER", headers=admin_headers).status_code == 200
    assert audit_rows(db) == []


def test_rename_follows_to_users(
    client: TestClient, admin_headers: dict[str, str], db: Conn
) -> None:
    resp = client.patch("/api/roles/DEVELOPER", json={"name": "ENGINEER"}, headers=admin_headers)
    assert resp.status_code == 200
    row = db.execute('SELECT role FROM "User" WHERE email = %s', [DEV_EMAIL]).fetchone()
    assert row == ("ENGINEER",)


# -- permissions -----------------------------------------------------------------------


def test_permission_crud(
    client: TestClient, admin_headers: dict[str, str], db: Conn, writes: Any
) -> None:
    h = admin_headers
    created = writes(
        lambda: client.post(
            "/api/permissions",
            json={"name": "reports:read", "resource": "reports", "action": "read"},
            headers=h,
        )
    )
    assert created.status_code == 201
    perm = created.json()
    assert perm["roles"] == ["SUPER_ADMIN"] and perm["resource"] == "reports"
    dup = client.post("/api/permissions", json={"name": "reports:read"}, headers=h)
    assert dup.status_code == 409 and error(dup)["details"]["field"] == "name"
    mismatch = client.post(
        "/api/permissions", json={"name": "reports:write", "action": "read"}, headers=h
    )
    assert mismatch.status_code == 422
    for bad in ("reports", "Reports:read", "a:b:c", "x:"):
        assert client.post("/api/permissions", json={"name": bad}, headers=h).status_code == 422

    renamed = writes(
        lambda: client.patch(
            f"/api/permissions/{perm['id']}", json={"name": "reports:view"}, headers=h
        )
    )
    assert renamed.status_code == 200 and renamed.json()["action"] == "view"
    builtin = client.patch("/api/permissions/users:read", json={"name": "users:see"}, headers=h)
    assert builtin.status_code == 409
    assert client.delete("/api/permissions/users:read", headers=h).status_code == 409
    assert client.patch("/api/permissions/nope:nope", json={}, headers=h).status_code == 404

    listing = client.get("/api/permissions", params={"limit": 500}, headers=h).json()
    assert [p["name"] for p in listing["items"]] == sorted([*seed.PERMISSIONS, "reports:view"])

    deleted = writes(lambda: client.delete("/api/permissions/reports:view", headers=h))
    assert deleted.status_code == 204
    assert client.delete("/api/permissions/reports:view", headers=h).status_code == 404


# -- grants ------------------------------------------------------------------------------


def test_grant_and_revoke(
    client: TestClient, admin_headers: dict[str, str], db: Conn, writes: Any
) -> None:
    h = admin_headers
    url = "/api/roles/MEMBER/permissions/users:read"
    granted = writes(lambda: client.put(url, headers=h))
    assert granted.status_code == 200 and "users:read" in granted.json()["permissions"]
    again = writes(lambda: client.put(url, headers=h))
    assert again.status_code == 200 and again.json() == granted.json()
    assert writes(lambda: client.delete(url, headers=h)).status_code == 204
    assert writes(lambda: client.delete(url, headers=h)).status_code == 204
    role = client.get("/api/roles/MEMBER", headers=h).json()
    assert "users:read" not in role["permissions"]
    assert client.put("/api/roles/MEMBER/permissions/nope:nope", headers=h).status_code == 404
    assert client.put("/api/roles/NOPE/permissions/users:read", headers=h).status_code == 404
    sa = client.delete("/api/roles/SUPER_ADMIN/permissions/users:read", headers=h)
    assert sa.status_code == 409


def test_an_admin_cannot_hand_out_what_they_lack(
    client: TestClient, make_user: Any, db: Conn
) -> None:
    admin = make_user("ADMIN")
    target = make_user("MEMBER")
    for role in ("ADMIN", "MEMBER"):
        resp = client.put(f"/api/roles/{role}/permissions/db:restore", headers=admin["headers"])
        assert resp.status_code == 403
        assert error(resp)["details"]["missing"] == ["db:restore"]
    resp = client.put(f"/api/users/{target['id']}/roles/SUPER_ADMIN", headers=admin["headers"])
    assert resp.status_code == 403
    assert set(error(resp)["details"]["missing"]) == {"db:restore", "db:admin", "roles:manage"}
    # nor to themselves
    resp = client.put(f"/api/users/{admin['id']}/roles/SUPER_ADMIN", headers=admin["headers"])
    assert resp.status_code == 403
    granted = db.execute(
        'SELECT count(*) FROM "RolePermission" rp JOIN "Permission" p ON p.id = rp."permissionId"'
        " WHERE p.name = 'db:restore'"
    ).fetchone()
    assert granted == (1,)  # SUPER_ADMIN's only
    denials = [r for r in audit_rows(db) if r[0] == "authz.denied"]
    # the permission the operation needed, and why it was refused
    assert len(denials) == 4 and denials[0] == ("authz.denied", "rbac:manage")
    reasons = db.execute(
        "SELECT details->>'reason', details->'missing' FROM audit_log"
        " WHERE action = 'authz.denied' ORDER BY id LIMIT 1"
    ).fetchone()
    assert reasons == ("grant_beyond_own", ["db:restore"])
    assert len(audit_rows(db)) == 4
    # what they hold they may hand out
    ok = client.put(f"/api/users/{target['id']}/roles/MODERATOR", headers=admin["headers"])
    assert ok.status_code == 200


# -- assignments -------------------------------------------------------------------------


def test_assign_and_unassign(
    client: TestClient, admin_headers: dict[str, str], make_user: Any, db: Conn, writes: Any
) -> None:
    h = admin_headers
    user = make_user("MEMBER")
    url = f"/api/users/{user['id']}/roles/MODERATOR"
    assigned = writes(lambda: client.put(url, headers=h))
    assert assigned.status_code == 200
    body = assigned.json()
    assert [(r["name"], r["primary"]) for r in body["roles"]] == [
        ("MEMBER", True),
        ("MODERATOR", False),
    ]
    assert body["roles"][1]["assignedBy"] == user_id(db, ADMIN_EMAIL)
    assert writes(lambda: client.put(url, headers=h)).json()["roles"] == body["roles"]
    listed = client.get(f"/api/users/{user['email']}/roles", headers=h).json()
    assert listed == body
    perms = client.get(f"/api/users/{user['id']}/permissions", headers=h).json()
    by_name = {p["name"]: p["roles"] for p in perms["permissions"]}
    assert by_name["journey:read"] == ["MEMBER", "MODERATOR"]
    assert by_name["sessions:manage"] == ["MODERATOR"]
    assert writes(lambda: client.delete(url, headers=h)).status_code == 204
    assert writes(lambda: client.delete(url, headers=h)).status_code == 204
    roles = client.get(f"/api/users/{user['id']}/roles", headers=h).json()["roles"]
    assert [r["name"] for r in roles] == ["MEMBER"]


def test_assignment_errors(
    client: TestClient, admin_headers: dict[str, str], make_user: Any, db: Conn
) -> None:
    h = admin_headers
    user = make_user("MEMBER")
    primary = client.delete(f"/api/users/{user['id']}/roles/MEMBER", headers=h)
    assert primary.status_code == 409
    assert "change the primary role instead" in error(primary)["message"]
    assert client.put("/api/users/no-such-user/roles/MEMBER", headers=h).status_code == 404
    assert client.put(f"/api/users/{user['id']}/roles/NOPE", headers=h).status_code == 404
    assert client.get("/api/users/nobody@example.com/roles", headers=h).status_code == 404
    assert client.get("/api/users/nobody/permissions", headers=h).status_code == 404
    assert audit_rows(db) == []


def test_the_last_super_admin_is_protected(
    client: TestClient, admin_headers: dict[str, str], make_user: Any, db: Conn
) -> None:
    h = admin_headers
    second = make_user("MEMBER")
    assert client.put(f"/api/users/{second['id']}/roles/SUPER_ADMIN", headers=h).status_code == 200
    # the seeded admin is the primary holder: removing theirs means changing the primary role
    admin_id = user_id(db, ADMIN_EMAIL)
    resp = client.delete(f"/api/users/{admin_id}/roles/SUPER_ADMIN", headers=second["headers"])
    assert resp.status_code == 409
    db.execute("UPDATE \"User\" SET status = 'INACTIVE' WHERE id = %s", [admin_id])
    resp = client.delete(f"/api/users/{second['id']}/roles/SUPER_ADMIN", headers=second["headers"])
    assert resp.status_code == 409
    assert error(resp)["details"]["reason"] == "last_super_admin"
    roles = db.execute(
        'SELECT r.name FROM "UserRole" ur JOIN "Role" r ON r.id = ur."roleId"'
        ' WHERE ur."userId" = %s ORDER BY r.name',
        [second["id"]],
    ).fetchall()
    assert roles == [("MEMBER",), ("SUPER_ADMIN",)]


# -- check and matrix --------------------------------------------------------------------


def test_authz_check(client: TestClient, make_user: Any) -> None:
    mod = make_user("MODERATOR")  # users:read
    h = mod["headers"]
    yes = client.get(
        "/api/authz/check", params={"user": DEV_EMAIL, "permission": "db:backup"}, headers=h
    ).json()
    assert yes["allowed"] is True and yes["via_roles"] is None
    assert yes["user"]["status"] == "ACTIVE"
    explained = client.get(
        "/api/authz/check",
        params={"user": DEV_EMAIL, "permission": "db:backup", "explain": "true"},
        headers=h,
    ).json()
    assert explained["via_roles"] == ["DEVELOPER"]
    assert explained["reason"] == "granted by role DEVELOPER"
    no = client.get(
        "/api/authz/check", params={"user": mod["id"], "permission": "db:restore"}, headers=h
    ).json()
    assert no == {
        "allowed": False,
        "permission": "db:restore",
        "user": {"id": mod["id"], "status": "ACTIVE"},
        "via_roles": None,
        "reason": "none of the user's roles grants it",
    }
    unknown = client.get(
        "/api/authz/check", params={"user": mod["id"], "permission": "x:y"}, headers=h
    ).json()
    assert unknown["allowed"] is False and "no permission named" in unknown["reason"]
    for params, status in (
        ({"user": "nobody@example.com", "permission": "users:read"}, 404),
        ({"user": "no-id", "permission": "users:read"}, 404),
        ({"user": mod["id"], "permission": "users"}, 422),
        ({"user": mod["id"], "permission": "users:read' OR 1=1--"}, 422),
        ({"user": mod["id"]}, 422),
        ({"user": "", "permission": "users:read"}, 422),
    ):
        assert client.get("/api/authz/check", params=params, headers=h).status_code == status


def test_matrix(client: TestClient, make_user: Any) -> None:
    dev = make_user("DEVELOPER")
    m = client.get("/api/rbac/matrix", headers=dev["headers"]).json()
    assert m["roles"] == sorted(seed.ROLES)
    assert m["permissions"] == sorted(seed.PERMISSIONS)
    assert set(m["grants"]["MODERATOR"]) == set(seed.ROLE_PERMISSIONS["MODERATOR"])


# -- invalidation within one process -----------------------------------------------------

GRANT_SQL = """
INSERT INTO "RolePermission" ("roleId", "permissionId")
VALUES (
    (SELECT id FROM "Role" WHERE name = 'MEMBER'),
    (SELECT id FROM "Permission" WHERE name = 'roles:read')
)
"""
REVOKE_SQL = """
DELETE FROM "RolePermission"
WHERE "roleId" = (SELECT id FROM "Role" WHERE name = 'MEMBER')
  AND "permissionId" = (SELECT id FROM "Permission" WHERE name = 'roles:read')
"""


def test_raw_sql_takes_effect_on_the_next_request(
    client: TestClient, make_user: Any, seeded_settings: Any
) -> None:
    member = make_user("MEMBER")
    for _ in range(3):  # warm the cache with the old answer
        assert client.get("/api/rbac/matrix", headers=member["headers"]).status_code == 403
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as other:
        other.execute(GRANT_SQL)
    assert client.get("/api/rbac/matrix", headers=member["headers"]).status_code == 200
    assert client.get("/api/rbac/matrix", headers=member["headers"]).status_code == 200
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as other:
        other.execute(REVOKE_SQL)
    assert client.get("/api/rbac/matrix", headers=member["headers"]).status_code == 403


def test_the_check_endpoint_follows_raw_sql(
    client: TestClient, make_user: Any, seeded_settings: Any
) -> None:
    asker = make_user("MODERATOR")
    member = make_user("MEMBER")
    params = {"user": member["id"], "permission": "roles:read"}

    def allowed() -> bool:
        resp = client.get("/api/authz/check", params=params, headers=asker["headers"])
        assert resp.status_code == 200
        return bool(resp.json()["allowed"])

    assert not allowed() and not allowed()
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as other:
        other.execute(GRANT_SQL)
    assert allowed()
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as other:
        other.execute(REVOKE_SQL)
    assert not allowed()
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as other:
        # a role assignment the guide's way
        other.execute(
            'INSERT INTO "UserRole" ("userId", "roleId", "assignedAt")'
            " VALUES (%s, (SELECT id FROM \"Role\" WHERE name = 'DEVELOPER'), NOW())",
            [member["id"]],
        )
    assert allowed()
