"""Effective permissions (the union over a user's roles) and their per-process cache.

The cache is keyed by the database's RBAC version, which every change to roles,
permissions or assignments bumps by trigger — through the API, the CLI or raw SQL.
A worker learns the current version with the session lookup it does anyway, so a
cached set is never used after a change has committed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import psycopg

EFFECTIVE_SQL = """
SELECT p.name, array_agg(r.name ORDER BY r.name)
FROM "UserRole" ur
JOIN "Role" r ON r.id = ur."roleId"
JOIN "RolePermission" rp ON rp."roleId" = r.id
JOIN "Permission" p ON p.id = rp."permissionId"
WHERE ur."userId" = %s
GROUP BY p.name
ORDER BY p.name
"""


def _effective(rows: Iterable[tuple[Any, ...]]) -> dict[str, list[str]]:
    return {name: list(roles) for name, roles in rows}


def effective_permissions(conn: psycopg.Connection[Any], user_id: str) -> dict[str, list[str]]:
    """Each permission the user holds, with the roles it comes from."""
    return _effective(conn.execute(EFFECTIVE_SQL, [user_id]))


async def aeffective_permissions(
    conn: psycopg.AsyncConnection[Any], user_id: str
) -> dict[str, list[str]]:
    """`effective_permissions` on an async connection."""
    cur = await conn.execute(EFFECTIVE_SQL, [user_id])
    return _effective(await cur.fetchall())


def rbac_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT version FROM rbac_version WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


class PermissionCache:
    """user id → frozenset of permission names, valid for one RBAC version."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._version = -1
        self._sets: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def known(self, user_id: str, version: int) -> frozenset[str] | None:
        """The cached set, without I/O; None when not cached for this version."""
        return self._sets.get(user_id) if version == self._version else None

    def _store(self, user_id: str, version: int, perms: frozenset[str]) -> frozenset[str]:
        with self._lock:
            if version > self._version:
                self._version = version
                self._sets = {}
            if version == self._version and len(self._sets) < self.max_entries:
                self._sets[user_id] = perms
        return perms

    def get(self, conn: psycopg.Connection[Any], user_id: str, version: int) -> frozenset[str]:
        cached = self.known(user_id, version)
        if cached is not None:
            return cached
        return self._store(user_id, version, frozenset(effective_permissions(conn, user_id)))

    async def aget(
        self, conn: psycopg.AsyncConnection[Any], user_id: str, version: int
    ) -> frozenset[str]:
        """`get` on an async connection."""
        cached = self.known(user_id, version)
        if cached is not None:
            return cached
        perms = frozenset(await aeffective_permissions(conn, user_id))
        return self._store(user_id, version, perms)

    def clear(self) -> None:
        with self._lock:
            self._version = -1
            self._sets = {}
