"""`resolve_user`: the one way to find a user, by id, email (any case) or username.

Every face accepts any of the three wherever it names a user (CLI arguments, the
API's `{id}`). Roles and permissions resolve by id or name (`rbac.resolve_role`,
`rbac.resolve_permission`), stages by id or name (`journey.resolve_stage`).

Rows are read through `PUBLIC_COLUMNS` only: never the password hash.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any, TypedDict, cast

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from smartstart.domain import sessions
from smartstart.domain.errors import NotFound


class UserRow(TypedDict):
    """A user as every face sees it: the public columns, never the password hash."""

    id: str
    email: str
    username: str
    name: str | None
    firstName: str | None
    lastName: str | None
    role: str
    level: str
    status: str
    xp: int
    reputation: int
    lastActive: datetime
    createdAt: datetime
    updatedAt: datetime


PUBLIC_COLUMNS = (
    "id",
    "email",
    "username",
    "name",
    "firstName",
    "lastName",
    "role",
    "level",
    "status",
    "xp",
    "reputation",
    "lastActive",
    "createdAt",
    "updatedAt",
)
SELECT_COLUMNS = sql.SQL(", ").join(sql.Identifier("u", c) for c in PUBLIC_COLUMNS)
MAX_REF_LENGTH = 320  # ids, usernames and emails alike

# Text, composed once: psycopg would render a Composed again on every execute.
# By id: one primary-key lookup (the API's hot path rides it in the session lookup).
BY_ID_SQL = sql.SQL('SELECT {} FROM "User" u WHERE u.id = %s').format(SELECT_COLUMNS).as_string()
# By any reference: an id match wins, then an email; usernames cannot contain "@".
_BY_REF = sql.SQL(
    'SELECT {} FROM "User" u WHERE u.id = %(r)s OR lower(u.email) = lower(%(r)s)'
    " OR u.username = %(r)s ORDER BY (u.id = %(r)s) DESC LIMIT 1"
).format(SELECT_COLUMNS)
BY_REF_SQL = _BY_REF.as_string()
BY_REF_FOR_UPDATE_SQL = (_BY_REF + sql.SQL(" FOR UPDATE OF u")).as_string()


def usable(ref: object) -> bool:
    """Whether ref can name a user at all (PostgreSQL text refuses NUL)."""
    return isinstance(ref, str) and 0 < len(ref) <= MAX_REF_LENGTH and "\x00" not in ref


def not_found(ref: object) -> NotFound:
    shown = ref if usable(ref) else None
    return NotFound("no user with this id, email or username", details={"user": shown})


def resolve_user(conn: psycopg.Connection[Any], ref: str, *, lock: bool = False) -> UserRow:
    """The user ref names (id, email in any case, or username); NotFound otherwise.

    With lock, the row stays locked (FOR UPDATE) until the end of the transaction.
    """
    if not usable(ref):
        raise not_found(ref)
    ref = unicodedata.normalize("NFC", ref)  # emails are stored in NFC
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(BY_REF_FOR_UPDATE_SQL if lock else BY_REF_SQL, {"r": ref})
        row = cur.fetchone()
    if row is None:
        raise not_found(ref)
    return cast(UserRow, row)


async def aresolve_user(conn: psycopg.AsyncConnection[Any], ref: str) -> UserRow:
    """`resolve_user` on an async connection."""
    if not usable(ref):
        raise not_found(ref)
    ref = unicodedata.normalize("NFC", ref)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(BY_REF_SQL, {"r": ref})
        row = await cur.fetchone()
    if row is None:
        raise not_found(ref)
    return cast(UserRow, row)


def user_rider(ref: str) -> sessions.Rider[UserRow] | None:
    """The by-id read of ref riding on the session lookup (None when ref cannot be an id).

    A miss is not an answer: ref may be an email or a username (`resolve_user` then).
    """
    if not usable(ref) or "@" in ref:
        return None
    return sessions.Rider(BY_ID_SQL, (ref,), PUBLIC_COLUMNS)
