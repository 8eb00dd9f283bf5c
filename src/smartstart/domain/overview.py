"""Reads the operators' console needs that no listing offers cheaply: the overview in
numbers (users total, active, new this week; live sessions; database size) and the roles
with their grants without counting each role's holders (`rbac.list_roles` counts them:
a pass over "UserRole", a second at 1,000,000 users, for a filter's option list).

The web Overview reads its user counts from analytics' summaries (`domain.analytics`)
and only the live sessions and size here (`sessions_and_size`); `summary` counts "User"
itself, exactly, for callers without the summaries.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypedDict

import psycopg
from psycopg.rows import dict_row

from smartstart.db.models import USER_STATUSES

NEW_WINDOW = timedelta(days=7)

# Each count its own subquery with its own plan, so each is an index-only scan: the
# users not ACTIVE (a minority) through the status index, rather than one pass over every
# row with FILTERs (three to four times slower at 1,000,000 users).
SUMMARY_SQL = """
SELECT (SELECT count(*) FROM "User") AS total,
       (SELECT count(*) FROM "User" WHERE status = ANY(%(not_active)s)) AS "notActive",
       (SELECT count(*) FROM "User" WHERE "createdAt" >= now() - %(window)s) AS new,
       (SELECT count(*) FROM "Session" WHERE "revokedAt" IS NULL AND "expiresAt" > now()
          AND "lastSeenAt" > now() - %(idle)s) AS live,
       pg_database_size(current_database()) AS "databaseBytes"
"""
NOT_ACTIVE = [s for s in USER_STATUSES if s != "ACTIVE"]


GRANTS_SQL = """
SELECT r.name, ARRAY(SELECT p.name FROM "RolePermission" rp
                     JOIN "Permission" p ON p.id = rp."permissionId"
                     WHERE rp."roleId" = r.id ORDER BY p.name)
FROM "Role" r ORDER BY r.name
"""


class Summary(TypedDict):
    total: int
    active: int
    new: int  # registered in the last NEW_WINDOW
    live: int  # sessions neither revoked, expired nor idle
    databaseBytes: int


def summary(conn: psycopg.Connection[Any], *, idle: timedelta) -> Summary:
    """Users, live sessions and the database's size, now."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(SUMMARY_SQL, {"window": NEW_WINDOW, "idle": idle, "not_active": NOT_ACTIVE})
        row = cur.fetchone()
    assert row is not None
    return {
        "total": row["total"],
        "active": row["total"] - row["notActive"],
        "new": row["new"],
        "live": row["live"],
        "databaseBytes": row["databaseBytes"],
    }


class Live(TypedDict):
    live: int  # sessions neither revoked, expired nor idle
    databaseBytes: int


LIVE_SQL = """
SELECT (SELECT count(*) FROM "Session" WHERE "revokedAt" IS NULL AND "expiresAt" > now()
          AND "lastSeenAt" > now() - %(idle)s) AS live,
       pg_database_size(current_database()) AS "databaseBytes"
"""


def sessions_and_size(conn: psycopg.Connection[Any], *, idle: timedelta) -> Live:
    """Live sessions and the database's size (the Overview's user counts: analytics)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(LIVE_SQL, {"idle": idle})
        row = cur.fetchone()
    assert row is not None
    return {"live": row["live"], "databaseBytes": row["databaseBytes"]}


def role_grants(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """Every role by name, with the permissions it grants."""
    return {name: list(perms) for name, perms in conn.execute(GRANTS_SQL)}
