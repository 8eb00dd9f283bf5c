"""The built-in roles and permissions, and which role holds which (the seed writes them)."""

from __future__ import annotations

ROLES: dict[str, str] = {
    "SUPER_ADMIN": "Full control of the platform, including restores and schema changes",
    "ADMIN": "Runs the platform: users, role assignments, journeys, audit, backups",
    "MODERATOR": "Looks after the community: reviews users, suspends accounts, ends sessions",
    "DEVELOPER": "Builds on the platform: read access to data, analytics and database health",
    "MEMBER": "A registered member following the journey",
    "GUEST": "A visitor who may look at the journey before joining",
}

PERMISSIONS: dict[str, str] = {
    "users:read": "View user accounts and profiles",
    "users:write": "Create and update users, change their status and passwords",
    "users:delete": "Delete user accounts",
    "roles:read": "View roles and the permissions they grant",
    "roles:manage": "Create, rename and delete roles",
    "rbac:manage": "Assign roles to users and grant permissions to roles",
    "permissions:read": "View the permission catalogue",
    "journey:read": "View journey stages and progress",
    "journey:manage": "Create, reorder and edit journey stages; set users' progress",
    "analytics:read": "View aggregate analytics: registrations, roles, XP, journey completion",
    "audit:read": "Read the audit log",
    "sessions:read": "View users' sessions",
    "sessions:manage": "Revoke users' sessions",
    "db:read": "View database health, statistics and the list of backups",
    "db:backup": "Create, verify and prune backups",
    "db:restore": "Restore the database from a backup",
    "db:admin": "Migrations, reset, cleanup and database security settings",
}

_ADMIN_EXCLUDED = {"roles:manage", "db:restore", "db:admin"}

# The role -> permission matrix: the seed, the API, the CLI and docs/rbac.md all read this.
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "SUPER_ADMIN": tuple(PERMISSIONS),
    "ADMIN": tuple(p for p in PERMISSIONS if p not in _ADMIN_EXCLUDED),
    "MODERATOR": (
        "users:read",
        "users:write",
        "roles:read",
        "journey:read",
        "analytics:read",
        "audit:read",
        "sessions:read",
        "sessions:manage",
    ),
    "DEVELOPER": (
        "users:read",
        "roles:read",
        "permissions:read",
        "journey:read",
        "analytics:read",
        "audit:read",
        "db:read",
        "db:backup",
    ),
    "MEMBER": ("journey:read", "analytics:read"),
    "GUEST": ("journey:read",),
}
