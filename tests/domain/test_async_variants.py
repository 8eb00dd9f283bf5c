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
from smartstart.domain import audit, rbac, resolve, sessions
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


@pytest.mark.parametrize("permission", ["users:read", "db:backup", "nosuch:thing"])
def test_a_warm_check_needs_no_connection(seeded_conn: Conn, permission: str) -> None:
    uid = admin_id(seeded_conn)
    member = seeded_conn.execute(
        "SELECT id FROM \"User\" WHERE role <> 'SUPER_ADMIN' LIMIT 1"
    ).fetchone()
    assert member is not None
    version = rbac_version(seeded_conn)
    caches: dict[str, Any] = {
        "cache": PermissionCache(),
        "subjects": rbac.SubjectCache(),
        "version": version,
    }
    for ref in (uid, member[0]):
        assert rbac.check_cached(ref, permission, **caches) is None  # cold
        expected = rbac.check(seeded_conn, ref, permission, explain=False, **caches)
        assert rbac.check_cached(ref, permission, **caches) == expected
    # Emails are never answered from the caches, nor another RBAC version.
    assert rbac.check_cached(ADMIN_EMAIL, permission, **caches) is None
    assert rbac.check_cached(uid, permission, **{**caches, "version": version + 1}) is None
    with pytest.raises(Invalid):
        rbac.check_cached(uid, "Not A Permission", **caches)


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


def test_a_rider_comes_back_with_the_session(seeded_settings: Settings, seeded_conn: Conn) -> None:
    uid = admin_id(seeded_conn)
    other = seeded_conn.execute('SELECT id FROM "User" WHERE id <> %s LIMIT 1', [uid]).fetchone()
    assert other is not None
    token, _ = sessions.create(seeded_conn, uid, lifetime=timedelta(hours=1))
    idle = timedelta(minutes=30)
    expected = sessions.resolve(seeded_conn, token, idle_timeout=idle)
    for target in (uid, other[0]):
        rider = resolve.user_rider(target)
        assert rider is not None
        got = on_async(
            seeded_settings,
            lambda c, r=rider: sessions.aresolve_riding(c, token, r, idle_timeout=idle),  # type: ignore[misc]
        )
        assert got is not None
        principal, row = got
        assert principal == expected
        assert row == resolve.resolve_user(seeded_conn, target)


def test_a_rider_without_a_row_is_told_from_a_row_of_nulls(
    seeded_settings: Settings, seeded_conn: Conn
) -> None:
    token, _ = sessions.create(seeded_conn, admin_id(seeded_conn), lifetime=timedelta(hours=1))
    idle = timedelta(minutes=30)
    missing = resolve.user_rider(str(uuid.uuid4()))
    assert missing is not None
    got = on_async(
        seeded_settings, lambda c: sessions.aresolve_riding(c, token, missing, idle_timeout=idle)
    )
    assert got is not None and got[1] is None
    nulls = sessions.Rider("SELECT NULL::text AS a, NULL::int AS b", (), ("a", "b"))
    got = on_async(
        seeded_settings, lambda c: sessions.aresolve_riding(c, token, nulls, idle_timeout=idle)
    )
    assert got is not None and got[1] == {"a": None, "b": None}


def test_a_rider_gets_nothing_without_a_live_session(
    seeded_settings: Settings, seeded_conn: Conn
) -> None:
    uid = admin_id(seeded_conn)
    token, session = sessions.create(seeded_conn, uid, lifetime=timedelta(hours=1))
    idle = timedelta(minutes=30)
    rider = resolve.user_rider(uid)
    assert rider is not None

    def ride(tok: str) -> Any:
        return on_async(
            seeded_settings, lambda c: sessions.aresolve_riding(c, tok, rider, idle_timeout=idle)
        )

    assert ride("no-such-token") is None
    sessions.revoke(seeded_conn, session["id"])
    assert ride(token) is None


def test_a_rider_touches_a_stale_session(seeded_settings: Settings, seeded_conn: Conn) -> None:
    uid = admin_id(seeded_conn)
    token, session = sessions.create(seeded_conn, uid, lifetime=timedelta(hours=1))
    seeded_conn.execute(
        'UPDATE "Session" SET "lastSeenAt" = now() - interval \'5 minutes\' WHERE id = %s',
        [session["id"]],
    )
    rider = resolve.user_rider(uid)
    assert rider is not None
    on_async(
        seeded_settings,
        lambda c: sessions.aresolve_riding(c, token, rider, idle_timeout=timedelta(minutes=30)),
    )
    row = seeded_conn.execute(
        'SELECT "lastSeenAt" > now() - interval \'1 minute\' FROM "Session" WHERE id = %s',
        [session["id"]],
    ).fetchone()
    assert row == (True,)


@pytest.mark.parametrize("bad", ["", "x" * 500, "a\x00b"])
def test_no_rider_for_an_id_that_cannot_exist(bad: str) -> None:
    # and none for an email, which is never an id: it takes resolve_user's path
    assert resolve.user_rider("admin@alicesolutionsgroup.com") is None
    assert resolve.user_rider(bad) is None
