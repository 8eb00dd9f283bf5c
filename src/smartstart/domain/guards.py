"""Rules that protect the platform from locking itself out."""

from __future__ import annotations

from typing import Any

import psycopg

from smartstart.domain.errors import Conflict

SUPER_ADMIN = "SUPER_ADMIN"


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
    suspending, deactivating or deleting user_id, or unassigning their SUPER_ADMIN)."""
    admins = active_super_admins(conn, lock=True)
    if admins == [user_id]:
        raise Conflict(
            "this is the last active SUPER_ADMIN; make someone else SUPER_ADMIN first",
            details={"reason": "last_super_admin"},
        )
