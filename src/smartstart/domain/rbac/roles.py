"""Roles: list, resolve, create, update, plan a delete and delete (through `crud`)."""

from __future__ import annotations

from typing import Any

import psycopg

from smartstart.config import Settings
from smartstart.domain import paging
from smartstart.domain.actor import Actor
from smartstart.domain.errors import Conflict
from smartstart.domain.rbac import crud
from smartstart.domain.rbac.common import SYSTEM_ROLES, validate_role_name
from smartstart.domain.rbac.rows import RoleDeletePlan, RoleRow

ROLE_SQL = """
SELECT r.id, r.name, r.description, r."createdAt", r."updatedAt",
       ARRAY(SELECT p.name FROM "RolePermission" rp
             JOIN "Permission" p ON p.id = rp."permissionId"
             WHERE rp."roleId" = r.id ORDER BY p.name) AS permissions,
       (SELECT count(*) FROM "UserRole" ur WHERE ur."roleId" = r.id)::int AS users
FROM "Role" r
"""


def _refuse_system(role: RoleRow, verb: str) -> None:
    if role["name"] in SYSTEM_ROLES:
        raise Conflict(
            f"{role['name']} is a system role and cannot be {verb}",
            field="name" if verb == "renamed" else None,
            details={"reason": "system_role"},
        )


def _refuse_primary(conn: psycopg.Connection[Any], role: RoleRow) -> None:
    row = conn.execute('SELECT count(*) FROM "User" WHERE role = %s', [role["name"]]).fetchone()
    primary_users = int(row[0]) if row else 0
    if primary_users:
        raise Conflict(
            f"{role['name']} is the primary role of {primary_users} user(s);"
            " change their role first",
            details={"reason": "role_in_use", "users": primary_users},
        )


def _snapshot(role: RoleRow) -> dict[str, object]:
    return {"name": role["name"], "description": role["description"]}


ROLES = crud.Kind(
    noun="role",
    table="Role",
    alias="r",
    select=ROLE_SQL,
    row=RoleRow,
    name_columns=lambda name: {"name": validate_role_name(name)},
    refuse=_refuse_system,
    snapshot=_snapshot,
    gone=lambda r: {**_snapshot(r), "permissions": r["permissions"], "users": r["users"]},
    in_use=_refuse_primary,
)


def resolve_role(conn: psycopg.Connection[Any], ref: str) -> RoleRow:
    """A role by id or name, with its permissions and number of users."""
    return crud.resolve(conn, ROLES, ref)


def list_roles(
    conn: psycopg.Connection[Any],
    *,
    settings: Settings,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> paging.Page[RoleRow]:
    """A page of roles by name, each with its permissions and number of users."""
    return crud.list_page(conn, settings, ROLES, limit=limit, cursor=cursor)


def create_role(
    conn: psycopg.Connection[Any], actor: Actor, *, name: str, description: str | None = None
) -> RoleRow:
    """A new role without permissions (409 if the name is taken)."""
    return crud.create(conn, actor, ROLES, name, description)


def update_role(
    conn: psycopg.Connection[Any],
    actor: Actor,
    ref: str,
    *,
    name: str | None = None,
    description: str | None = crud.UNSET,
) -> RoleRow:
    """Rename a role (its users' "User".role follows by ON UPDATE CASCADE) or describe it."""
    return crud.update(conn, actor, ROLES, ref, name=name, desc=description)


def plan_delete_role(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> RoleDeletePlan:
    """What deleting a role would remove (every rule checked, nothing written)."""
    role = crud.deletable(conn, actor, ROLES, ref)
    return {"role": role, "grants": role["permissions"], "assignments": role["users"]}


def delete_role(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> RoleRow:
    """Delete a role (its grants and additional assignments go with it); the deleted role."""
    return crud.delete(conn, actor, ROLES, plan_delete_role(conn, actor, ref)["role"])
