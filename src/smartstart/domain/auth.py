"""Signing in and out, one's own password and sessions, and login throttling.

Rules (the API and the CLI both go through these functions):

- Login takes an email (compared case-insensitively) or a username (exact), and
  answers an unknown identifier and a wrong password with the same 401 after the
  same bcrypt work: an unknown user is checked against a dummy hash of the
  configured cost.
- A user whose status is not ACTIVE cannot sign in. Only once the password has
  been verified does the answer say so (403, `account_inactive`); with a wrong
  password such a user gets the same 401 as everyone else, so the status leaks
  to nobody who does not know the password.
- Throttling, per account and per client address, is checked before the
  password: after `MAX_FAILURES` (account) or `IP_MAX_FAILURES` (address)
  failures the key is locked for 2^(failures - threshold) seconds, capped at
  15 minutes, and every attempt meanwhile — even with the right password — gets
  429 with Retry-After. Attempts refused while locked do not count as failures.
  A key's count starts over after 15 quiet minutes (no failure and no lock).
  The account key is `account:<lower-cased email>` for an existing user (so
  alternating email and username does not double the allowance) and
  `account:<lower-cased identifier>` otherwise; the address key is `ip:<addr>`.
  A successful login clears the account key, never the address key (an attacker
  would otherwise reset it with a login of their own). The address allowance is
  larger than the account one because many people can share an address (NAT).
  Concurrent attempts are not serialised, so a burst can overshoot the threshold
  by its concurrency before the lock applies.
- Every attempt leaves exactly one audit row: `auth.login`, `auth.login_failed`
  (reason, identifier; never the password) or `auth.throttled`. A refused attempt
  raises, so its audit and throttle rows are committed before raising: these
  functions commit on the failure path, unlike the rest of the domain layer.
- A hash below the configured cost (or not `$2b$`) is replaced on login; the
  database trigger then ends the user's other sessions, as for any new hash.
"""

from __future__ import annotations

import base64
import binascii
import math
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from smartstart.config import Settings
from smartstart.domain import audit, passwords, sessions
from smartstart.domain.audit import Actor
from smartstart.domain.errors import Forbidden, Invalid, NotFound, TooManyRequests, Unauthorized
from smartstart.domain.permissions import effective_permissions

INVALID_CREDENTIALS = "invalid email/username or password"
MAX_FAILURES = 5
IP_MAX_FAILURES = 20
WINDOW = timedelta(minutes=15)
MAX_LOCK = timedelta(minutes=15)

USER_COLUMNS = (
    'id, email, username, name, "firstName", "lastName", role, level, status, xp,'
    ' reputation, "lastActive", "createdAt", "updatedAt"'
)
SESSION_COLUMNS = (
    'id, "userId", "createdAt", "expiresAt", "lastSeenAt", ip, "userAgent", "revokedAt"'
)


# -- lookups -----------------------------------------------------------------------


def _find_for_login(conn: psycopg.Connection[Any], identifier: str) -> dict[str, Any] | None:
    """The user an identifier names (with the password hash); an email match wins."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f'SELECT {USER_COLUMNS}, password FROM "User"'
            " WHERE lower(email) = lower(%s) OR username = %s"
            " ORDER BY (lower(email) = lower(%s)) DESC LIMIT 1",
            [identifier, identifier, identifier],
        )
        return cur.fetchone()


def public_user(row: dict[str, Any]) -> dict[str, Any]:
    """A user row without its password hash."""
    return {k: v for k, v in row.items() if k != "password"}


def find_user(conn: psycopg.Connection[Any], identifier: str) -> dict[str, Any]:
    """The user with this email (case-insensitive) or username; NotFound otherwise."""
    row = _find_for_login(conn, identifier)
    if row is None:
        raise NotFound("no user with this email or username", details={"user": identifier})
    return public_user(row)


# -- throttling --------------------------------------------------------------------


def account_key(identifier: str) -> str:
    return f"account:{identifier.strip().lower()}"


def ip_key(ip: str) -> str:
    return f"ip:{ip}"


def _locked_for(conn: psycopg.Connection[Any], keys: list[str]) -> tuple[int, list[str]]:
    """Seconds until every one of keys is unlocked (0 when none is), and the locked keys."""
    rows = conn.execute(
        'SELECT key, EXTRACT(EPOCH FROM "lockedUntil" - now())::float8 FROM "LoginThrottle"'
        ' WHERE key = ANY(%s) AND "lockedUntil" > now() ORDER BY key',
        [keys],
    ).fetchall()
    if not rows:
        return 0, []
    return max(1, math.ceil(max(r[1] for r in rows))), [r[0] for r in rows]


# A key's count starts over once it has been quiet (no failure, no lock) for WINDOW.
_QUIET = (
    'GREATEST("LoginThrottle"."lastFailureAt",'
    ' COALESCE("LoginThrottle"."lockedUntil", "LoginThrottle"."lastFailureAt"))'
    " < now() - %(window)s"
)
THROTTLE_FAILURE_SQL = f"""
INSERT INTO "LoginThrottle" (key, failures, "firstFailureAt", "lastFailureAt")
VALUES (%(key)s, 1, now(), now())
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN {_QUIET} THEN 1 ELSE "LoginThrottle".failures + 1 END,
    "firstFailureAt" = CASE WHEN {_QUIET} THEN now() ELSE "LoginThrottle"."firstFailureAt" END,
    "lockedUntil" = CASE WHEN {_QUIET} THEN NULL ELSE "LoginThrottle"."lockedUntil" END,
    "lastFailureAt" = now()
RETURNING failures
"""

THROTTLE_LOCK_SQL = """
UPDATE "LoginThrottle"
SET "lockedUntil" = "lastFailureAt" + LEAST(make_interval(secs => power(2, %(exp)s)), %(cap)s)
WHERE key = %(key)s
"""


def _record_failure(conn: psycopg.Connection[Any], keys: list[tuple[str, int]]) -> None:
    """Count one failure against each (key, threshold); lock the keys at or over it."""
    for key, threshold in keys:
        row = conn.execute(THROTTLE_FAILURE_SQL, {"key": key, "window": WINDOW}).fetchone()
        failures = int(row[0]) if row else 1
        if failures >= threshold:
            # capped well below float overflow: 2^20 s is already past the 15-minute cap
            exp = min(failures - threshold, 20)
            conn.execute(THROTTLE_LOCK_SQL, {"key": key, "exp": exp, "cap": MAX_LOCK})


def _throttle_keys(identifier: str, user: dict[str, Any] | None, ip: str | None) -> list[str]:
    keys = [account_key(user["email"] if user else identifier)]
    if ip:
        keys.append(ip_key(ip))
    return keys


def clear_throttle(
    conn: psycopg.Connection[Any],
    actor: Actor,
    *,
    email: str | None = None,
    ip: str | None = None,
) -> int:
    """Lift the login throttle of an account (email or username) and/or an address."""
    if not email and not ip:
        raise Invalid("give an email (or username) or an IP address to unlock")
    keys: list[str] = []
    if email:
        keys.append(account_key(email))
        row = _find_for_login(conn, email)
        if row is not None and account_key(row["email"]) not in keys:
            keys.append(account_key(row["email"]))
    if ip:
        keys.append(ip_key(ip.strip()))
    cur = conn.execute('DELETE FROM "LoginThrottle" WHERE key = ANY(%s)', [keys])
    audit.record(
        conn,
        actor,
        "auth.throttle_cleared",
        resource="throttle",
        resource_id=",".join(keys),
        keys=keys,
        cleared=cur.rowcount,
    )
    return cur.rowcount


# -- login / logout ----------------------------------------------------------------


def _fail(
    conn: psycopg.Connection[Any], actor: Actor, action: str, error: Exception, **details: Any
) -> Exception:
    """Record one audit row for a refused attempt, commit it, and hand back the error."""
    resource_id = details.pop("user_id", None)
    audit.record(conn, actor, action, resource="user", resource_id=resource_id, **details)
    conn.commit()  # the request fails, yet the attempt stays recorded
    return error


def login(
    conn: psycopg.Connection[Any],
    identifier: str,
    password: str,
    *,
    ip: str | None,
    user_agent: str | None,
    settings: Settings,
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Sign in: (token, session row, user). Unauthorized, Forbidden or TooManyRequests."""
    identifier = identifier.strip()
    anonymous = Actor.anonymous(ip, user_agent)
    user = _find_for_login(conn, identifier) if identifier else None
    keys = _throttle_keys(identifier, user, ip)
    user_id = user["id"] if user else None

    retry_after, locked = _locked_for(conn, keys)
    if retry_after:
        raise _fail(
            conn,
            anonymous,
            "auth.throttled",
            TooManyRequests(
                f"too many failed sign-ins; try again in {retry_after} s",
                retry_after=retry_after,
            ),
            user_id=user_id,
            identifier=identifier,
            locked=locked,
            retry_after=retry_after,
        )

    if not passwords.verify(password, user["password"] if user else None, settings.bcrypt_rounds):
        thresholds = [(k, IP_MAX_FAILURES if k.startswith("ip:") else MAX_FAILURES) for k in keys]
        _record_failure(conn, thresholds)
        raise _fail(
            conn,
            anonymous,
            "auth.login_failed",
            Unauthorized(INVALID_CREDENTIALS),
            user_id=user_id,
            identifier=identifier,
            reason="wrong_password" if user else "unknown_user",
        )
    assert user is not None  # verify is False without a user
    if user["status"] != "ACTIVE":
        raise _fail(
            conn,
            anonymous,
            "auth.login_failed",
            Forbidden(
                f"this account is {user['status']}, not ACTIVE; ask an administrator",
                details={"reason": "account_inactive", "status": user["status"]},
            ),
            user_id=user_id,
            identifier=identifier,
            reason="inactive",
            status=user["status"],
        )

    conn.execute('DELETE FROM "LoginThrottle" WHERE key = %s', [keys[0]])
    rehashed = passwords.needs_rehash(user["password"], settings.bcrypt_rounds)
    if rehashed:
        # before the session is made: the trigger ends sessions when the hash changes
        conn.execute(
            'UPDATE "User" SET password = %s WHERE id = %s',
            [passwords.hash_password(password, settings.bcrypt_rounds), user["id"]],
        )
    token, session = sessions.create(
        conn,
        user["id"],
        lifetime=timedelta(hours=settings.session_lifetime_hours),
        ip=ip,
        user_agent=user_agent,
    )
    audit.record(
        conn,
        Actor.user(user["id"], ip, user_agent),
        "auth.login",
        resource="session",
        resource_id=session["id"],
        identifier=identifier,
        rehashed=rehashed,
    )
    return token, session, public_user(user)


def logout(conn: psycopg.Connection[Any], actor: Actor, session_id: str) -> None:
    """End the actor's current session."""
    ended = sessions.revoke(conn, session_id, user_id=actor.user_id)
    audit.record(
        conn, actor, "auth.logout", resource="session", resource_id=session_id, ended=ended
    )


# -- one's own password ------------------------------------------------------------


def change_own_password(
    conn: psycopg.Connection[Any],
    actor: Actor,
    user_id: str,
    current: str,
    new: str,
    settings: Settings,
) -> tuple[str, dict[str, Any]]:
    """Replace one's password (the current one required); every session ends and a new
    one is returned (token, session row) for the caller.

    A wrong current password is 422 (a 401 would read as "signed out") and counts as
    a failed sign-in against the account's throttle.
    """
    passwords.validate(new, field="new_password")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute('SELECT id, email, password FROM "User" WHERE id = %s FOR UPDATE', [user_id])
        user = cur.fetchone()
    if user is None:
        raise NotFound("no such user", details={"id": user_id})
    key = account_key(user["email"])
    retry_after, locked = _locked_for(conn, [key])
    if retry_after:
        raise _fail(
            conn,
            actor,
            "auth.throttled",
            TooManyRequests(
                f"too many wrong passwords; try again in {retry_after} s", retry_after=retry_after
            ),
            user_id=user_id,
            locked=locked,
            retry_after=retry_after,
            operation="password_change",
        )
    if not passwords.verify(current, user["password"]):
        _record_failure(conn, [(key, MAX_FAILURES)])
        raise _fail(
            conn,
            actor,
            "auth.password_change_failed",
            Invalid("the current password is wrong", details={"field": "current_password"}),
            user_id=user_id,
            reason="wrong_current_password",
        )
    if current == new:
        raise Invalid(
            "the new password must differ from the current one",
            details={"field": "new_password"},
        )
    live = _count_live(conn, user_id, settings)
    # the "User_end_sessions" trigger ends every session of the user with this update
    conn.execute(
        'UPDATE "User" SET password = %s WHERE id = %s',
        [passwords.hash_password(new, settings.bcrypt_rounds), user_id],
    )
    token, session = sessions.create(
        conn,
        user_id,
        lifetime=timedelta(hours=settings.session_lifetime_hours),
        ip=actor.ip,
        user_agent=actor.user_agent,
    )
    audit.record(
        conn,
        actor,
        "auth.password_changed",
        resource="user",
        resource_id=user_id,
        sessions_ended=live,
        new_session=session["id"],
    )
    return token, session


# -- sessions ----------------------------------------------------------------------


def _idle(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.session_idle_minutes)


def _count_live(conn: psycopg.Connection[Any], user_id: str, settings: Settings) -> int:
    row = conn.execute(
        'SELECT count(*) FROM "Session" WHERE "userId" = %s AND "revokedAt" IS NULL'
        ' AND "expiresAt" > now() AND "lastSeenAt" > now() - %s',
        [user_id, _idle(settings)],
    ).fetchone()
    return int(row[0]) if row else 0


def encode_cursor(created_at: datetime, session_id: str) -> str:
    raw = f"{created_at.isoformat()}|{session_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(createdAt, id) from an opaque cursor; Invalid when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, session_id = raw.partition("|")
        created = datetime.fromisoformat(stamp)
        if not session_id or created.tzinfo is None:
            raise ValueError(cursor)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise Invalid("invalid cursor", details={"field": "cursor"}) from None
    return created, session_id


def list_user_sessions(
    conn: psycopg.Connection[Any],
    user_id: str,
    settings: Settings,
    *,
    include_ended: bool = False,
    limit: int | None = None,
    cursor: str | None = None,
) -> list[dict[str, Any]]:
    """A user's sessions, newest first, each with its `state` (active, revoked, expired,
    idle); only active ones unless include_ended. Page with cursor (see encode_cursor)."""
    clauses = ['"userId" = %(user)s']
    params: dict[str, Any] = {"user": user_id, "idle": _idle(settings)}
    if not include_ended:
        clauses.append(
            '"revokedAt" IS NULL AND "expiresAt" > now() AND "lastSeenAt" > now() - %(idle)s'
        )
    if cursor is not None:
        params["c_at"], params["c_id"] = decode_cursor(cursor)
        clauses.append('("createdAt", id) < (%(c_at)s, %(c_id)s)')
    query = (
        f"SELECT {SESSION_COLUMNS}, CASE"
        " WHEN \"revokedAt\" IS NOT NULL THEN 'revoked'"
        " WHEN \"expiresAt\" <= now() THEN 'expired'"
        " WHEN \"lastSeenAt\" <= now() - %(idle)s THEN 'idle'"
        " ELSE 'active' END AS state"
        f' FROM "Session" WHERE {" AND ".join(clauses)} ORDER BY "createdAt" DESC, id DESC'
    )
    if limit is not None:
        query += " LIMIT %(limit)s"
        params["limit"] = limit
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def get_session(conn: psycopg.Connection[Any], session_id: str) -> dict[str, Any]:
    """One session with its user's email; NotFound otherwise."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            'SELECT s.id, s."userId", u.email, s."createdAt", s."expiresAt", s."lastSeenAt",'
            ' s.ip, s."userAgent", s."revokedAt"'
            ' FROM "Session" s JOIN "User" u ON u.id = s."userId" WHERE s.id = %s',
            [session_id],
        )
        row = cur.fetchone()
    if row is None:
        raise NotFound("no such session", details={"id": session_id})
    return row


def revoke_session(
    conn: psycopg.Connection[Any], actor: Actor, session_id: str, *, user_id: str | None = None
) -> bool:
    """End one session (only if it belongs to user_id, when given: NotFound otherwise);
    False when it had already ended."""
    ended = sessions.revoke(conn, session_id, user_id=user_id)
    audit.record(
        conn,
        actor,
        "auth.session_revoked",
        resource="session",
        resource_id=session_id,
        ended=ended,
    )
    return ended


def revoke_all_sessions(conn: psycopg.Connection[Any], actor: Actor, user_id: str) -> int:
    """End every session of a user not already revoked; how many it ended."""
    count = sessions.revoke_all(conn, user_id)
    audit.record(
        conn, actor, "auth.sessions_revoked", resource="user", resource_id=user_id, ended=count
    )
    return count


# -- who am I ----------------------------------------------------------------------


def me(conn: psycopg.Connection[Any], user_id: str) -> dict[str, Any]:
    """The user, their roles, and each effective permission with the roles it comes from."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f'SELECT {USER_COLUMNS} FROM "User" WHERE id = %s', [user_id])
        user = cur.fetchone()
    if user is None:
        raise NotFound("no such user", details={"id": user_id})
    roles = [
        r[0]
        for r in conn.execute(
            'SELECT r.name FROM "UserRole" ur JOIN "Role" r ON r.id = ur."roleId"'
            ' WHERE ur."userId" = %s ORDER BY r.name',
            [user_id],
        )
    ]
    return {"user": user, "roles": roles, "permissions": effective_permissions(conn, user_id)}
