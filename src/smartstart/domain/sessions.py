"""Login sessions: opaque random tokens, stored only as SHA-256 hashes.

A token carries 256 bits of randomness, so a fast hash is safe (no need for
bcrypt); the database never holds anything that would let a reader log in.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Generic, TypedDict, TypeVar, cast

import psycopg
from psycopg.rows import dict_row

from smartstart.domain.audit import MAX_USER_AGENT, clip
from smartstart.domain.errors import NotFound
from smartstart.netaddr import ip_or_none

# lastSeenAt is refreshed at most this often: the idle timeout is precise to it.
TOUCH_INTERVAL = timedelta(seconds=60)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Principal:
    """The authenticated user behind a request, and how they authenticated."""

    user_id: str
    email: str
    username: str
    name: str | None
    role: str
    status: str
    session_id: str
    rbac_version: int
    via: str = "bearer"  # or "cookie"
    permissions: frozenset[str] = field(default_factory=frozenset)

    def can(self, permission: str) -> bool:
        return permission in self.permissions


class NewSession(TypedDict):
    """A session just made (its token is returned apart, once)."""

    id: str
    userId: str
    createdAt: datetime
    expiresAt: datetime
    lastSeenAt: datetime
    ip: str | None
    userAgent: str | None


def create(
    conn: psycopg.Connection[Any],
    user_id: str,
    *,
    lifetime: timedelta,
    ip: str | None = None,
    user_agent: str | None = None,
) -> tuple[str, NewSession]:
    """A new session; returns the token (shown once) and the session row."""
    token = new_token()
    ip = ip_or_none(ip)  # the column is inet: "testclient" and the like are stored as NULL
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            'INSERT INTO "Session" ("tokenHash", "userId", "expiresAt", ip, "userAgent")'
            " VALUES (%s, %s, now() + %s, %s, %s)"
            ' RETURNING id, "userId", "createdAt", "expiresAt", "lastSeenAt", ip, "userAgent"',
            [
                hash_token(token),
                user_id,
                lifetime,
                ip,
                clip(user_agent or "", MAX_USER_AGENT) or None,
            ],
        )
        row = cur.fetchone()
    assert row is not None
    return token, cast(NewSession, row)


RESOLVE_SQL = """
SELECT s.id, s."lastSeenAt", u.id, u.email, u.username, u.name, u.role, u.status,
       (SELECT version FROM rbac_version WHERE id = 1)
FROM "Session" s JOIN "User" u ON u.id = s."userId"
WHERE s."tokenHash" = %s
  AND s."revokedAt" IS NULL
  AND s."expiresAt" > now()
  AND s."lastSeenAt" > now() - %s
  AND u.status = 'ACTIVE'
"""


RESOLVE_WIDTH = 9  # columns of a RESOLVE_SQL row

TOUCH_SQL = 'UPDATE "Session" SET "lastSeenAt" = now() WHERE id = %s'


def _principal(row: tuple[Any, ...], via: str) -> tuple[Principal, bool]:
    """The principal of a RESOLVE_SQL row, and whether its lastSeenAt needs a touch."""
    session_id, last_seen, user_id, email, username, name, role, status, version = row
    principal = Principal(
        user_id=user_id,
        email=email,
        username=username,
        name=name,
        role=role,
        status=status,
        session_id=session_id,
        rbac_version=int(version or 0),
        via=via,
    )
    return principal, last_seen < datetime.now(last_seen.tzinfo) - TOUCH_INTERVAL


def resolve(
    conn: psycopg.Connection[Any], token: str, *, idle_timeout: timedelta, via: str = "bearer"
) -> Principal | None:
    """The principal behind a live token, or None (unknown, revoked, expired or idle)."""
    row = conn.execute(RESOLVE_SQL, [hash_token(token), idle_timeout]).fetchone()
    if row is None:
        return None
    principal, stale = _principal(row, via)
    if stale:
        conn.execute(TOUCH_SQL, [principal.session_id])
    return principal


async def aresolve(
    conn: psycopg.AsyncConnection[Any],
    token: str,
    *,
    idle_timeout: timedelta,
    via: str = "bearer",
) -> Principal | None:
    """`resolve` on an async connection."""
    cur = await conn.execute(RESOLVE_SQL, [hash_token(token), idle_timeout])
    row = await cur.fetchone()
    return None if row is None else await _atouched(conn, row, via)


async def _atouched(conn: psycopg.AsyncConnection[Any], row: Sequence[Any], via: str) -> Principal:
    """The principal of a RESOLVE_SQL row, its session's lastSeenAt refreshed when due."""
    principal, stale = _principal(tuple(row), via)
    if stale:
        await conn.execute(TOUCH_SQL, [principal.session_id])
    return principal


RowT = TypeVar("RowT")
# A rider only names its row's shape (it holds no row), so a Rider[X] is a Rider[X | None].
ShapeT = TypeVar("ShapeT", covariant=True)


@dataclass(frozen=True)
class Rider(Generic[ShapeT]):
    """A read of at most one row, sent in the same statement as the session lookup.

    The hottest reads thus cost one round trip, not two. `query` is SQL text with
    positional placeholders; its row is fetched whether or not the caller turns out to
    be allowed to see it, so the caller must check permissions before using it.
    """

    query: str
    params: Sequence[Any]
    columns: tuple[str, ...]  # the names of the query's columns, in order: RowT's keys


@lru_cache(maxsize=64)
def _ridden_sql(query: str) -> str:
    # "found" tells a missing row from one whose columns are all NULL. Built once per
    # query text, so psycopg's prepared-statement cache sees the same text every time.
    return (
        f"SELECT r.*, t.* FROM ({RESOLVE_SQL}) r"
        f" LEFT JOIN (SELECT true AS found, q.* FROM ({query}) q LIMIT 1) t ON true"
    )


async def aresolve_riding(
    conn: psycopg.AsyncConnection[Any],
    token: str,
    rider: Rider[RowT],
    *,
    idle_timeout: timedelta,
    via: str = "bearer",
) -> tuple[Principal, RowT | None] | None:
    """`aresolve` and the rider's row (None when it has none), in one statement."""
    cur = await conn.execute(
        _ridden_sql(rider.query), [hash_token(token), idle_timeout, *rider.params]
    )
    row = await cur.fetchone()
    if row is None:
        return None
    width = RESOLVE_WIDTH
    principal = await _atouched(conn, row[:width], via)
    if not row[width]:  # the "found" column
        return principal, None
    # Names from the rider rather than cur.description, which psycopg builds anew
    # at each access (a tenth of this request's time).
    return principal, cast(RowT, dict(zip(rider.columns, row[width + 1 :], strict=True)))


def revoke(conn: psycopg.Connection[Any], session_id: str, *, user_id: str | None = None) -> bool:
    """End one session (of user_id, when given); False if it was already ended."""
    query = 'UPDATE "Session" SET "revokedAt" = now() WHERE id = %s'
    params: list[Any] = [session_id]
    if user_id is not None:
        query += ' AND "userId" = %s'
        params.append(user_id)
    exists = conn.execute(
        'SELECT "revokedAt" IS NULL FROM "Session" WHERE id = %s'
        + (' AND "userId" = %s' if user_id is not None else ""),
        params,
    ).fetchone()
    if exists is None:
        raise NotFound("no such session", details={"id": session_id})
    conn.execute(query + ' AND "revokedAt" IS NULL', params)
    return bool(exists[0])


def revoke_all(conn: psycopg.Connection[Any], user_id: str) -> int:
    """End every live session of a user; how many it ended."""
    cur = conn.execute(
        'UPDATE "Session" SET "revokedAt" = now() WHERE "userId" = %s AND "revokedAt" IS NULL',
        [user_id],
    )
    return cur.rowcount
