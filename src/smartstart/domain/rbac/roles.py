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
       (SELECT COALESCE(sum(h.holders), 0) FROM role_holders h
        WHERE h."roleId" = r.id)::int AS users
FROM "Role" r
"""
# users: kept by triggers in role_holders (migration 0005), summed over its shards; counting
# "UserRole" took 200 ms per call at a million users.


class _Roles(crud.Kind[RoleRow]):
    noun, table, alias, select, row = "role", "Role", "r", ROLE_SQL, RoleRow

    def name_columns(self, name: str) -> crud.Columns:
        return {"name": validate_role_name(name)}

    def refuse(self, row: RoleRow, verb: str) -> None:
        if row["name"] in SYSTEM_ROLES:
            raise Conflict(
                f"{row['name']} is a system role and cannot be {verb}",
                field="name" if verb == "renamed" else None,
                details={"reason": "system_role"},
            )

    def gone(self, row: RoleRow) -> dict[str, object]:
        return {**self.snapshot(row), "permissions": row["permissions"], "users": row["users"]}

    def in_use(self, conn: psycopg.Connection[Any], row: RoleRow) -> None:
        count = conn.execute('SELECT count(*) FROM "User" WHERE role = %s', [row["name"]])
        found = count.fetchone()
        primary_users = int(found[0]) if found else 0
        if primary_users:
            raise Conflict(
                f"{row['name']} is the primary role of {primary_users} user(s);"
                " change their role first",
                details={"reason": "role_in_use", "users": primary_users},
            )


ROLES = _Roles()


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
    return crud.list_page(conn, settings, ROLES, limit, cursor)


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
