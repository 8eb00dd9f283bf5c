"""Role-based access control: roles, permissions, grants, assignments and checks.

Rules, whatever the face (API or CLI), decided by `authorize`:
- Nobody grants what they do not hold: granting or revoking a permission, and
  assigning or unassigning a role, require the actor to hold every permission
  involved; nor does anyone change the roles of a user who holds permissions
  they lack (the CLI operator holds everything).
- SUPER_ADMIN holds every permission: a new permission is granted to it at once
  and revoking from it is refused. SUPER_ADMIN and MEMBER (the default primary
  role) cannot be renamed or deleted, and neither can the built-in permissions
  the Brain's routes check.
- The last ACTIVE SUPER_ADMIN keeps the role (guards.ensure_not_last_super_admin).
- A user's primary role ("User".role) is always assigned; change it instead of
  unassigning it. A role that is some user's primary role cannot be deleted.
- Grants and assignments are idempotent; every call records one audit row
  (with `changed`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from smartstart.config import Settings
from smartstart.domain import audit, guards, paging
from smartstart.domain.audit import Actor
from smartstart.domain.authorize import authorize
from smartstart.domain.catalog import PERMISSIONS as BUILTIN_PERMISSIONS
from smartstart.domain.errors import Conflict, Invalid, NotFound
from smartstart.domain.permissions import (
    PermissionCache,
    aeffective_permissions,
    effective_permissions,
)
from smartstart.domain.resolve import resolve_user

ROLE_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{1,49}$")
PERMISSION_PART = r"[a-z][a-z0-9_-]{0,39}"
PERMISSION_NAME_RE = re.compile(rf"^{PERMISSION_PART}:{PERMISSION_PART}$")
ROLE_NAME_PATTERN = ROLE_NAME_RE.pattern
PERMISSION_NAME_PATTERN = PERMISSION_NAME_RE.pattern
SUPER_ADMIN = guards.SUPER_ADMIN
# The role every new user gets by default ("User".role's default): renaming or
# deleting it would make plain user creation fail.
SYSTEM_ROLES = frozenset({SUPER_ADMIN, "MEMBER"})
MAX_DESCRIPTION = 500
MAX_REF_LENGTH = 320  # ids, names and emails alike

_UNSET: Any = object()

ROLE_SQL = """
SELECT r.id, r.name, r.description, r."createdAt", r."updatedAt",
       ARRAY(SELECT p.name FROM "RolePermission" rp
             JOIN "Permission" p ON p.id = rp."permissionId"
             WHERE rp."roleId" = r.id ORDER BY p.name) AS permissions,
       (SELECT count(*) FROM "UserRole" ur WHERE ur."roleId" = r.id)::int AS users
FROM "Role" r
"""

PERMISSION_SQL = """
SELECT p.id, p.name, p.resource, p.action, p.description, p."createdAt", p."updatedAt",
       ARRAY(SELECT r.name FROM "RolePermission" rp JOIN "Role" r ON r.id = rp."roleId"
             WHERE rp."permissionId" = p.id ORDER BY r.name) AS roles
FROM "Permission" p
"""

# /api/authz/check without a warm cache, or explained: the user (by id, email or
# username, as resolve_user) and whether the permission exists, in one round trip.
CHECK_BY_REF_SQL = """
SELECT u.id, u.status, EXISTS (SELECT 1 FROM "Permission" WHERE name = %(p)s)
FROM "User" u WHERE u.id = %(r)s OR lower(u.email) = lower(%(r)s) OR u.username = %(r)s
ORDER BY (u.id = %(r)s) DESC LIMIT 1
"""
# The warm check's per-version caches (SubjectCache).
STATUS_SQL = 'SELECT status FROM "User" WHERE id = %s'
CATALOGUE_SQL = 'SELECT name FROM "Permission"'


# --- validation and lookups ---------------------------------------------------------


def validate_role_name(name: str) -> str:
    if not ROLE_NAME_RE.match(name):
        raise Invalid(
            f"invalid role name {name!r}: 2-50 characters, upper-case letters, digits and _,"
            " starting with a letter (e.g. CONTENT_EDITOR)",
            details={"field": "name"},
        )
    return name


def validate_permission_name(name: str) -> tuple[str, str]:
    """The (resource, action) of a well-formed permission name."""
    if not PERMISSION_NAME_RE.match(name):
        raise Invalid(
            f"invalid permission name {name!r}: resource:action in lower case (e.g. reports:read)",
            details={"field": "name"},
        )
    resource, action = name.split(":", 1)
    return resource, action


def _description(value: str | None) -> str | None:
    if value is not None and (len(value) > MAX_DESCRIPTION or "\x00" in value):
        raise Invalid(
            f"description must be at most {MAX_DESCRIPTION} characters, without NUL",
            details={"field": "description"},
        )
    return value


def _one(conn: psycopg.Connection[Any], query: str, params: list[Any]) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchone()


def _all(conn: psycopg.Connection[Any], query: str, params: list[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def _usable(ref: str) -> bool:
    """A reference that can be looked up at all (PostgreSQL text refuses NUL)."""
    return 0 < len(ref) <= MAX_REF_LENGTH and "\x00" not in ref


def _by_id_or_name(
    conn: psycopg.Connection[Any], query: str, kind: str, ref: str
) -> dict[str, Any]:
    """One row of `query` (whose WHERE takes the ref twice: id, then name), or NotFound."""
    if not _usable(ref):
        raise NotFound(f"no such {kind}", details={kind: None})
    row = _one(conn, query, [ref, ref])
    if row is None:
        raise NotFound(f"no {kind} {ref!r}", details={kind: ref})
    return row


def resolve_role(conn: psycopg.Connection[Any], ref: str) -> dict[str, Any]:
    """A role by id or name, with its permissions and number of users."""
    return _by_id_or_name(conn, ROLE_SQL + " WHERE r.id = %s OR r.name = %s", "role", ref)


def resolve_permission(conn: psycopg.Connection[Any], ref: str) -> dict[str, Any]:
    """A permission by id or name, with the roles granting it."""
    return _by_id_or_name(
        conn, PERMISSION_SQL + " WHERE p.id = %s OR p.name = %s", "permission", ref
    )


def _user_brief(user: Mapping[str, Any]) -> dict[str, Any]:
    return {k: user[k] for k in ("id", "email", "username", "role", "status")}


@contextmanager
def _mapped(field: str | None = None) -> Iterator[None]:
    """Integrity errors (a concurrent change got there first) as 409/422, never a 500."""
    try:
        yield
    except psycopg.errors.UniqueViolation as e:
        raise Conflict(f"{field or 'value'} already exists", field=field) from e
    except psycopg.errors.CheckViolation as e:
        raise Invalid(f"invalid {field or 'value'}", details={"field": field}) from e
    except psycopg.errors.ForeignKeyViolation as e:
        raise Conflict("the role is still some user's primary role", field=field) from e
    except psycopg.errors.IntegrityConstraintViolation as e:
        # raised by the "UserRole_keep_primary" trigger
        raise Conflict(
            "that is the user's primary role; change the primary role instead",
            details={"reason": "primary_role"},
        ) from e


def _role_snapshot(role: dict[str, Any]) -> dict[str, Any]:
    return {"name": role["name"], "description": role["description"]}


def _by_name(
    conn: psycopg.Connection[Any],
    settings: Settings,
    query: str,
    alias: Literal["r", "p"],
    *,
    limit: int,
    cursor: str | None,
) -> paging.Page[dict[str, Any]]:
    """A page of `query`'s rows (whose table is `alias`) by name (unique: the whole key)."""
    limit = paging.check_limit(limit)
    keyset = paging.Keyset("roles" if alias == "r" else "permissions", ("str",), {})
    after = keyset.after(settings, cursor)
    params: list[Any] = []
    if after is not None:
        query += f" WHERE {alias}.name > %s"
        params.extend(after)
    query += f" ORDER BY {alias}.name LIMIT %s"
    params.append(limit + 1)
    return keyset.page(settings, _all(conn, query, params), limit, lambda r: (r["name"],))


# --- roles --------------------------------------------------------------------------


def list_roles(
    conn: psycopg.Connection[Any],
    *,
    settings: Settings,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> paging.Page[dict[str, Any]]:
    """A page of roles by name, each with its permissions and number of users."""
    return _by_name(conn, settings, ROLE_SQL, "r", limit=limit, cursor=cursor)


def create_role(
    conn: psycopg.Connection[Any], actor: Actor, *, name: str, description: str | None = None
) -> dict[str, Any]:
    """A new role without permissions (409 if the name is taken)."""
    authorize(conn, actor, "roles:manage")
    validate_role_name(name)
    _description(description)
    if _one(conn, 'SELECT 1 AS x FROM "Role" WHERE name = %s', [name]):
        raise Conflict(f"a role named {name!r} already exists", field="name")
    with _mapped("name"):
        row = _one(
            conn,
            'INSERT INTO "Role" (name, description) VALUES (%s, %s) RETURNING id',
            [name, description],
        )
    assert row is not None
    role = resolve_role(conn, row["id"])
    audit.record(
        conn,
        actor,
        "roles.create",
        resource="role",
        resource_id=role["id"],
        after=_role_snapshot(role),
    )
    return role


def _update_row(
    conn: psycopg.Connection[Any], table: str, row_id: str, changes: dict[str, Any]
) -> None:
    """UPDATE the given columns of one row (identifiers quoted, values bound)."""
    conn.execute(
        sql.SQL("UPDATE {} SET {} WHERE id = %s").format(
            sql.Identifier(table),
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in changes),
        ),
        [*changes.values(), row_id],
    )


def update_role(
    conn: psycopg.Connection[Any],
    actor: Actor,
    ref: str,
    *,
    name: str | None = None,
    description: str | None = _UNSET,
) -> dict[str, Any]:
    """Rename a role (its users' "User".role follows by ON UPDATE CASCADE) or describe it."""
    authorize(conn, actor, "roles:manage")
    before = resolve_role(conn, ref)
    changes: dict[str, Any] = {}
    if name is not None and name != before["name"]:
        validate_role_name(name)
        if before["name"] in SYSTEM_ROLES:
            raise Conflict(
                f"{before['name']} is a system role and cannot be renamed",
                field="name",
                details={"reason": "system_role"},
            )
        if _one(conn, 'SELECT 1 AS x FROM "Role" WHERE name = %s', [name]):
            raise Conflict(f"a role named {name!r} already exists", field="name")
        changes["name"] = name
    if description is not _UNSET and description != before["description"]:
        changes["description"] = _description(description)
    if changes:
        with _mapped("name"):
            _update_row(conn, "Role", before["id"], changes)
    after = resolve_role(conn, before["id"])
    audit.record(
        conn,
        actor,
        "roles.update",
        resource="role",
        resource_id=before["id"],
        before=_role_snapshot(before),
        after=_role_snapshot(after),
    )
    return after


def delete_role(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> dict[str, Any]:
    """Delete a role (its grants and additional assignments go with it); the deleted role."""
    authorize(conn, actor, "roles:manage")
    role = resolve_role(conn, ref)
    if role["name"] in SYSTEM_ROLES:
        raise Conflict(
            f"{role['name']} is a system role and cannot be deleted",
            details={"reason": "system_role"},
        )
    row = conn.execute('SELECT count(*) FROM "User" WHERE role = %s', [role["name"]]).fetchone()
    primary_users = int(row[0]) if row else 0
    if primary_users:
        raise Conflict(
            f"{role['name']} is the primary role of {primary_users} user(s);"
            " change their role first",
            details={"reason": "role_in_use", "users": primary_users},
        )
    with _mapped("role"):
        conn.execute('DELETE FROM "Role" WHERE id = %s', [role["id"]])
    audit.record(
        conn,
        actor,
        "roles.delete",
        resource="role",
        resource_id=role["id"],
        before={**_role_snapshot(role), "permissions": role["permissions"], "users": role["users"]},
    )
    return role


# --- permissions --------------------------------------------------------------------


def list_permissions(
    conn: psycopg.Connection[Any],
    *,
    settings: Settings,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> paging.Page[dict[str, Any]]:
    """A page of permissions by name, each with the roles granting it."""
    return _by_name(conn, settings, PERMISSION_SQL, "p", limit=limit, cursor=cursor)


def _permission_snapshot(perm: dict[str, Any]) -> dict[str, Any]:
    return {"name": perm["name"], "description": perm["description"], "roles": perm["roles"]}


def create_permission(
    conn: psycopg.Connection[Any],
    actor: Actor,
    *,
    name: str,
    description: str | None = None,
    resource: str | None = None,
    action: str | None = None,
) -> dict[str, Any]:
    """A new permission named resource:action, granted to SUPER_ADMIN at once."""
    authorize(conn, actor, "roles:manage")
    res, act = validate_permission_name(name)
    if (resource is not None and resource != res) or (action is not None and action != act):
        raise Invalid(
            f"name {name!r} does not match resource {resource!r} and action {action!r}",
            details={"field": "name"},
        )
    _description(description)
    if _one(conn, 'SELECT 1 AS x FROM "Permission" WHERE name = %s', [name]):
        raise Conflict(f"a permission named {name!r} already exists", field="name")
    with _mapped("name"):
        row = _one(
            conn,
            'INSERT INTO "Permission" (name, resource, action, description)'
            " VALUES (%s, %s, %s, %s) RETURNING id",
            [name, res, act, description],
        )
    assert row is not None
    # Otherwise nobody could ever grant it: one only hands out what one holds.
    conn.execute(
        'INSERT INTO "RolePermission" ("roleId", "permissionId")'
        ' SELECT r.id, %s FROM "Role" r WHERE r.name = %s ON CONFLICT DO NOTHING',
        [row["id"], SUPER_ADMIN],
    )
    perm = resolve_permission(conn, row["id"])
    audit.record(
        conn,
        actor,
        "permissions.create",
        resource="permission",
        resource_id=perm["id"],
        after=_permission_snapshot(perm),
    )
    return perm


def _refuse_builtin(perm: dict[str, Any], verb: str) -> None:
    if perm["name"] in BUILTIN_PERMISSIONS:
        raise Conflict(
            f"{perm['name']} is a built-in permission the Brain checks; it cannot be {verb}",
            field="name",
            details={"reason": "builtin_permission"},
        )


def update_permission(
    conn: psycopg.Connection[Any],
    actor: Actor,
    ref: str,
    *,
    name: str | None = None,
    description: str | None = _UNSET,
) -> dict[str, Any]:
    """Rename a (non built-in) permission, or change its description."""
    authorize(conn, actor, "roles:manage")
    before = resolve_permission(conn, ref)
    changes: dict[str, Any] = {}
    if name is not None and name != before["name"]:
        res, act = validate_permission_name(name)
        _refuse_builtin(before, "renamed")
        if _one(conn, 'SELECT 1 AS x FROM "Permission" WHERE name = %s', [name]):
            raise Conflict(f"a permission named {name!r} already exists", field="name")
        changes.update(name=name, resource=res, action=act)
    if description is not _UNSET and description != before["description"]:
        changes["description"] = _description(description)
    if changes:
        with _mapped("name"):
            _update_row(conn, "Permission", before["id"], changes)
    after = resolve_permission(conn, before["id"])
    audit.record(
        conn,
        actor,
        "permissions.update",
        resource="permission",
        resource_id=before["id"],
        before=_permission_snapshot(before),
        after=_permission_snapshot(after),
    )
    return after


def delete_permission(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> dict[str, Any]:
    """Delete a (non built-in) permission and its grants; the deleted permission."""
    authorize(conn, actor, "roles:manage")
    perm = resolve_permission(conn, ref)
    _refuse_builtin(perm, "deleted")
    conn.execute('DELETE FROM "Permission" WHERE id = %s', [perm["id"]])
    audit.record(
        conn,
        actor,
        "permissions.delete",
        resource="permission",
        resource_id=perm["id"],
        before=_permission_snapshot(perm),
    )
    return perm


# --- grants -------------------------------------------------------------------------


def grant(
    conn: psycopg.Connection[Any],
    actor: Actor,
    role_ref: str,
    permission: str,
) -> tuple[dict[str, Any], bool]:
    """Grant a permission to a role (a no-op if granted); the role and whether it changed."""
    role = resolve_role(conn, role_ref)
    perm = resolve_permission(conn, permission)
    authorize(conn, actor, "rbac:manage", grants={perm["name"]})
    changed = perm["name"] not in role["permissions"]
    if changed:
        conn.execute(
            'INSERT INTO "RolePermission" ("roleId", "permissionId") VALUES (%s, %s)'
            " ON CONFLICT DO NOTHING",
            [role["id"], perm["id"]],
        )
    audit.record(
        conn,
        actor,
        "rbac.grant",
        resource="role",
        resource_id=role["id"],
        role=role["name"],
        permission=perm["name"],
        changed=changed,
    )
    return (resolve_role(conn, role["id"]) if changed else role), changed


def revoke(
    conn: psycopg.Connection[Any],
    actor: Actor,
    role_ref: str,
    permission: str,
) -> tuple[dict[str, Any], bool]:
    """Revoke a permission from a role (a no-op if not granted)."""
    role = resolve_role(conn, role_ref)
    perm = resolve_permission(conn, permission)
    authorize(conn, actor, "rbac:manage", grants={perm["name"]})
    if role["name"] == SUPER_ADMIN:
        raise Conflict(
            "SUPER_ADMIN holds every permission; nothing can be revoked from it",
            details={"reason": "super_admin_holds_all"},
        )
    changed = perm["name"] in role["permissions"]
    if changed:
        conn.execute(
            'DELETE FROM "RolePermission" WHERE "roleId" = %s AND "permissionId" = %s',
            [role["id"], perm["id"]],
        )
    audit.record(
        conn,
        actor,
        "rbac.revoke",
        resource="role",
        resource_id=role["id"],
        role=role["name"],
        permission=perm["name"],
        changed=changed,
    )
    return (resolve_role(conn, role["id"]) if changed else role), changed


def matrix(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Roles × permissions: every role with the permissions it grants."""
    roles = _all(conn, ROLE_SQL + " ORDER BY r.name", [])
    perms = [r[0] for r in conn.execute('SELECT name FROM "Permission" ORDER BY name')]
    return {
        "roles": [r["name"] for r in roles],
        "permissions": perms,
        "grants": {r["name"]: r["permissions"] for r in roles},
    }


# --- assignments --------------------------------------------------------------------

USER_ROLES_SQL = """
SELECT r.id, r.name, r.description, (r.name = u.role) AS "primary",
       ur."assignedAt", ur."assignedBy"
FROM "UserRole" ur JOIN "Role" r ON r.id = ur."roleId" JOIN "User" u ON u.id = ur."userId"
WHERE ur."userId" = %s
ORDER BY (r.name = u.role) DESC, r.name
"""


def user_roles(conn: psycopg.Connection[Any], user_ref: str) -> dict[str, Any]:
    """A user and the roles assigned to them, the primary one first."""
    user = resolve_user(conn, user_ref)
    return {"user": _user_brief(user), "roles": _all(conn, USER_ROLES_SQL, [user["id"]])}


def assign(
    conn: psycopg.Connection[Any],
    actor: Actor,
    user_ref: str,
    role_ref: str,
) -> tuple[dict[str, Any], bool]:
    """Assign a role to a user (a no-op if assigned); their roles and whether it changed."""
    user = resolve_user(conn, user_ref)
    role = resolve_role(conn, role_ref)
    authorize(conn, actor, "rbac:manage", user["id"], grants=role["permissions"])
    before = [r["name"] for r in _all(conn, USER_ROLES_SQL, [user["id"]])]
    changed = role["name"] not in before
    if changed:
        # the "UserRole_dedupe" trigger and ON CONFLICT both make a racing duplicate a no-op
        conn.execute(
            'INSERT INTO "UserRole" ("userId", "roleId", "assignedBy") VALUES (%s, %s, %s)'
            " ON CONFLICT DO NOTHING",
            [user["id"], role["id"], actor.user_id],
        )
    after = user_roles(conn, user["id"])
    audit.record(
        conn,
        actor,
        "rbac.assign",
        resource="user",
        resource_id=user["id"],
        role=role["name"],
        changed=changed,
        before={"roles": before},
        after={"roles": [r["name"] for r in after["roles"]]},
    )
    return after, changed


def unassign(
    conn: psycopg.Connection[Any],
    actor: Actor,
    user_ref: str,
    role_ref: str,
) -> tuple[dict[str, Any], bool]:
    """Remove an additional role from a user (a no-op if not assigned)."""
    user = resolve_user(conn, user_ref)
    role = resolve_role(conn, role_ref)
    authorize(conn, actor, "rbac:manage", user["id"], grants=role["permissions"])
    if role["name"] == user["role"]:
        raise Conflict(
            f"{role['name']} is the primary role of {user['email']};"
            " change the primary role instead",
            details={"reason": "primary_role"},
        )
    before = [r["name"] for r in _all(conn, USER_ROLES_SQL, [user["id"]])]
    changed = role["name"] in before
    if changed:
        if role["name"] == SUPER_ADMIN:
            guards.ensure_not_last_super_admin(conn, user["id"])
        with _mapped():
            conn.execute(
                'DELETE FROM "UserRole" WHERE "userId" = %s AND "roleId" = %s',
                [user["id"], role["id"]],
            )
    after = user_roles(conn, user["id"])
    audit.record(
        conn,
        actor,
        "rbac.unassign",
        resource="user",
        resource_id=user["id"],
        role=role["name"],
        changed=changed,
        before={"roles": before},
        after={"roles": [r["name"] for r in after["roles"]]},
    )
    return after, changed


# --- effective permissions and checks -----------------------------------------------


def effective(conn: psycopg.Connection[Any], user_ref: str) -> dict[str, Any]:
    """A user's effective permissions (the union over their roles), each with its roles."""
    user = resolve_user(conn, user_ref)
    perms = effective_permissions(conn, user["id"])
    return {
        "user": _user_brief(user),
        "permissions": [{"name": name, "roles": roles} for name, roles in perms.items()],
    }


class SubjectCache:
    """What a warm check needs besides the permission set, valid for one RBAC version.

    A user's status and existence (deletion and status changes bump the version by
    trigger, like every role or permission change) by id, and the permission
    catalogue. Only users that exist are cached (an INSERT does not bump the
    version), and emails are never cached (changing one does not bump it either).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._version = -1
        self._status: dict[str, str] = {}
        self._catalogue: frozenset[str] | None = None
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def _reset_to(self, version: int) -> None:
        with self._lock:
            if version > self._version:
                self._version = version
                self._status = {}
                self._catalogue = None

    def known_status(self, user_id: str, version: int) -> str | None:
        """The cached status, without I/O; None when not cached for this version."""
        return self._status.get(user_id) if version == self._version else None

    def _store_status(self, user_id: str, version: int, row: tuple[Any, ...] | None) -> str:
        if row is None:
            raise NotFound(f"no user {user_id!r}", details={"user": user_id})
        self._reset_to(version)
        with self._lock:
            if version == self._version and len(self._status) < self.max_entries:
                self._status[user_id] = row[0]
        return str(row[0])

    def status(self, conn: psycopg.Connection[Any], user_id: str, version: int) -> str:
        """The status of the user with this id (NotFound if there is none)."""
        known = self.known_status(user_id, version)
        if known is not None:
            return known
        row = conn.execute(STATUS_SQL, [user_id]).fetchone()
        return self._store_status(user_id, version, row)

    async def astatus(self, conn: psycopg.AsyncConnection[Any], user_id: str, version: int) -> str:
        """`status` on an async connection."""
        known = self.known_status(user_id, version)
        if known is not None:
            return known
        cur = await conn.execute(STATUS_SQL, [user_id])
        return self._store_status(user_id, version, await cur.fetchone())

    def known_catalogue(self, version: int) -> frozenset[str] | None:
        """The cached catalogue, without I/O; None when not cached for this version."""
        known = self._catalogue
        return known if version == self._version else None

    def _store_catalogue(self, version: int, rows: Iterable[tuple[Any, ...]]) -> frozenset[str]:
        known = frozenset(r[0] for r in rows)
        self._reset_to(version)
        with self._lock:
            if version == self._version:
                self._catalogue = known
        return known

    def catalogue(self, conn: psycopg.Connection[Any], version: int) -> frozenset[str]:
        """Every permission name."""
        known = self.known_catalogue(version)
        if known is not None:
            return known
        return self._store_catalogue(version, conn.execute(CATALOGUE_SQL))

    async def acatalogue(self, conn: psycopg.AsyncConnection[Any], version: int) -> frozenset[str]:
        """`catalogue` on an async connection."""
        known = self.known_catalogue(version)
        if known is not None:
            return known
        cur = await conn.execute(CATALOGUE_SQL)
        return self._store_catalogue(version, await cur.fetchall())

    def clear(self) -> None:
        with self._lock:
            self._version = -1
            self._status = {}
            self._catalogue = None


def _reason(permission: str, exists: bool, held: bool, status: str, via: list[str] | None) -> str:
    if not exists:
        return f"no permission named {permission!r} exists"
    if held and status != "ACTIVE":
        return f"the user is {status}: only ACTIVE users hold permissions"
    if held:
        return "granted by role " + ", ".join(via) if via else "granted by one of the user's roles"
    return "none of the user's roles grants it"


def _check_args(user_ref: str, permission: str) -> None:
    validate_permission_name(permission)
    if not _usable(user_ref):
        raise NotFound("no such user", details={"user": None})


def _check_found(row: tuple[Any, ...] | None, user_ref: str) -> tuple[Any, ...]:
    if row is None:
        raise NotFound(f"no user {user_ref!r}", details={"user": user_ref})
    return tuple(row)


def _check_result(
    permission: str, user_id: str, status: str, exists: bool, held: bool, via: list[str] | None
) -> dict[str, Any]:
    return {
        "allowed": held and status == "ACTIVE",
        "permission": permission,
        "user": {"id": user_id, "status": status},
        "via_roles": via,
        "reason": _reason(permission, exists, held, status, via),
    }


def check(
    conn: psycopg.Connection[Any],
    user_ref: str,
    permission: str,
    *,
    cache: PermissionCache | None = None,
    subjects: SubjectCache | None = None,
    version: int | None = None,
    explain: bool = True,
) -> dict[str, Any]:
    """Whether a user (id, email or username) holds a permission, and why.

    With both caches and the current RBAC version (the API) a warm check of a user
    by id sends no query at all; by email, one indexed lookup. `explain` adds the
    roles granting it (`via_roles`, else None) from the database. Only ACTIVE users
    hold permissions: others cannot sign in.
    """
    _check_args(user_ref, permission)
    via: list[str] | None = None
    if cache is not None and subjects is not None and version is not None and not explain:
        try:
            if "@" in user_ref:
                raise NotFound("not an id")
            user_id, status = user_ref, subjects.status(conn, user_ref, version)
        except NotFound:  # an email or a username (ids are cached, names are not)
            user_id, status = _check_row(conn, user_ref, permission)[:2]
        exists = permission in subjects.catalogue(conn, version)
        held = permission in cache.get(conn, user_id, version)
    else:
        user_id, status, exists = _check_row(conn, user_ref, permission)
        sources = effective_permissions(conn, user_id)
        held = permission in sources
        if explain:
            via = sources.get(permission, [])
    return _check_result(permission, user_id, status, exists, held, via)


def check_cached(
    user_ref: str,
    permission: str,
    *,
    cache: PermissionCache,
    subjects: SubjectCache,
    version: int,
) -> dict[str, Any] | None:
    """`check` answered from the caches alone, or None when they cannot answer it.

    A warm check of a user by id needs no connection at all: the API tries this
    before it takes one from the pool.
    """
    _check_args(user_ref, permission)
    if "@" in user_ref:
        return None
    status = subjects.known_status(user_ref, version)
    catalogue = subjects.known_catalogue(version)
    held = cache.known(user_ref, version)
    if status is None or catalogue is None or held is None:
        return None
    return _check_result(
        permission, user_ref, status, permission in catalogue, permission in held, None
    )


async def acheck(
    conn: psycopg.AsyncConnection[Any],
    user_ref: str,
    permission: str,
    *,
    cache: PermissionCache | None = None,
    subjects: SubjectCache | None = None,
    version: int | None = None,
    explain: bool = True,
) -> dict[str, Any]:
    """`check` on an async connection."""
    _check_args(user_ref, permission)
    via: list[str] | None = None
    if cache is not None and subjects is not None and version is not None and not explain:
        try:
            if "@" in user_ref:
                raise NotFound("not an id")
            user_id, status = user_ref, await subjects.astatus(conn, user_ref, version)
        except NotFound:  # an email or a username (ids are cached, names are not)
            user_id, status = (await _acheck_row(conn, user_ref, permission))[:2]
        exists = permission in await subjects.acatalogue(conn, version)
        held = permission in await cache.aget(conn, user_id, version)
    else:
        user_id, status, exists = await _acheck_row(conn, user_ref, permission)
        sources = await aeffective_permissions(conn, user_id)
        held = permission in sources
        if explain:
            via = sources.get(permission, [])
    return _check_result(permission, user_id, status, exists, held, via)


def _check_row(conn: psycopg.Connection[Any], user_ref: str, permission: str) -> tuple[Any, ...]:
    row = conn.execute(CHECK_BY_REF_SQL, {"p": permission, "r": user_ref}).fetchone()
    return _check_found(row, user_ref)


async def _acheck_row(
    conn: psycopg.AsyncConnection[Any], user_ref: str, permission: str
) -> tuple[Any, ...]:
    cur = await conn.execute(CHECK_BY_REF_SQL, {"p": permission, "r": user_ref})
    return _check_found(await cur.fetchone(), user_ref)
