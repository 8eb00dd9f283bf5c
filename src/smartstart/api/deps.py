"""FastAPI dependencies: database connection, the current user, permission checks.

Every route declares who may call it with exactly one of `public`, `authenticated`
(any signed-in user acting on themselves) or `require("resource:action")`; the
authorization test walks the route table and fails on a route that declares none.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Generic, TypeVar

import psycopg
from fastapi import Depends, Request
from psycopg_pool import PoolTimeout
from starlette.concurrency import run_in_threadpool

from smartstart import signing
from smartstart.api.errors import StaleConnection
from smartstart.config import Settings
from smartstart.domain import audit, authorize, sessions
from smartstart.domain.audit import Actor
from smartstart.domain.errors import Forbidden, Unauthorized
from smartstart.domain.sessions import Principal

SESSION_COOKIE = "smartstart_session"
CSRF_COOKIE = "smartstart_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_PURPOSE = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LAST_ACTIVE_INTERVAL = 60.0  # seconds: at most one "lastActive" write per user per minute


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_conn(request: Request) -> AsyncIterator[psycopg.Connection[Any]]:
    """A pooled connection in one transaction, committed before the response is sent."""
    pool = request.app.state.pool
    slots: asyncio.Semaphore = request.app.state.conn_slots
    # Waiting for a connection happens here, on the event loop: a worker thread parked in
    # pool.getconn() could starve the requests holding connections (a deadlock).
    try:
        async with asyncio.timeout(pool.timeout):
            await slots.acquire()
    except TimeoutError:
        raise PoolTimeout(f"no database connection within {pool.timeout} s") from None
    try:
        conn = await run_in_threadpool(pool.getconn)
        ok = False
        try:
            yield conn
            ok = True
        except psycopg.OperationalError as e:
            # Broken before the commit: the server rolled the transaction back, so the
            # request may run again on a fresh connection (the edge replays it once).
            if conn.broken and not isinstance(e, StaleConnection):
                raise StaleConnection(str(e)) from e
            raise
        finally:
            await run_in_threadpool(_finish, pool, conn, ok)
    finally:
        slots.release()


def _finish(pool: Any, conn: psycopg.Connection[Any], ok: bool) -> None:
    try:
        if conn.broken and not ok:
            return  # nothing to roll back; the pool discards it
        if ok:
            conn.commit()
        else:
            conn.rollback()
    finally:
        pool.putconn(conn)


# scope="function": the transaction commits before the client sees the response, so
# the very next request observes the change.
ConnDep = Annotated[psycopg.Connection[Any], Depends(get_conn, scope="function")]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def actor_for(request: Request, principal: Principal | None) -> Actor:
    """The request's actor: the signed-in user with their permissions, or anonymous."""
    ua = request.headers.get("user-agent")
    if principal is None:
        return Actor.anonymous(client_ip(request), ua)
    return Actor.user(principal.user_id, client_ip(request), ua, permissions=principal.permissions)


def _token(request: Request) -> tuple[str | None, str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "bearer"
    cookie = request.cookies.get(SESSION_COOKIE)
    return (cookie, "cookie") if cookie else (None, "none")


LAST_ACTIVE_SQL = (
    'UPDATE "User" SET "lastActive" = now()'
    " WHERE id = %s AND \"lastActive\" < now() - interval '1 minute'"
)


def _last_active_due(request: Request, user_id: str) -> bool:
    """At most one "lastActive" write per user per minute from this process."""
    seen: dict[str, float] = request.app.state.last_active
    now = time.monotonic()
    if now - seen.get(user_id, -LAST_ACTIVE_INTERVAL) < LAST_ACTIVE_INTERVAL:
        return False
    seen[user_id] = now
    return True


def csrf_token(settings: Settings, session_token: str) -> str:
    """The CSRF token of a session: a MAC of its token's hash, so no other session's fits."""
    return signing.mac(settings, CSRF_PURPOSE, sessions.hash_token(session_token).encode()).hex()


def _check_csrf(request: Request, token: str, via: str) -> None:
    if via == "cookie" and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        expected = csrf_token(request.app.state.settings, token)
        if not secrets.compare_digest(sent.encode(), expected.encode()):
            raise Forbidden(
                f"missing or wrong {CSRF_HEADER} header for a cookie-authenticated write",
                details={"reason": "csrf"},
            )


RowT = TypeVar("RowT")


async def _authenticate(
    request: Request, rider: sessions.Rider[RowT] | None = None
) -> tuple[Principal, RowT | None]:
    """The signed-in user with effective permissions, and the rider's row; 401 otherwise."""
    token, via = _token(request)
    if token is None:
        raise Unauthorized("sign in first: no session token (Authorization: Bearer or cookie)")
    state = request.app.state
    idle = timedelta(minutes=state.settings.session_idle_minutes)
    ridden: RowT | None = None
    conn: psycopg.AsyncConnection[Any] | None = None
    # A connection of its own, held only for these statements (autocommit): a request
    # never holds it while it waits for another connection, so the two pools cannot
    # deadlock each other.
    try:
        async with state.apool.connection() as conn:
            if rider is None:
                principal = await sessions.aresolve(conn, token, idle_timeout=idle, via=via)
            else:
                found = await sessions.aresolve_riding(
                    conn, token, rider, idle_timeout=idle, via=via
                )
                principal, ridden = found if found is not None else (None, None)
            if principal is None:
                raise Unauthorized("the session is invalid, expired or revoked; sign in again")
            _check_csrf(request, token, via)
            # The RBAC version came with the session row: a cached set is never stale.
            principal.permissions = await state.permission_cache.aget(
                conn, principal.user_id, principal.rbac_version
            )
            if _last_active_due(request, principal.user_id):
                await conn.execute(LAST_ACTIVE_SQL, [principal.user_id])
    except psycopg.OperationalError as e:
        # Reads and idempotent touches only: safe to run again on a fresh connection.
        if conn is not None and conn.broken and not isinstance(e, StaleConnection):
            raise StaleConnection(str(e)) from e
        raise
    request.state.principal = principal
    return principal, ridden


async def current_principal(request: Request) -> Principal:
    """The signed-in user, with effective permissions; 401 without a live session."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    principal, _ = await _authenticate(request)
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]


class Public:
    """Marker: the route needs no session."""

    permission = None

    async def __call__(self) -> None:
        return None


class Require:
    """The route needs a session and, unless permission is None, that permission."""

    def __init__(self, permission: str | None) -> None:
        self.permission = permission

    async def __call__(self, request: Request, principal: CurrentUser) -> Principal:
        await self.check(request, principal)
        return principal

    async def check(self, request: Request, principal: Principal) -> None:
        """403 (`Denied`), recorded in the audit log, unless authorize's rule allows it."""
        denied = authorize.require_permission(principal.permissions, self.permission)
        if denied is None:
            return
        actor = actor_for(request, principal)
        # The async pool (autocommit): the denial is recorded though the request fails.
        async with request.app.state.apool.connection() as conn:
            await audit.arecord(
                conn,
                actor,
                authorize.DENIED_ACTION,
                **authorize.denial_record(denied, method=request.method, path=request.url.path),
            )
        raise denied


@dataclass
class Ridden(Generic[RowT]):
    """What a `RequireRiding` dependency gives its route: the caller and the rider's row."""

    principal: Principal
    row: RowT | None


class RequireRiding(Require, Generic[RowT]):
    """`Require`, for a route whose one read rides in the session lookup's statement.

    `rider` builds that read from the request (its path parameters), or returns None when
    there is nothing to read (an id that cannot exist). One round trip instead of two on
    the hottest reads; the row is handed over only once the permission is checked.
    """

    def __init__(
        self, permission: str, rider: Callable[[Request], sessions.Rider[RowT] | None]
    ) -> None:
        super().__init__(permission)
        self.rider = rider

    async def __call__(self, request: Request) -> Ridden[RowT]:  # type: ignore[override]
        rider: sessions.Rider[RowT] | None = self.rider(request)
        principal, row = await _authenticate(request, rider)
        await self.check(request, principal)
        return Ridden(principal, row)


public = Depends(Public())
authenticated = Depends(Require(None))


def require(permission: str) -> Any:
    """Dependency: a signed-in user holding `permission` (403 otherwise)."""
    return Depends(Require(permission))
