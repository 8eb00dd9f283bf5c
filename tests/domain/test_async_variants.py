"""The async domain variants (the API's hot paths) answer exactly like the sync ones."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
import pytest

from smartstart.config import Settings
from smartstart.domain import audit, rbac, sessions, users
from smartstart.domain.audit import Actor
from smartstart.domain.errors import Invalid, NotFound
from smartstart.domain.permissions import PermissionCache, rbac_version

Conn = psycopg.Connection[Any]
AConn = psycopg.AsyncConnection[Any]
T = TypeVar("T")
ADMIN_EMAIL = "admin@alicesolutionsgroup.com"


def on_async(settings: Settings, work: Callable[[AConn], Awaitable[T]]) -> T:
    """Run work on an autocommit async connection to the test's database."""

    async def main() -> T:
        async with await psycopg.AsyncConnection.connect(
            settings.url_for(), autocommit=True
        ) as aconn:
            return await work(aconn)

    return asyncio.run(main())


def admin_id(conn: Conn) -> str:
    row = conn.execute('SELECT id FROM "User" WHERE email = %s', [ADMIN_EMAIL]).fetchone()
    assert row is not None
    return str(row[0])


def test_users_aget_matches_get(seeded_settings: Settings, seeded_conn: Conn) -> None:
    uid = admin_id(seeded_conn)
    assert on_async(seeded_settings, lambda c: users.aget(c, uid)) == users.get(seeded_conn, uid)
    for missing in (str(uuid.uuid4()), "not-an-id", "x" * 500):
        with pytest.raises(NotFound):
            on_async(seeded_settings, lambda c, m=missing: users.aget(c, m))  # type: ignore[misc]


@pytest.mark.parametrize("explain", [False, True])
@pytest.mark.parametrize("by_email", [False, True])
@pytest.mark.parametrize("permission", ["users:read", "db:backup", "nosuch:thing"])
def test_rbac_acheck_matches_check(
    seeded_settings: Settings, seeded_conn: Conn, explain: bool, by_email: bool, permission: str
) -> None:
    ref = ADMIN_EMAIL if by_email else admin_id(seeded_conn)
    version = rbac_version(seeded_conn)

    def caches() -> dict[str, Any]:
        return {"cache": PermissionCache(), "subjects": rbac.SubjectCache(), "version": version}

    expected = rbac.check(seeded_conn, ref, permission, explain=explain, **caches())
    got = on_async(
        seeded_settings,
        lambda c: rbac.acheck(c, ref, permission, explain=explain, **caches()),
    )
    assert got == expected
    assert expected["allowed"] == (permission != "nosuch:thing")  # a SUPER_ADMIN


def test_rbac_acheck_refuses_like_check(seeded_settings: Settings) -> None:
    with pytest.raises(NotFound):
        on_async(seeded_settings, lambda c: rbac.acheck(c, str(uuid.uuid4()), "users:read"))
    with pytest.raises(NotFound):
        on_async(seeded_settings, lambda c: rbac.acheck(c, "nobody@example.com", "users:read"))
    with pytest.raises(Invalid):
        on_async(seeded_settings, lambda c: rbac.acheck(c, ADMIN_EMAIL, "Not A Permission"))


def test_permission_cache_aget_fills_the_same_cache(
    seeded_settings: Settings, seeded_conn: Conn
) -> None:
    uid = admin_id(seeded_conn)
    version = rbac_version(seeded_conn)
    cache = PermissionCache()
    perms = on_async(seeded_settings, lambda c: cache.aget(c, uid, version))
    assert perms == frozenset(cache.get(seeded_conn, uid, version)) and "users:read" in perms
    assert cache._sets == {uid: perms}
    # A newer version drops what an older one stored.
    on_async(seeded_settings, lambda c: cache.aget(c, uid, version + 1))
    assert cache._version == version + 1


def test_sessions_aresolve_matches_resolve(seeded_settings: Settings, seeded_conn: Conn) -> None:
    token, _ = sessions.create(seeded_conn, admin_id(seeded_conn), lifetime=timedelta(hours=1))
    idle = timedelta(minutes=30)
    expected = sessions.resolve(seeded_conn, token, idle_timeout=idle, via="cookie")
    got = on_async(
        seeded_settings, lambda c: sessions.aresolve(c, token, idle_timeout=idle, via="cookie")
    )
    assert got == expected and got is not None and got.email == ADMIN_EMAIL
    assert (
        on_async(
            seeded_settings, lambda c: sessions.aresolve(c, "no-such-token", idle_timeout=idle)
        )
        is None
    )


def test_audit_arecord_writes_the_row_record_writes(
    seeded_settings: Settings, seeded_conn: Conn
) -> None:
    actor = Actor.user("u-1", "127.0.0.1", "pytest")
    kwargs: dict[str, Any] = {"resource": "user", "resource_id": "r-1", "after": {"token": "x"}}
    audit.record(seeded_conn, actor, "test.sync", **kwargs, extra=1)
    on_async(seeded_settings, lambda c: audit.arecord(c, actor, "test.async", **kwargs, extra=1))
    rows = seeded_conn.execute(
        'SELECT action, actor, resource, "resourceId", details, ip::text FROM audit_log'
        " WHERE action LIKE 'test.%%' ORDER BY id"
    ).fetchall()
    assert [r[0] for r in rows] == ["test.sync", "test.async"]
    assert rows[0][1:] == rows[1][1:]
    assert rows[1][4]["after"] == {"token": "***"}
