"""smartstart.domain.rbac on a fresh seeded database (autocommit connection)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from smartstart.config import Settings
from smartstart.db import seed
from smartstart.domain import rbac
from smartstart.domain.audit import Actor
from smartstart.domain.errors import Conflict, Forbidden, Invalid, NotFound
from smartstart.domain.permissions import PermissionCache, rbac_version
from smartstart.domain.resolve import resolve_user

Conn = psycopg.Connection[Any]
CLI = Actor.operator()

ADMIN_EMAIL = "admin@alicesolutionsgroup.com"
DEV_EMAIL = "developer@alicesolutionsgroup.com"
PW = "$2b$04$" + "a" * 53
ADMIN_PERMS = frozenset(seed.ROLE_PERMISSIONS["ADMIN"])
AS_ADMIN = Actor(label="test-admin", permissions=ADMIN_PERMS)  # no "User" row


def audit_count(conn: Conn, action: str | None = None) -> int:
    if action is None:
        row = conn.execute("SELECT count(*) FROM audit_log").fetchone()
    else:
        row = conn.execute("SELECT count(*) FROM audit_log WHERE action = %s", [action]).fetchone()
    assert row is not None
    return int(row[0])


def add_user(conn: Conn, email: str, role: str = "MEMBER", status: str = "ACTIVE") -> str:
    row = conn.execute(
        'INSERT INTO "User" (email, username, password, role, status)'
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        [email, email.split("@")[0], PW, role, status],
    ).fetchone()
    assert row is not None
    return str(row[0])


def role_names(conn: Conn, user_id: str) -> set[str]:
    return {r["name"] for r in rbac.user_roles(conn, user_id)["roles"]}


# -- roles ---------------------------------------------------------------------------


def test_list_roles_pages_by_name(seeded_conn: Conn, seeded_settings: Settings) -> None:
    whole = rbac.list_roles(seeded_conn, settings=seeded_settings)
    names = [r["name"] for r in whole.items]
    assert names == sorted(seed.ROLES) and whole.next_cursor is None
    first = rbac.list_roles(seeded_conn, settings=seeded_settings, limit=2)
    rest = rbac.list_roles(seeded_conn, settings=seeded_settings, cursor=first.next_cursor)
    assert [r["name"] for r in first.items + rest.items] == names
    admin = next(r for r in whole.items if r["name"] == "SUPER_ADMIN")
    assert admin["permissions"] == sorted(seed.PERMISSIONS) and admin["users"] == 1


def test_create_role_validates_and_audits(seeded_conn: Conn) -> None:
    role = rbac.create_role(seeded_conn, CLI, name="CONTENT_EDITOR", description="Edits")
    assert role["name"] == "CONTENT_EDITOR" and role["permissions"] == [] and role["users"] == 0
    assert audit_count(seeded_conn, "roles.create") == 1
    with pytest.raises(Conflict) as dup:
        rbac.create_role(seeded_conn, CLI, name="CONTENT_EDITOR")
    assert dup.value.field == "name"
    for bad in ("editor", "X", "1ABC", "A" * 51, "BAD-NAME", "A\x00B"):
        with pytest.raises(Invalid):
            rbac.create_role(seeded_conn, CLI, name=bad)
    with pytest.raises(Invalid):
        rbac.create_role(seeded_conn, CLI, name="LONG_DESC", description="x" * 501)
    assert audit_count(seeded_conn, "roles.create") == 1


def test_get_role_by_id_or_name_and_not_found(seeded_conn: Conn) -> None:
    role = rbac.resolve_role(seeded_conn, "ADMIN")
    assert rbac.resolve_role(seeded_conn, role["id"])["name"] == "ADMIN"
    for ref in ("NOPE", "", "x" * 1000, "a\x00b", '\'; DROP TABLE "Role"; --'):
        with pytest.raises(NotFound):
            rbac.resolve_role(seeded_conn, ref)


def test_rename_cascades_to_primary_roles(seeded_conn: Conn) -> None:
    dev = resolve_user(seeded_conn, DEV_EMAIL)
    role = rbac.update_role(seeded_conn, CLI, "DEVELOPER", name="ENGINEER")
    assert role["name"] == "ENGINEER" and role["users"] == 1
    assert resolve_user(seeded_conn, DEV_EMAIL)["role"] == "ENGINEER"
    assert role_names(seeded_conn, dev["id"]) == {"ENGINEER"}
    perms = {p["name"]: p["roles"] for p in rbac.effective(seeded_conn, dev["id"])["permissions"]}
    assert perms["db:backup"] == ["ENGINEER"]
    row = seeded_conn.execute(
        "SELECT details FROM audit_log WHERE action = 'roles.update'"
    ).fetchone()
    assert row is not None
    assert row[0]["before"]["name"] == "DEVELOPER" and row[0]["after"]["name"] == "ENGINEER"


def test_rename_conflicts_and_system_roles(seeded_conn: Conn) -> None:
    with pytest.raises(Conflict) as taken:
        rbac.update_role(seeded_conn, CLI, "DEVELOPER", name="ADMIN")
    assert taken.value.field == "name"
    for system in ("SUPER_ADMIN", "MEMBER"):
        with pytest.raises(Conflict) as refused:
            rbac.update_role(seeded_conn, CLI, system, name="RENAMED")
        assert refused.value.details["reason"] == "system_role"
    described = rbac.update_role(seeded_conn, CLI, "MEMBER", description="Members")
    assert described["description"] == "Members" and described["name"] == "MEMBER"
    cleared = rbac.update_role(seeded_conn, CLI, "MEMBER", description=None)
    assert cleared["description"] is None
    assert audit_count(seeded_conn, "roles.update") == 2


def test_delete_role_in_use_system_and_unused(seeded_conn: Conn) -> None:
    with pytest.raises(Conflict) as in_use:
        rbac.delete_role(seeded_conn, CLI, "DEVELOPER")
    assert in_use.value.details == {"reason": "role_in_use", "users": 1}
    assert "primary role of 1 user" in in_use.value.message
    with pytest.raises(Conflict):
        rbac.delete_role(seeded_conn, CLI, "SUPER_ADMIN")
    # an additional assignment and grants go with the role
    rbac.assign(seeded_conn, CLI, DEV_EMAIL, "GUEST")
    deleted = rbac.delete_role(seeded_conn, CLI, "GUEST")
    assert deleted["permissions"] == ["journey:read"]
    with pytest.raises(NotFound):
        rbac.resolve_role(seeded_conn, "GUEST")
    assert role_names(seeded_conn, resolve_user(seeded_conn, DEV_EMAIL)["id"]) == {"DEVELOPER"}
    assert audit_count(seeded_conn, "roles.delete") == 1


# -- permissions -----------------------------------------------------------------------


def test_create_permission_grants_super_admin(seeded_conn: Conn) -> None:
    perm = rbac.create_permission(
        seeded_conn, CLI, name="reports:read", resource="reports", action="read"
    )
    assert (perm["resource"], perm["action"], perm["roles"]) == ("reports", "read", ["SUPER_ADMIN"])
    assert audit_count(seeded_conn, "permissions.create") == 1
    assert audit_count(seeded_conn) == 1
    with pytest.raises(Conflict) as dup:
        rbac.create_permission(seeded_conn, CLI, name="reports:read")
    assert dup.value.field == "name"
    with pytest.raises(Invalid):
        rbac.create_permission(seeded_conn, CLI, name="reports:write", resource="other")
    for bad in ("reports", "Reports:read", "a:b:c", ":read", "reports:", "rep orts:read"):
        with pytest.raises(Invalid):
            rbac.create_permission(seeded_conn, CLI, name=bad)


def test_update_and_delete_permission(seeded_conn: Conn) -> None:
    rbac.create_permission(seeded_conn, CLI, name="reports:read")
    renamed = rbac.update_permission(seeded_conn, CLI, "reports:read", name="reports:view")
    assert (renamed["name"], renamed["resource"], renamed["action"]) == (
        "reports:view",
        "reports",
        "view",
    )
    described = rbac.update_permission(seeded_conn, CLI, "users:read", description="Look")
    assert described["description"] == "Look"
    with pytest.raises(Conflict) as builtin:
        rbac.update_permission(seeded_conn, CLI, "users:read", name="users:look")
    assert builtin.value.details["reason"] == "builtin_permission"
    with pytest.raises(Conflict):
        rbac.update_permission(seeded_conn, CLI, "reports:view", name="users:read")
    with pytest.raises(Conflict):
        rbac.delete_permission(seeded_conn, CLI, "rbac:manage")
    deleted = rbac.delete_permission(seeded_conn, CLI, "reports:view")
    assert deleted["roles"] == ["SUPER_ADMIN"]
    with pytest.raises(NotFound):
        rbac.resolve_permission(seeded_conn, "reports:view")
    assert audit_count(seeded_conn, "permissions.update") == 2
    assert audit_count(seeded_conn, "permissions.delete") == 1


# -- grants ----------------------------------------------------------------------------


def test_grant_and_revoke_are_idempotent_and_audited(seeded_conn: Conn) -> None:
    role, changed = rbac.grant(seeded_conn, CLI, "MEMBER", "users:read")
    assert changed and "users:read" in role["permissions"]
    _, again = rbac.grant(seeded_conn, CLI, "MEMBER", "users:read")
    assert not again
    assert audit_count(seeded_conn, "rbac.grant") == 2
    role, changed = rbac.revoke(seeded_conn, CLI, "MEMBER", "users:read")
    assert changed and "users:read" not in role["permissions"]
    _, again = rbac.revoke(seeded_conn, CLI, "MEMBER", "users:read")
    assert not again
    rows = seeded_conn.execute(
        "SELECT details->>'changed' FROM audit_log WHERE action LIKE 'rbac.%' ORDER BY id"
    ).fetchall()
    assert [r[0] for r in rows] == ["true", "false", "true", "false"]
    with pytest.raises(NotFound):
        rbac.grant(seeded_conn, CLI, "MEMBER", "nope:nope")
    with pytest.raises(NotFound):
        rbac.grant(seeded_conn, CLI, "NOPE", "users:read")


def test_nobody_grants_what_they_lack(seeded_conn: Conn) -> None:
    with pytest.raises(Forbidden) as refused:
        rbac.grant(seeded_conn, AS_ADMIN, "ADMIN", "db:restore")
    assert refused.value.details["missing"] == ["db:restore"]
    with pytest.raises(Forbidden):
        rbac.revoke(seeded_conn, AS_ADMIN, "DEVELOPER", "db:restore")
    user = add_user(seeded_conn, "someone@example.com")
    with pytest.raises(Forbidden) as assign:
        rbac.assign(seeded_conn, AS_ADMIN, user, "SUPER_ADMIN")
    assert set(assign.value.details["missing"]) == {"db:restore", "db:admin", "roles:manage"}
    # each refusal is recorded (on a connection of its own), and nothing else
    assert audit_count(seeded_conn) == audit_count(seeded_conn, "authz.denied") == 3
    # what one holds, one may hand out
    rbac.assign(seeded_conn, AS_ADMIN, user, "MODERATOR")
    rbac.grant(seeded_conn, AS_ADMIN, "MEMBER", "users:read")


def test_super_admin_keeps_every_permission(seeded_conn: Conn) -> None:
    with pytest.raises(Conflict) as refused:
        rbac.revoke(seeded_conn, CLI, "SUPER_ADMIN", "users:read")
    assert refused.value.details["reason"] == "super_admin_holds_all"


def test_matrix_follows_the_seed(seeded_conn: Conn) -> None:
    m = rbac.matrix(seeded_conn)
    assert m["roles"] == sorted(seed.ROLES) and m["permissions"] == sorted(seed.PERMISSIONS)
    assert {r: set(p) for r, p in m["grants"].items()} == {
        r: set(p) for r, p in seed.ROLE_PERMISSIONS.items()
    }


# -- assignments -----------------------------------------------------------------------


def test_assign_and_unassign(seeded_conn: Conn) -> None:
    user = add_user(seeded_conn, "member@example.com")
    roles, changed = rbac.assign(seeded_conn, CLI, "MEMBER@example.com", "MODERATOR")
    assert changed and [r["name"] for r in roles["roles"]] == ["MEMBER", "MODERATOR"]
    assert roles["roles"][0]["primary"] and not roles["roles"][1]["primary"]
    _, again = rbac.assign(seeded_conn, CLI, user, "MODERATOR")
    assert not again
    _, primary = rbac.assign(seeded_conn, CLI, user, "MEMBER")
    assert not primary
    perms = {p["name"]: p["roles"] for p in rbac.effective(seeded_conn, user)["permissions"]}
    assert perms["journey:read"] == ["MEMBER", "MODERATOR"] and perms["users:write"] == [
        "MODERATOR"
    ]
    _, removed = rbac.unassign(seeded_conn, CLI, user, "MODERATOR")
    assert removed and role_names(seeded_conn, user) == {"MEMBER"}
    _, again = rbac.unassign(seeded_conn, CLI, user, "MODERATOR")
    assert not again
    assert audit_count(seeded_conn, "rbac.assign") == 3
    assert audit_count(seeded_conn, "rbac.unassign") == 2
    row = seeded_conn.execute(
        "SELECT details FROM audit_log WHERE action = 'rbac.unassign' ORDER BY id LIMIT 1"
    ).fetchone()
    assert row is not None
    assert row[0]["before"]["roles"] == ["MEMBER", "MODERATOR"]
    assert row[0]["after"]["roles"] == ["MEMBER"]


def test_unassigning_the_primary_role_is_refused(seeded_conn: Conn) -> None:
    user = add_user(seeded_conn, "member@example.com")
    with pytest.raises(Conflict) as refused:
        rbac.unassign(seeded_conn, CLI, user, "MEMBER")
    assert "change the primary role instead" in refused.value.message
    assert refused.value.details["reason"] == "primary_role"
    assert role_names(seeded_conn, user) == {"MEMBER"}


def test_the_trigger_refusal_maps_to_conflict(seeded_conn: Conn) -> None:
    user = add_user(seeded_conn, "member@example.com")
    with pytest.raises(Conflict), seeded_conn.transaction(), rbac._mapped():
        seeded_conn.execute(
            'DELETE FROM "UserRole" ur USING "Role" r'
            ' WHERE ur."roleId" = r.id AND r.name = \'MEMBER\' AND ur."userId" = %s',
            [user],
        )


def test_the_last_super_admin_keeps_the_role(seeded_conn: Conn) -> None:
    second = add_user(seeded_conn, "second@example.com")
    rbac.assign(seeded_conn, CLI, second, "SUPER_ADMIN")
    # with the seeded admin suspended, `second` is the last active SUPER_ADMIN
    seeded_conn.execute("UPDATE \"User\" SET status = 'SUSPENDED' WHERE email = %s", [ADMIN_EMAIL])
    before = audit_count(seeded_conn)
    with pytest.raises(Conflict) as refused, seeded_conn.transaction():
        rbac.unassign(seeded_conn, CLI, second, "SUPER_ADMIN")
    assert refused.value.details["reason"] == "last_super_admin"
    assert "SUPER_ADMIN" in role_names(seeded_conn, second)
    assert audit_count(seeded_conn) == before
    seeded_conn.execute("UPDATE \"User\" SET status = 'ACTIVE' WHERE email = %s", [ADMIN_EMAIL])
    _, changed = rbac.unassign(seeded_conn, CLI, second, "SUPER_ADMIN")
    assert changed


def test_unknown_users_are_not_found(seeded_conn: Conn) -> None:
    for ref in ("nobody@example.com", "no-such-id", "x" * 400, "\x00"):
        with pytest.raises(NotFound):
            rbac.effective(seeded_conn, ref)
        with pytest.raises(NotFound):
            rbac.check(seeded_conn, ref, "users:read")


# -- effective permissions and checks ---------------------------------------------------


def test_effective_permissions_name_their_roles(seeded_conn: Conn) -> None:
    eff = rbac.effective(seeded_conn, ADMIN_EMAIL)
    assert eff["user"]["role"] == "SUPER_ADMIN"
    assert [p["name"] for p in eff["permissions"]] == sorted(seed.PERMISSIONS)
    assert all(p["roles"] == ["SUPER_ADMIN"] for p in eff["permissions"])


def test_check_explains(seeded_conn: Conn) -> None:
    yes = rbac.check(seeded_conn, DEV_EMAIL, "db:backup")
    assert yes["allowed"] and yes["via_roles"] == ["DEVELOPER"]
    assert yes["reason"] == "granted by role DEVELOPER"
    assert yes["user"] == {"id": resolve_user(seeded_conn, DEV_EMAIL)["id"], "status": "ACTIVE"}
    no = rbac.check(seeded_conn, DEV_EMAIL, "db:restore")
    assert not no["allowed"] and no["via_roles"] == []
    assert no["reason"] == "none of the user's roles grants it"
    unknown = rbac.check(seeded_conn, DEV_EMAIL, "reports:read")
    assert not unknown["allowed"] and "no permission named" in unknown["reason"]
    with pytest.raises(Invalid):
        rbac.check(seeded_conn, DEV_EMAIL, "not a permission")
    seeded_conn.execute("UPDATE \"User\" SET status = 'SUSPENDED' WHERE email = %s", [DEV_EMAIL])
    suspended = rbac.check(seeded_conn, DEV_EMAIL, "db:backup")
    assert not suspended["allowed"] and "SUSPENDED" in suspended["reason"]
    assert suspended["via_roles"] == ["DEVELOPER"]


def test_check_with_the_caches_follows_the_version(seeded_conn: Conn) -> None:
    caches = {"cache": PermissionCache(), "subjects": rbac.SubjectCache(), "explain": False}
    dev = resolve_user(seeded_conn, DEV_EMAIL)["id"]
    version = rbac_version(seeded_conn)
    first = rbac.check(seeded_conn, dev, "db:restore", version=version, **caches)
    assert not first["allowed"] and first["via_roles"] is None
    rbac.grant(seeded_conn, CLI, "DEVELOPER", "db:restore")
    # same version: the cached answer; the new version (bumped by trigger): the new one
    stale = rbac.check(seeded_conn, dev, "db:restore", version=version, **caches)
    assert not stale["allowed"]
    new_version = rbac_version(seeded_conn)
    assert new_version > version
    fresh = rbac.check(seeded_conn, dev, "db:restore", version=new_version, **caches)
    assert fresh["allowed"] and fresh["reason"] == "granted by one of the user's roles"
    # a status change bumps the version too
    seeded_conn.execute("UPDATE \"User\" SET status = 'SUSPENDED' WHERE id = %s", [dev])
    newest = rbac_version(seeded_conn)
    suspended = rbac.check(seeded_conn, dev, "db:restore", version=newest, **caches)
    assert not suspended["allowed"] and suspended["user"]["status"] == "SUSPENDED"
    # and so does a new permission, which the cached catalogue then knows
    unknown = rbac.check(seeded_conn, dev, "reports:read", version=newest, **caches)
    assert "no permission named" in unknown["reason"]
    rbac.create_permission(seeded_conn, CLI, name="reports:read")
    latest = rbac_version(seeded_conn)
    known = rbac.check(seeded_conn, dev, "reports:read", version=latest, **caches)
    assert known["reason"] == "none of the user's roles grants it"
    by_email = rbac.check(seeded_conn, DEV_EMAIL, "db:restore", version=latest, **caches)
    assert by_email["user"]["id"] == dev
    with pytest.raises(NotFound):
        rbac.check(seeded_conn, "no-such-id", "users:read", version=latest, **caches)


def test_a_warm_check_by_id_sends_no_query(seeded_settings: Settings) -> None:
    caches = {"cache": PermissionCache(), "subjects": rbac.SubjectCache(), "explain": False}
    conn = psycopg.connect(seeded_settings.url_for(), autocommit=True)
    dev = resolve_user(conn, DEV_EMAIL)["id"]
    version = rbac_version(conn)
    warm = rbac.check(conn, dev, "db:backup", version=version, **caches)
    unknown = rbac.check(conn, dev, "reports:read", version=version, **caches)
    conn.close()  # from now on any query would raise
    assert rbac.check(conn, dev, "db:backup", version=version, **caches) == warm
    assert rbac.check(conn, dev, "reports:read", version=version, **caches) == unknown
    assert warm["allowed"] and not unknown["allowed"]
    with pytest.raises(psycopg.OperationalError):
        rbac.check(conn, dev, "db:backup", version=version + 1, **caches)
