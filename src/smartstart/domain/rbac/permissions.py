"""Permissions (resource:action): list, resolve, create, update, plan a delete and delete."""

from __future__ import annotations

from typing import Any

import psycopg

from smartstart.config import Settings
from smartstart.domain import paging
from smartstart.domain.actor import Actor
from smartstart.domain.catalog import PERMISSIONS as BUILTIN_PERMISSIONS
from smartstart.domain.errors import Conflict, Invalid
from smartstart.domain.rbac import crud
from smartstart.domain.rbac.common import SUPER_ADMIN, validate_permission_name
from smartstart.domain.rbac.rows import PermissionDeletePlan, PermissionRow

PERMISSION_SQL = """
SELECT p.id, p.name, p.resource, p.action, p.description, p."createdAt", p."updatedAt",
       ARRAY(SELECT r.name FROM "RolePermission" rp JOIN "Role" r ON r.id = rp."roleId"
             WHERE rp."permissionId" = p.id ORDER BY r.name) AS roles
FROM "Permission" p
"""


class _Permissions(crud.Kind[PermissionRow]):
    noun, table, alias = "permission", "Permission", "p"
    select, row = PERMISSION_SQL, PermissionRow

    def name_columns(self, name: str) -> crud.Columns:
        resource, action = validate_permission_name(name)
        return {"name": name, "resource": resource, "action": action}

    def refuse(self, row: PermissionRow, verb: str) -> None:
        if row["name"] in BUILTIN_PERMISSIONS:
            raise Conflict(
                f"{row['name']} is a built-in permission the Brain checks; it cannot be {verb}",
                field="name",
                details={"reason": "builtin_permission"},
            )

    def snapshot(self, row: PermissionRow) -> dict[str, object]:
        return {"name": row["name"], "description": row["description"], "roles": row["roles"]}

    def created(self, conn: psycopg.Connection[Any], row_id: str) -> None:
        # Otherwise nobody could ever grant it: one only hands out what one holds.
        conn.execute(
            'INSERT INTO "RolePermission" ("roleId", "permissionId")'
            ' SELECT r.id, %s FROM "Role" r WHERE r.name = %s ON CONFLICT DO NOTHING',
            [row_id, SUPER_ADMIN],
        )


PERMISSIONS = _Permissions()


def resolve_permission(conn: psycopg.Connection[Any], ref: str) -> PermissionRow:
    """A permission by id or name, with the roles granting it."""
    return crud.resolve(conn, PERMISSIONS, ref)


def list_permissions(
    conn: psycopg.Connection[Any],
    *,
    settings: Settings,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> paging.Page[PermissionRow]:
    """A page of permissions by name, each with the roles granting it."""
    return crud.list_page(conn, settings, PERMISSIONS, limit, cursor)


def create_permission(
    conn: psycopg.Connection[Any],
    actor: Actor,
    *,
    name: str,
    description: str | None = None,
    resource: str | None = None,
    action: str | None = None,
) -> PermissionRow:
    """A new permission named resource:action, granted to SUPER_ADMIN at once."""

    def agrees(columns: crud.Columns) -> None:
        if (resource is not None and resource != columns["resource"]) or (
            action is not None and action != columns["action"]
        ):
            raise Invalid(
                f"name {name!r} does not match resource {resource!r} and action {action!r}",
                details={"field": "name"},
            )

    return crud.create(conn, actor, PERMISSIONS, name, description, check=agrees)


def update_permission(
    conn: psycopg.Connection[Any],
    actor: Actor,
    ref: str,
    *,
    name: str | None = None,
    description: str | None = crud.UNSET,
) -> PermissionRow:
    """Rename a (non built-in) permission, or change its description."""
    return crud.update(conn, actor, PERMISSIONS, ref, name=name, desc=description)


def plan_delete_permission(
    conn: psycopg.Connection[Any], actor: Actor, ref: str
) -> PermissionDeletePlan:
    """What deleting a permission would remove (every rule checked, nothing written)."""
    perm = crud.deletable(conn, actor, PERMISSIONS, ref)
    return {"permission": perm, "roles": perm["roles"]}


def delete_permission(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> PermissionRow:
    """Delete a (non built-in) permission and its grants; the deleted permission."""
    plan = plan_delete_permission(conn, actor, ref)
    return crud.delete(conn, actor, PERMISSIONS, plan["permission"])
