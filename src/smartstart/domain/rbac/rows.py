"""The typed rows and plans RBAC returns (API schemas stay separate pydantic models)."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict


class RoleRow(TypedDict):
    """A role with the permissions it grants and how many users hold it."""

    id: str
    name: str
    description: str | None
    createdAt: datetime
    updatedAt: datetime
    permissions: list[str]
    users: int  # primary or additional


class PermissionRow(TypedDict):
    """A permission (resource:action) with the roles granting it."""

    id: str
    name: str
    resource: str
    action: str
    description: str | None
    createdAt: datetime
    updatedAt: datetime
    roles: list[str]


class UserBrief(TypedDict):
    id: str
    email: str
    username: str
    role: str  # primary role
    status: str


class AssignedRole(TypedDict):
    id: str
    name: str
    description: str | None
    primary: bool
    assignedAt: datetime
    assignedBy: str | None


class UserRoles(TypedDict):
    user: UserBrief
    roles: list[AssignedRole]  # the primary one first


class EffectivePermission(TypedDict):
    name: str
    roles: list[str]  # the user's roles granting it


class UserPermissions(TypedDict):
    user: UserBrief
    permissions: list[EffectivePermission]


class Matrix(TypedDict):
    roles: list[str]
    permissions: list[str]
    grants: dict[str, list[str]]  # role -> the permissions it grants


class CheckedUser(TypedDict):
    id: str
    status: str


class CheckResult(TypedDict):
    allowed: bool
    permission: str
    user: CheckedUser
    via_roles: list[str] | None  # with explain only
    reason: str


# -- plans: what a write would change, every rule checked, nothing written ------------------


class RoleDeletePlan(TypedDict):
    role: RoleRow
    grants: list[str]  # the permissions whose grants go with it
    assignments: int  # users holding it as an additional role


class PermissionDeletePlan(TypedDict):
    permission: PermissionRow
    roles: list[str]  # the roles that lose it


class RevokePlan(TypedDict):
    role: RoleRow
    permission: str
    changed: bool  # False: the role lacks it (a no-op)
    users: int  # users holding the role


class UnassignPlan(TypedDict):
    user: UserBrief
    role: str
    changed: bool  # False: the user lacks it (a no-op)
    roles_before: list[str]
