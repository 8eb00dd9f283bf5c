"""RBAC: roles, permissions, grants, role assignments, effective permissions and checks.

Access: reading roles needs `roles:read`, the permission catalogue `permissions:read`;
role and permission CRUD needs `roles:manage`; grants and assignments need
`rbac:manage` and, on top, that the caller holds every permission involved (nobody
hands out what they lack). `GET /api/authz/check` needs `users:read`: it tells
about one user's access, which is what reading users already reveals.
The user-role routes live here (full paths) beside the users router's `/api/users`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from smartstart.api.deps import ConnDep, SettingsDep, actor_for, require
from smartstart.api.paging import Cursor, Limit
from smartstart.api.responses import trusted_json
from smartstart.api.schemas import UserStatus
from smartstart.domain import rbac
from smartstart.domain.paging import DEFAULT_LIMIT
from smartstart.domain.sessions import Principal

router = APIRouter(tags=["rbac"])

RoleReader = Annotated[Principal, require("roles:read")]
PermissionReader = Annotated[Principal, require("permissions:read")]
RoleManager = Annotated[Principal, require("roles:manage")]
RbacManager = Annotated[Principal, require("rbac:manage")]
UserReader = Annotated[Principal, require("users:read")]

# One name per resource for a path parameter, whatever the route: {role_id}, {permission_id},
# {user_id}; each takes an id or a name.
RoleId = Annotated[
    str, Path(min_length=1, max_length=rbac.MAX_REF_LENGTH, description="id or name")
]
PermissionId = Annotated[
    str,
    Path(min_length=1, max_length=rbac.MAX_REF_LENGTH, description="id or name (resource:action)"),
]
UserId = Annotated[
    str, Path(min_length=1, max_length=rbac.MAX_REF_LENGTH, description="id, email or username")
]
Description = Annotated[str | None, Field(default=None, max_length=rbac.MAX_DESCRIPTION)]


# -- models ------------------------------------------------------------------------


class RoleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=rbac.ROLE_NAME_PATTERN, max_length=50, examples=["CONTENT_EDITOR"])
    description: Description = None


class RoleUpdate(BaseModel):
    """Fields to change; a rename follows to every user's primary role."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=rbac.ROLE_NAME_PATTERN, max_length=50)
    description: Description = None


class PermissionCreate(BaseModel):
    """`name` is resource:action; resource and action, when given, must agree with it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=rbac.PERMISSION_NAME_PATTERN, max_length=81, examples=["reports:read"]
    )
    resource: str | None = Field(default=None, max_length=40)
    action: str | None = Field(default=None, max_length=40)
    description: Description = None


class PermissionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=rbac.PERMISSION_NAME_PATTERN, max_length=81)
    description: Description = None


class RoleOut(BaseModel):
    id: str
    name: str
    description: str | None
    permissions: list[str]
    users: int  # users holding the role (primary or additional)
    createdAt: datetime
    updatedAt: datetime


class RolePage(BaseModel):
    items: list[RoleOut]
    next_cursor: str | None


class PermissionOut(BaseModel):
    id: str
    name: str
    resource: str
    action: str
    description: str | None
    roles: list[str]  # roles granting it
    createdAt: datetime
    updatedAt: datetime


class PermissionPage(BaseModel):
    items: list[PermissionOut]
    next_cursor: str | None


class UserBrief(BaseModel):
    id: str
    email: str
    username: str
    role: str  # primary role
    status: UserStatus


class AssignedRole(BaseModel):
    id: str
    name: str
    description: str | None
    primary: bool
    assignedAt: datetime
    assignedBy: str | None


class UserRoles(BaseModel):
    user: UserBrief
    roles: list[AssignedRole]


class EffectivePermission(BaseModel):
    name: str
    roles: list[str]  # the user's roles that grant it


class UserPermissions(BaseModel):
    user: UserBrief
    permissions: list[EffectivePermission]


class CheckedUser(BaseModel):
    id: str
    status: UserStatus  # only ACTIVE users hold permissions


class CheckResult(BaseModel):
    allowed: bool
    permission: str
    user: CheckedUser
    via_roles: list[str] | None = Field(
        description="The user's roles granting the permission (with explain=true; else null)"
    )
    reason: str


class Matrix(BaseModel):
    roles: list[str]
    permissions: list[str]
    grants: dict[str, list[str]]  # role -> permissions it grants


# -- helpers -----------------------------------------------------------------------


# -- checks ------------------------------------------------------------------------
# First in the router: FastAPI tries routes in order, and this is the hot one.


@router.get(
    "/api/authz/check",
    operation_id="authz_check",
    summary="Whether a user holds a permission, and why",
    response_model=CheckResult,
)
async def authz_check(
    request: Request,
    principal: UserReader,
    user: Annotated[
        str,
        Query(min_length=1, max_length=rbac.MAX_REF_LENGTH, description="id, email or username"),
    ],
    permission: Annotated[str, Query(pattern=rbac.PERMISSION_NAME_PATTERN, max_length=81)],
    explain: Annotated[
        bool, Query(description="Also name the roles granting it (reads the database)")
    ] = False,
) -> Response:
    # The hot path, on the event loop: answered from per-process caches valid for the
    # RBAC version the session lookup just read, so a warm check of a user by id takes
    # no connection at all. Otherwise an async one (autocommit): this request never
    # waits for a pooled sync connection while holding an async one.
    state = request.app.state
    caches = {
        "cache": state.permission_cache,
        "subjects": _subject_cache(request),
        "version": principal.rbac_version,
    }
    result = None if explain else rbac.check_cached(user, permission, **caches)
    if result is None:
        async with state.apool.connection() as conn:
            result = await rbac.acheck(conn, user, permission, explain=explain, **caches)
    return trusted_json(result)


def _subject_cache(request: Request) -> rbac.SubjectCache:
    state = request.app.state
    cache: rbac.SubjectCache | None = getattr(state, "rbac_subjects", None)
    if cache is None:
        # Created on first use (a race only makes one throwaway cache).
        cache = state.rbac_subjects = rbac.SubjectCache()
    return cache


# -- roles -------------------------------------------------------------------------


@router.get(
    "/api/roles",
    operation_id="roles_list",
    summary="List roles with their permissions",
    response_model=RolePage,
)
def list_roles(
    principal: RoleReader,
    conn: ConnDep,
    settings: SettingsDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> RolePage:
    page = rbac.list_roles(conn, settings=settings, limit=limit, cursor=cursor)
    return RolePage(items=[RoleOut(**r) for r in page.items], next_cursor=page.next_cursor)


@router.post(
    "/api/roles",
    operation_id="roles_create",
    summary="Create a role (without permissions; grant them next)",
    status_code=201,
    response_model=RoleOut,
    responses={409: {"description": "A role with this name exists (details.field = name)"}},
)
def create_role(
    request: Request, principal: RoleManager, conn: ConnDep, body: RoleCreate
) -> RoleOut:
    role = rbac.create_role(
        conn, actor_for(request, principal), name=body.name, description=body.description
    )
    return RoleOut(**role)


@router.get(
    "/api/roles/{role_id}",
    operation_id="roles_get",
    summary="Get a role by id or name",
    response_model=RoleOut,
)
def get_role(principal: RoleReader, conn: ConnDep, role_id: RoleId) -> RoleOut:
    return RoleOut(**rbac.resolve_role(conn, role_id))


def _changes(body: RoleUpdate | PermissionUpdate) -> dict[str, str | None]:
    """What a PATCH of a role or a permission sets: a null description clears it."""
    changes: dict[str, str | None] = {}
    if "name" in body.model_fields_set and body.name is not None:
        changes["name"] = body.name
    if "description" in body.model_fields_set:
        changes["description"] = body.description
    return changes


@router.patch(
    "/api/roles/{role_id}",
    operation_id="roles_update",
    summary="Rename or describe a role (users' primary role follows a rename)",
    response_model=RoleOut,
    responses={409: {"description": "Name taken, or a system role (SUPER_ADMIN, MEMBER)"}},
)
def update_role(
    request: Request, principal: RoleManager, conn: ConnDep, role_id: RoleId, body: RoleUpdate
) -> RoleOut:
    role = rbac.update_role(conn, actor_for(request, principal), role_id, **_changes(body))
    return RoleOut(**role)


@router.delete(
    "/api/roles/{role_id}",
    operation_id="roles_delete",
    summary="Delete a role (refused while it is some user's primary role)",
    status_code=204,
    responses={409: {"description": "The primary role of some users, or a system role"}},
)
def delete_role(
    request: Request, principal: RoleManager, conn: ConnDep, role_id: RoleId
) -> Response:
    rbac.delete_role(conn, actor_for(request, principal), role_id)
    return Response(status_code=204)


# -- permissions -------------------------------------------------------------------


@router.get(
    "/api/permissions",
    operation_id="permissions_list",
    summary="List permissions with the roles granting them",
    response_model=PermissionPage,
)
def list_permissions(
    principal: PermissionReader,
    conn: ConnDep,
    settings: SettingsDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> PermissionPage:
    page = rbac.list_permissions(conn, settings=settings, limit=limit, cursor=cursor)
    return PermissionPage(
        items=[PermissionOut(**r) for r in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "/api/permissions",
    operation_id="permissions_create",
    summary="Create a permission (resource:action); SUPER_ADMIN is granted it at once",
    status_code=201,
    response_model=PermissionOut,
    responses={409: {"description": "A permission with this name exists (details.field = name)"}},
)
def create_permission(
    request: Request, principal: RoleManager, conn: ConnDep, body: PermissionCreate
) -> PermissionOut:
    perm = rbac.create_permission(
        conn,
        actor_for(request, principal),
        name=body.name,
        description=body.description,
        resource=body.resource,
        action=body.action,
    )
    return PermissionOut(**perm)


@router.patch(
    "/api/permissions/{permission_id}",
    operation_id="permissions_update",
    summary="Rename (not built-in ones) or describe a permission",
    response_model=PermissionOut,
    responses={409: {"description": "Name taken, or a built-in permission"}},
)
def update_permission(
    request: Request,
    principal: RoleManager,
    conn: ConnDep,
    permission_id: PermissionId,
    body: PermissionUpdate,
) -> PermissionOut:
    perm = rbac.update_permission(
        conn, actor_for(request, principal), permission_id, **_changes(body)
    )
    return PermissionOut(**perm)


@router.delete(
    "/api/permissions/{permission_id}",
    operation_id="permissions_delete",
    summary="Delete a permission and its grants (not built-in ones)",
    status_code=204,
    responses={409: {"description": "A built-in permission the Brain checks"}},
)
def delete_permission(
    request: Request, principal: RoleManager, conn: ConnDep, permission_id: PermissionId
) -> Response:
    rbac.delete_permission(conn, actor_for(request, principal), permission_id)
    return Response(status_code=204)


# -- grants ------------------------------------------------------------------------


@router.put(
    "/api/roles/{role_id}/permissions/{permission_id}",
    operation_id="roles_grant_permission",
    summary="Grant a permission to a role (idempotent; you must hold it yourself)",
    response_model=RoleOut,
)
def grant_permission(
    request: Request,
    principal: RbacManager,
    conn: ConnDep,
    role_id: RoleId,
    permission_id: PermissionId,
) -> RoleOut:
    role, _ = rbac.grant(conn, actor_for(request, principal), role_id, permission_id)
    return RoleOut(**role)


@router.delete(
    "/api/roles/{role_id}/permissions/{permission_id}",
    operation_id="roles_revoke_permission",
    summary="Revoke a permission from a role (idempotent; you must hold it yourself)",
    status_code=204,
    responses={409: {"description": "SUPER_ADMIN keeps every permission"}},
)
def revoke_permission(
    request: Request,
    principal: RbacManager,
    conn: ConnDep,
    role_id: RoleId,
    permission_id: PermissionId,
) -> Response:
    rbac.revoke(conn, actor_for(request, principal), role_id, permission_id)
    return Response(status_code=204)


@router.get(
    "/api/rbac/matrix",
    operation_id="rbac_matrix",
    summary="Roles × permissions",
    response_model=Matrix,
)
def matrix(principal: RoleReader, conn: ConnDep) -> Matrix:
    return Matrix(**rbac.matrix(conn))


# -- assignments -------------------------------------------------------------------


@router.get(
    "/api/users/{user_id}/roles",
    operation_id="users_list_roles",
    summary="A user's roles, the primary one first",
    response_model=UserRoles,
)
def user_roles(principal: RoleReader, conn: ConnDep, user_id: UserId) -> UserRoles:
    return UserRoles(**rbac.user_roles(conn, user_id))


@router.put(
    "/api/users/{user_id}/roles/{role_id}",
    operation_id="users_assign_role",
    summary="Assign a role to a user (idempotent; you must hold all its permissions)",
    response_model=UserRoles,
)
def assign_role(
    request: Request, principal: RbacManager, conn: ConnDep, user_id: UserId, role_id: RoleId
) -> UserRoles:
    roles, _ = rbac.assign(conn, actor_for(request, principal), user_id, role_id)
    return UserRoles(**roles)


@router.delete(
    "/api/users/{user_id}/roles/{role_id}",
    operation_id="users_unassign_role",
    summary="Unassign an additional role (idempotent; not the primary one)",
    status_code=204,
    responses={
        409: {"description": "The user's primary role, or the last active SUPER_ADMIN's role"}
    },
)
def unassign_role(
    request: Request, principal: RbacManager, conn: ConnDep, user_id: UserId, role_id: RoleId
) -> Response:
    rbac.unassign(conn, actor_for(request, principal), user_id, role_id)
    return Response(status_code=204)


@router.get(
    "/api/users/{user_id}/permissions",
    operation_id="users_list_permissions",
    summary="A user's effective permissions, each with the roles granting it",
    response_model=UserPermissions,
)
def user_permissions(principal: RoleReader, conn: ConnDep, user_id: UserId) -> UserPermissions:
    return UserPermissions(**rbac.effective(conn, user_id))
