"""Rules that protect the platform from locking itself out."""

from __future__ import annotations

from typing import Any

import psycopg

from smartstart.domain.errors import LastSuperAdmin

SUPER_ADMIN = "SUPER_ADMIN"
# The key the database's last-SUPER_ADMIN check (migration 0003) locks at commit.
SUPER_ADMIN_LOCK_KEY = 7_274_637_361
LAST_SUPER_ADMIN_MESSAGE = (
    "this is the last active SUPER_ADMIN; make someone else SUPER_ADMIN first"
)


def active_super_admins(conn: psycopg.Connection[Any], *, lock: bool = False) -> list[str]:
    """Ids of ACTIVE users holding SUPER_ADMIN (as primary or additional role)."""
    query = (
        'SELECT u.id FROM "User" u JOIN "UserRole" ur ON ur."userId" = u.id'
        ' JOIN "Role" r ON r.id = ur."roleId"'
        " WHERE r.name = %s AND u.status = 'ACTIVE' ORDER BY u.id"
    )
    if lock:
        query += " FOR UPDATE OF u"  # concurrent demotions serialise here
    return [r[0] for r in conn.execute(query, [SUPER_ADMIN])]


def ensure_not_last_super_admin(conn: psycopg.Connection[Any], user_id: str) -> None:
    """Refuse a change that would leave no ACTIVE SUPER_ADMIN (call before demoting,
    suspending, deactivating or deleting user_id, or unassigning their SUPER_ADMIN).

    The lock is the one the database's commit-time check takes: a concurrent removal
    waits here until the other commits, then counts what is left."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [SUPER_ADMIN_LOCK_KEY])
    admins = active_super_admins(conn)
    if admins == [user_id]:
        raise LastSuperAdmin(LAST_SUPER_ADMIN_MESSAGE, details={"reason": "last_super_admin"})


def is_last_super_admin_error(exc: BaseException) -> bool:
    """Whether a database error is the last-SUPER_ADMIN check's refusal."""
    diag = getattr(exc, "diag", None)
    return isinstance(exc, psycopg.errors.CheckViolation) and (
        getattr(diag, "constraint_name", None) == "last_super_admin"
    )
