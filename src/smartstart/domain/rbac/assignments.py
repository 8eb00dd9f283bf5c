"""Role assignments (user → role): list, assign, plan an unassign, unassign, effective."""

from __future__ import annotations

from typing import Any

import psycopg

from smartstart.domain import audit, guards
from smartstart.domain.actor import Actor
from smartstart.domain.authorize import authorize
from smartstart.domain.errors import Conflict
from smartstart.domain.permissions import effective_permissions
from smartstart.domain.rbac.common import SUPER_ADMIN, fetch_all, mapped, user_brief
from smartstart.domain.rbac.roles import resolve_role
from smartstart.domain.rbac.rows import (
    AssignedRole,
    RoleRow,
    UnassignPlan,
    UserPermissions,
    UserRoles,
)
from smartstart.domain.resolve import UserRow, resolve_user

USER_ROLES_SQL = """
SELECT r.id, r.name, r.description, (r.name = u.role) AS "primary",
       ur."assignedAt", ur."assignedBy"
FROM "UserRole" ur JOIN "Role" r ON r.id = ur."roleId" JOIN "User" u ON u.id = ur."userId"
WHERE ur."userId" = %s
ORDER BY (r.name = u.role) DESC, r.name
"""


def _assigned(conn: psycopg.Connection[Any], user_id: str) -> list[AssignedRole]:
    return fetch_all(conn, AssignedRole, USER_ROLES_SQL, [user_id])


def user_roles(conn: psycopg.Connection[Any], user_ref: str) -> UserRoles:
    """A user and the roles assigned to them, the primary one first."""
    user = resolve_user(conn, user_ref)
    return {"user": user_brief(user), "roles": _assigned(conn, user["id"])}


def _assignable(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, role_ref: str
) -> tuple[UserRow, RoleRow, list[str]]:
    """The user, the role and the user's role names, once the actor may change them."""
    user = resolve_user(conn, user_ref)
    role = resolve_role(conn, role_ref)
    authorize(conn, actor, "rbac:manage", user["id"], grants=role["permissions"])
    return user, role, [r["name"] for r in _assigned(conn, user["id"])]


def _recorded(
    conn: psycopg.Connection[Any],
    actor: Actor,
    action: str,
    user_id: str,
    role: str,
    before: list[str],
    changed: bool,
) -> tuple[UserRoles, bool]:
    """Audit an assign or unassign; the user's roles now and whether they changed."""
    after = user_roles(conn, user_id)
    audit.record(
        conn,
        actor,
        action,
        resource="user",
        resource_id=user_id,
        role=role,
        changed=changed,
        before={"roles": before},
        after={"roles": [r["name"] for r in after["roles"]]},
    )
    return after, changed


def assign(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, role_ref: str
) -> tuple[UserRoles, bool]:
    """Assign a role to a user (a no-op if assigned); their roles and whether it changed."""
    user, role, before = _assignable(conn, actor, user_ref, role_ref)
    changed = role["name"] not in before
    if changed:
        # the "UserRole_dedupe" trigger and ON CONFLICT both make a racing duplicate a no-op
        conn.execute(
            'INSERT INTO "UserRole" ("userId", "roleId", "assignedBy") VALUES (%s, %s, %s)'
            " ON CONFLICT DO NOTHING",
            [user["id"], role["id"], actor.user_id],
        )
    return _recorded(conn, actor, "rbac.assign", user["id"], role["name"], before, changed)


def _unassignable(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, role_ref: str
) -> tuple[UserRow, RoleRow, list[str]]:
    user, role, before = _assignable(conn, actor, user_ref, role_ref)
    if role["name"] == user["role"]:
        raise Conflict(
            f"{role['name']} is the primary role of {user['email']};"
            " change the primary role instead",
            details={"reason": "primary_role"},
        )
    if role["name"] == SUPER_ADMIN and role["name"] in before:
        guards.ensure_not_last_super_admin(conn, user["id"])
    return user, role, before


def plan_unassign(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, role_ref: str
) -> UnassignPlan:
    """What unassigning a role from a user would change (every rule checked)."""
    user, role, before = _unassignable(conn, actor, user_ref, role_ref)
    return {
        "user": user_brief(user),
        "role": role["name"],
        "changed": role["name"] in before,
        "roles_before": before,
    }


def unassign(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, role_ref: str
) -> tuple[UserRoles, bool]:
    """Remove an additional role from a user (a no-op if not assigned)."""
    user, role, before = _unassignable(conn, actor, user_ref, role_ref)
    changed = role["name"] in before
    if changed:
        with mapped():
            conn.execute(
                'DELETE FROM "UserRole" WHERE "userId" = %s AND "roleId" = %s',
                [user["id"], role["id"]],
            )
    return _recorded(conn, actor, "rbac.unassign", user["id"], role["name"], before, changed)


def effective(conn: psycopg.Connection[Any], user_ref: str) -> UserPermissions:
    """A user's effective permissions (the union over their roles), each with its roles."""
    user = resolve_user(conn, user_ref)
    perms = effective_permissions(conn, user["id"])
    return {
        "user": user_brief(user),
        "permissions": [{"name": name, "roles": roles} for name, roles in perms.items()],
    }
