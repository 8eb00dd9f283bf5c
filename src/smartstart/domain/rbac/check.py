"""Checks: whether a user holds a permission, and why (the API's hot path).

With the per-process caches (permissions.PermissionCache, SubjectCache) valid for
the current RBAC version, a warm check of a user by id needs no connection at all.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, TypedDict, Unpack

import psycopg

from smartstart.domain.errors import NotFound
from smartstart.domain.permissions import (
    PermissionCache,
    aeffective_permissions,
    effective_permissions,
)
from smartstart.domain.rbac.common import usable, validate_permission_name
from smartstart.domain.rbac.rows import CheckResult

# Without a warm cache, or explained: the user (by id, email or username, as
# resolve_user) and whether the permission exists, in one round trip.
CHECK_BY_REF_SQL = """
SELECT u.id, u.status, EXISTS (SELECT 1 FROM "Permission" WHERE name = %(p)s)
FROM "User" u WHERE u.id = %(r)s OR lower(u.email) = lower(%(r)s) OR u.username = %(r)s
ORDER BY (u.id = %(r)s) DESC LIMIT 1
"""
# The warm check's per-version caches (SubjectCache).
STATUS_SQL = 'SELECT status FROM "User" WHERE id = %s'
CATALOGUE_SQL = 'SELECT name FROM "Permission"'


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
    if not usable(user_ref):
        raise NotFound("no such user", details={"user": None})


def _check_found(row: tuple[Any, ...] | None, user_ref: str) -> tuple[Any, ...]:
    if row is None:
        raise NotFound(f"no user {user_ref!r}", details={"user": user_ref})
    return tuple(row)


def _check_result(
    permission: str, user_id: str, status: str, exists: bool, held: bool, via: list[str] | None
) -> CheckResult:
    return {
        "allowed": held and status == "ACTIVE",
        "permission": permission,
        "user": {"id": user_id, "status": status},
        "via_roles": via,
        "reason": _reason(permission, exists, held, status, via),
    }


class CheckOptions(TypedDict, total=False):
    """`check`'s caches (all three, or none) and whether to explain."""

    cache: PermissionCache | None
    subjects: SubjectCache | None
    version: int | None
    explain: bool  # default True


def check(
    conn: psycopg.Connection[Any], user_ref: str, permission: str, **options: Unpack[CheckOptions]
) -> CheckResult:
    """Whether a user (id, email or username) holds a permission, and why.

    With both caches and the current RBAC version (the API) a warm check of a user
    by id sends no query at all; by email, one indexed lookup. `explain` adds the
    roles granting it (`via_roles`, else None) from the database. Only ACTIVE users
    hold permissions: others cannot sign in.
    """
    _check_args(user_ref, permission)
    explain = options.get("explain", True)
    cache, subjects, version = options.get("cache"), options.get("subjects"), options.get("version")
    if cache is None or subjects is None or version is None or explain:
        user_id, status, exists = _check_row(conn, user_ref, permission)
        sources = effective_permissions(conn, user_id)
        via = sources.get(permission, []) if explain else None
        return _check_result(permission, user_id, status, exists, permission in sources, via)
    try:
        if "@" in user_ref:
            raise NotFound("not an id")
        user_id, status = user_ref, subjects.status(conn, user_ref, version)
    except NotFound:  # an email or a username (ids are cached, names are not)
        user_id, status = _check_row(conn, user_ref, permission)[:2]
    exists = permission in subjects.catalogue(conn, version)
    held = permission in cache.get(conn, user_id, version)
    return _check_result(permission, user_id, status, exists, held, None)


def check_cached(
    user_ref: str,
    permission: str,
    *,
    cache: PermissionCache,
    subjects: SubjectCache,
    version: int,
) -> CheckResult | None:
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
) -> CheckResult:
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
