"""The typed rows of smartstart.domain.rbac and its plan_… functions (dry runs)."""

from __future__ import annotations

from typing import Any, get_type_hints

import psycopg
import pytest

from smartstart.domain import rbac
from smartstart.domain.audit import Actor
from smartstart.domain.errors import Conflict, Forbidden, LastSuperAdmin

Conn = psycopg.Connection[Any]
CLI = Actor.operator()
DEV_EMAIL = "developer@alicesolutionsgroup.com"
ADMIN_EMAIL = "admin@alicesolutionsgroup.com"
GUEST_ONLY = Actor(label="test-guest", permissions=frozenset({"journey:read"}))


def snapshot(conn: Conn) -> list[tuple[Any, ...]]:
    """Everything a plan could have changed: roles, grants, assignments, the audit log."""
    return [
        *conn.execute('SELECT id, name, description FROM "Role" ORDER BY id'),
        *conn.execute('SELECT id, name FROM "Permission" ORDER BY id'),
        *conn.execute('SELECT "roleId", "permissionId" FROM "RolePermission" ORDER BY 1, 2'),
        *conn.execute('SELECT "userId", "roleId" FROM "UserRole" ORDER BY 1, 2'),
        *conn.execute("SELECT id, action FROM audit_log ORDER BY id"),
    ]


def keys(row: object) -> set[str]:
    assert isinstance(row, dict)
    return set(row)


def fields(typed: type) -> set[str]:
    return set(get_type_hints(typed))


def test_rows_have_exactly_their_typed_fields(seeded_conn: Conn) -> None:
    role = rbac.resolve_role(seeded_conn, "DEVELOPER")
    assert keys(role) == fields(rbac.RoleRow)
    assert keys(rbac.resolve_permission(seeded_conn, "users:read")) == fields(rbac.PermissionRow)
    roles = rbac.user_roles(seeded_conn, DEV_EMAIL)
    assert keys(roles) == fields(rbac.UserRoles)
    assert keys(roles["user"]) == fields(rbac.UserBrief)
    assert keys(roles["roles"][0]) == fields(rbac.AssignedRole)
    eff = rbac.effective(seeded_conn, DEV_EMAIL)
    assert keys(eff["permissions"][0]) == fields(rbac.EffectivePermission)
    assert keys(rbac.matrix(seeded_conn)) == fields(rbac.Matrix)
    result = rbac.check(seeded_conn, DEV_EMAIL, "users:read")
    assert keys(result) == fields(rbac.CheckResult)
    assert keys(result["user"]) == fields(rbac.CheckedUser)


def test_plan_delete_role_says_what_would_go_and_writes_nothing(seeded_conn: Conn) -> None:
    rbac.create_role(seeded_conn, CLI, name="WRITER")
    rbac.grant(seeded_conn, CLI, "WRITER", "journey:read")
    rbac.assign(seeded_conn, CLI, DEV_EMAIL, "WRITER")
    before = snapshot(seeded_conn)
    plan = rbac.plan_delete_role(seeded_conn, CLI, "WRITER")
    assert plan["role"]["name"] == "WRITER"
    assert plan["grants"] == ["journey:read"] and plan["assignments"] == 1
    assert snapshot(seeded_conn) == before
    with pytest.raises(Conflict, match="primary role of 1 user"):
        rbac.plan_delete_role(seeded_conn, CLI, "DEVELOPER")
    with pytest.raises(Conflict, match="system role"):
        rbac.plan_delete_role(seeded_conn, CLI, "MEMBER")
    with pytest.raises(Forbidden):
        rbac.plan_delete_role(seeded_conn, GUEST_ONLY, "WRITER")
    assert rbac.delete_role(seeded_conn, CLI, "WRITER")["name"] == "WRITER"


def test_plan_delete_permission(seeded_conn: Conn) -> None:
    rbac.create_permission(seeded_conn, CLI, name="reports:read")
    rbac.grant(seeded_conn, CLI, "DEVELOPER", "reports:read")
    before = snapshot(seeded_conn)
    plan = rbac.plan_delete_permission(seeded_conn, CLI, "reports:read")
    assert plan["permission"]["name"] == "reports:read"
    assert plan["roles"] == ["DEVELOPER", "SUPER_ADMIN"]
    assert snapshot(seeded_conn) == before
    with pytest.raises(Conflict, match="built-in"):
        rbac.plan_delete_permission(seeded_conn, CLI, "users:read")


def test_plan_revoke(seeded_conn: Conn) -> None:
    rbac.grant(seeded_conn, CLI, "DEVELOPER", "db:restore")
    before = snapshot(seeded_conn)
    plan = rbac.plan_revoke(seeded_conn, CLI, "DEVELOPER", "db:restore")
    assert plan["changed"] and plan["permission"] == "db:restore" and plan["users"] == 1
    assert plan["role"]["name"] == "DEVELOPER"
    assert not rbac.plan_revoke(seeded_conn, CLI, "GUEST", "db:restore")["changed"]
    assert snapshot(seeded_conn) == before
    with pytest.raises(Conflict, match="SUPER_ADMIN holds every permission"):
        rbac.plan_revoke(seeded_conn, CLI, "SUPER_ADMIN", "db:restore")


def test_plan_unassign(seeded_conn: Conn) -> None:
    rbac.assign(seeded_conn, CLI, DEV_EMAIL, "MODERATOR")
    before = snapshot(seeded_conn)
    plan = rbac.plan_unassign(seeded_conn, CLI, DEV_EMAIL, "MODERATOR")
    assert plan["changed"] and plan["role"] == "MODERATOR"
    assert plan["user"]["email"] == DEV_EMAIL
    assert plan["roles_before"] == ["DEVELOPER", "MODERATOR"]
    assert not rbac.plan_unassign(seeded_conn, CLI, DEV_EMAIL, "GUEST")["changed"]
    assert snapshot(seeded_conn) == before
    with pytest.raises(Conflict, match="change the primary role instead"):
        rbac.plan_unassign(seeded_conn, CLI, DEV_EMAIL, "DEVELOPER")
    rbac.assign(seeded_conn, CLI, DEV_EMAIL, "SUPER_ADMIN")
    seeded_conn.execute("UPDATE \"User\" SET status = 'SUSPENDED' WHERE email = %s", [ADMIN_EMAIL])
    with pytest.raises(LastSuperAdmin):
        rbac.plan_unassign(seeded_conn, CLI, DEV_EMAIL, "SUPER_ADMIN")
