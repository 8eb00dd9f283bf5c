"""Grants (role → permission): grant, plan a revoke, revoke, and the whole matrix."""

from __future__ import annotations

from typing import Any

import psycopg

from smartstart.domain import audit
from smartstart.domain.actor import Actor
from smartstart.domain.authorize import authorize
from smartstart.domain.errors import Conflict
from smartstart.domain.rbac.common import SUPER_ADMIN
from smartstart.domain.rbac.permissions import resolve_permission
from smartstart.domain.rbac.roles import resolve_role
from smartstart.domain.rbac.rows import Matrix, RevokePlan, RoleRow


def _grantable(
    conn: psycopg.Connection[Any], actor: Actor, role_ref: str, permission: str
) -> tuple[RoleRow, str, str]:
    """The role, the permission's id and name, once the actor may hand it out."""
    role = resolve_role(conn, role_ref)
    perm = resolve_permission(conn, permission)
    authorize(conn, actor, "rbac:manage", grants={perm["name"]})
    return role, perm["id"], perm["name"]


def _recorded(
    conn: psycopg.Connection[Any],
    actor: Actor,
    action: str,
    role: RoleRow,
    name: str,
    changed: bool,
) -> tuple[RoleRow, bool]:
    """Audit a grant or revoke; the role as it is now and whether it changed."""
    audit.record(
        conn,
        actor,
        action,
        resource="role",
        resource_id=role["id"],
        role=role["name"],
        permission=name,
        changed=changed,
    )
    return (resolve_role(conn, role["id"]) if changed else role), changed


def grant(
    conn: psycopg.Connection[Any], actor: Actor, role_ref: str, permission: str
) -> tuple[RoleRow, bool]:
    """Grant a permission to a role (a no-op if granted); the role and whether it changed."""
    role, perm_id, name = _grantable(conn, actor, role_ref, permission)
    changed = name not in role["permissions"]
    if changed:
        conn.execute(
            'INSERT INTO "RolePermission" ("roleId", "permissionId") VALUES (%s, %s)'
            " ON CONFLICT DO NOTHING",
            [role["id"], perm_id],
        )
    return _recorded(conn, actor, "rbac.grant", role, name, changed)


def _revocable(
    conn: psycopg.Connection[Any], actor: Actor, role_ref: str, permission: str
) -> tuple[RoleRow, str, str]:
    role, perm_id, name = _grantable(conn, actor, role_ref, permission)
    if role["name"] == SUPER_ADMIN:
        raise Conflict(
            "SUPER_ADMIN holds every permission; nothing can be revoked from it",
            details={"reason": "super_admin_holds_all"},
        )
    return role, perm_id, name


def plan_revoke(
    conn: psycopg.Connection[Any], actor: Actor, role_ref: str, permission: str
) -> RevokePlan:
    """What revoking a permission from a role would change (every rule checked)."""
    role, _, name = _revocable(conn, actor, role_ref, permission)
    changed = name in role["permissions"]
    return {"role": role, "permission": name, "changed": changed, "users": role["users"]}


def revoke(
    conn: psycopg.Connection[Any], actor: Actor, role_ref: str, permission: str
) -> tuple[RoleRow, bool]:
    """Revoke a permission from a role (a no-op if not granted)."""
    role, perm_id, name = _revocable(conn, actor, role_ref, permission)
    changed = name in role["permissions"]
    if changed:
        conn.execute(
            'DELETE FROM "RolePermission" WHERE "roleId" = %s AND "permissionId" = %s',
            [role["id"], perm_id],
        )
    return _recorded(conn, actor, "rbac.revoke", role, name, changed)


def matrix(conn: psycopg.Connection[Any]) -> Matrix:
    """Roles × permissions: every role with the permissions it grants."""
    # Names and grants only: the matrix shows no holder counts, so it reads none.
    roles: list[tuple[str, list[str]]] = conn.execute(
        'SELECT r.name, ARRAY(SELECT p.name FROM "RolePermission" rp'
        ' JOIN "Permission" p ON p.id = rp."permissionId"'
        ' WHERE rp."roleId" = r.id ORDER BY p.name) FROM "Role" r ORDER BY r.name'
    ).fetchall()
    perms = [r[0] for r in conn.execute('SELECT name FROM "Permission" ORDER BY name')]
    return {
        "roles": [name for name, _ in roles],
        "permissions": perms,
        "grants": dict(roles),
    }
