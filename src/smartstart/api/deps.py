"""FastAPI dependencies: database connection, the current user, permission checks.

Every route declares who may call it with exactly one of `public`, `authenticated`
(any signed-in user acting on themselves) or `require("resource:action")`; the
authorization test walks the route table and fails on a route that declares none.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from psycopg_pool import PoolTimeout
from starlette.concurrency import run_in_threadpool

from smartstart.config import Settings
from smartstart.domain import audit, sessions
from smartstart.domain.audit import Actor
from smartstart.domain.errors import Forbidden, Unauthorized
from smartstart.domain.sessions import Principal

SESSION_COOKIE = "smartstart_session"
CSRF_COOKIE = "smartstart_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LAST_ACTIVE_INTERVAL = 60.0  # seconds: at most one "lastActive" write per user per minute


def get_settings(request: Request) -> Settings:
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
        finally:
            await run_in_threadpool(_finish, pool, conn, ok)
    finally:
        slots.release()


def _finish(pool: Any, conn: psycopg.Connection[Any], ok: bool) -> None:
    try:
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
    ua = request.headers.get("user-agent")
    if principal is None:
        return Actor.anonymous(client_ip(request), ua)
    return Actor.user(principal.user_id, client_ip(request), ua)


def _token(request: Request) -> tuple[str | None, str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "bearer"
    cookie = request.cookies.get(SESSION_COOKIE)
    return (cookie, "cookie") if cookie else (None, "none")


def _touch_last_active(request: Request, conn: psycopg.Connection[Any], user_id: str) -> None:
    seen: dict[str, float] = request.app.state.last_active
    now = time.monotonic()
    if now - seen.get(user_id, -LAST_ACTIVE_INTERVAL) < LAST_ACTIVE_INTERVAL:
        return
    seen[user_id] = now
    conn.execute(
        'UPDATE "User" SET "lastActive" = now()'
        " WHERE id = %s AND \"lastActive\" < now() - interval '1 minute'",
        [user_id],
    )


def current_principal(request: Request, conn: ConnDep, settings: SettingsDep) -> Principal:
    """The signed-in user, with effective permissions; 401 without a live session."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    token, via = _token(request)
    if token is None:
        raise Unauthorized("sign in first: no session token (Authorization: Bearer or cookie)")
    principal = sessions.resolve(
        conn,
        token,
        idle_timeout=timedelta(minutes=settings.session_idle_minutes),
        via=via,
    )
    if principal is None:
        raise Unauthorized("the session is invalid, expired or revoked; sign in again")
    if via == "cookie" and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        expected = request.cookies.get(CSRF_COOKIE, "")
        if not expected or not secrets.compare_digest(sent, expected):
            raise Forbidden(
                f"missing or wrong {CSRF_HEADER} header for a cookie-authenticated write",
                details={"reason": "csrf"},
            )
    principal.permissions = request.app.state.permission_cache.get(
        conn, principal.user_id, principal.rbac_version
    )
    _touch_last_active(request, conn, principal.user_id)
    request.state.principal = principal
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]


class Public:
    """Marker: the route needs no session."""

    permission = None

    def __call__(self) -> None:
        return None


class Require:
    """The route needs a session and, unless permission is None, that permission."""

    def __init__(self, permission: str | None) -> None:
        self.permission = permission

    def __call__(self, request: Request, principal: CurrentUser, conn: ConnDep) -> Principal:
        if self.permission is not None and self.permission not in principal.permissions:
            audit.record(
                conn,
                actor_for(request, principal),
                "authz.denied",
                resource="permission",
                resource_id=self.permission,
                method=request.method,
                path=request.url.path,
            )
            conn.commit()  # the denial is recorded even though the request fails
            raise Forbidden(
                f"you need the {self.permission!r} permission",
                details={"permission": self.permission},
            )
        return principal


public = Depends(Public())
authenticated = Depends(Require(None))


def require(permission: str) -> Any:
    """Dependency: a signed-in user holding `permission` (403 otherwise)."""
    return Depends(Require(permission))
