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

The package, by meaning: `roles` and `permissions` (one CRUD helper, `crud`, for
both), `grants`, `assignments`, `check` (the API's hot path), their typed `rows`
and plans, and `common` (names, validation, row reads). Every public name is
re-exported here: callers write `rbac.create_role(...)`.
"""

from __future__ import annotations

from smartstart.domain.rbac.assignments import (
    USER_ROLES_SQL,
    assign,
    effective,
    plan_unassign,
    unassign,
    user_roles,
)
from smartstart.domain.rbac.check import (
    CATALOGUE_SQL,
    CHECK_BY_REF_SQL,
    STATUS_SQL,
    CheckOptions,
    SubjectCache,
    acheck,
    check,
    check_cached,
)
from smartstart.domain.rbac.common import (
    MAX_DESCRIPTION,
    MAX_REF_LENGTH,
    PERMISSION_NAME_PATTERN,
    PERMISSION_NAME_RE,
    ROLE_NAME_PATTERN,
    ROLE_NAME_RE,
    SUPER_ADMIN,
    SYSTEM_ROLES,
    validate_permission_name,
    validate_role_name,
)
from smartstart.domain.rbac.common import mapped as _mapped
from smartstart.domain.rbac.grants import grant, matrix, plan_revoke, revoke
from smartstart.domain.rbac.permissions import (
    PERMISSION_SQL,
    create_permission,
    delete_permission,
    list_permissions,
    plan_delete_permission,
    resolve_permission,
    update_permission,
)
from smartstart.domain.rbac.roles import (
    ROLE_SQL,
    create_role,
    delete_role,
    list_roles,
    plan_delete_role,
    resolve_role,
    update_role,
)
from smartstart.domain.rbac.rows import (
    AssignedRole,
    CheckedUser,
    CheckResult,
    EffectivePermission,
    Matrix,
    PermissionDeletePlan,
    PermissionRow,
    RevokePlan,
    RoleDeletePlan,
    RoleRow,
    UnassignPlan,
    UserBrief,
    UserPermissions,
    UserRoles,
)

__all__ = [
    "CATALOGUE_SQL",
    "CHECK_BY_REF_SQL",
    "MAX_DESCRIPTION",
    "MAX_REF_LENGTH",
    "PERMISSION_NAME_PATTERN",
    "PERMISSION_NAME_RE",
    "PERMISSION_SQL",
    "ROLE_NAME_PATTERN",
    "ROLE_NAME_RE",
    "ROLE_SQL",
    "STATUS_SQL",
    "SUPER_ADMIN",
    "SYSTEM_ROLES",
    "USER_ROLES_SQL",
    "AssignedRole",
    "CheckOptions",
    "CheckResult",
    "CheckedUser",
    "EffectivePermission",
    "Matrix",
    "PermissionDeletePlan",
    "PermissionRow",
    "RevokePlan",
    "RoleDeletePlan",
    "RoleRow",
    "SubjectCache",
    "UnassignPlan",
    "UserBrief",
    "UserPermissions",
    "UserRoles",
    "_mapped",
    "acheck",
    "assign",
    "check",
    "check_cached",
    "create_permission",
    "create_role",
    "delete_permission",
    "delete_role",
    "effective",
    "grant",
    "list_permissions",
    "list_roles",
    "matrix",
    "plan_delete_permission",
    "plan_delete_role",
    "plan_revoke",
    "plan_unassign",
    "resolve_permission",
    "resolve_role",
    "revoke",
    "unassign",
    "update_permission",
    "update_role",
    "user_roles",
    "validate_permission_name",
    "validate_role_name",
]
