"""Signing in and out, one's own password and sessions.

Rules (the API and the CLI both go through these functions):

- Login takes an email (compared case-insensitively, after NFC normalisation) or a
  username (exact), and answers an unknown identifier and a wrong password with the
  same 401 after the same bcrypt work: an unknown user is checked against a dummy
  hash of the configured cost. An identifier holding spaces, control or invisible
  characters names no account: 422.
- A user whose status is not ACTIVE cannot sign in. Only once the password has
  been verified does the answer say so (403, `account_inactive`); with a wrong
  password such a user gets the same 401 as everyone else, so the status leaks
  to nobody who does not know the password.
- Throttling (`throttle`: per device, per account and address, per address, and per
  account for unknown devices) is checked before the password; a locked attempt gets
  429 with Retry-After, even with the right password. A success returns a new device
  token: the device's later attempts on the account are exempt from locks that
  others' failures caused.
- No database connection is held while bcrypt runs: login looks up and checks the
  throttle in one short transaction, hashes with none open, and records the outcome
  in a second one (a flood of sign-ins would otherwise hold every pooled connection).
  The caller hands in `transaction`, which opens a connection in a transaction that
  commits when the block ends normally: the refusals' audit and throttle rows are
  committed before the error is raised.
- Every attempt leaves exactly one audit row: `auth.login`, `auth.login_failed`
  (reason, identifier; never the password) or `auth.throttled`.
- A hash below the configured cost (or not `$2b$`) is replaced on login; the
  database trigger then ends the user's other sessions, as for any new hash.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict, cast

import psycopg
from psycopg.rows import dict_row

from smartstart.config import Settings
from smartstart.domain import audit, paging, passwords, sessions, throttle, users
from smartstart.domain.audit import Actor
from smartstart.domain.errors import (
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from smartstart.domain.permissions import effective_permissions
from smartstart.domain.resolve import BY_ID_SQL, PUBLIC_COLUMNS, UserRow, resolve_user

INVALID_CREDENTIALS = "invalid email/username or password"

USER_COLUMNS = ", ".join(f'"{c}"' for c in PUBLIC_COLUMNS)
SESSION_COLUMNS = (
    'id, "userId", "createdAt", "expiresAt", "lastSeenAt", ip, "userAgent", "revokedAt"'
)

# Opens a connection in a transaction, committed when the block ends normally and
# rolled back when it raises (`psycopg.connect`, or a pool's connection).
Transaction = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


# -- rows --------------------------------------------------------------------------


class SessionRow(sessions.NewSession):
    """One of a user's sessions as listed, with its state (active, revoked, expired, idle)."""

    revokedAt: datetime | None
    state: str


class SessionInfo(sessions.NewSession):
    """One session and its user's email."""

    email: str
    revokedAt: datetime | None


class LoginRow(UserRow):
    """A user as login reads them: with the password hash (never returned)."""

    password: str


class Me(TypedDict):
    """The signed-in user, their roles and effective permissions (with where each comes from)."""

    user: UserRow
    roles: list[str]
    permissions: dict[str, list[str]]  # permission -> the roles it comes from


@dataclass(frozen=True)
class RevokeSessionPlan:
    """What revoking one session would do (nothing when it has already ended)."""

    session: SessionInfo

    @property
    def live(self) -> bool:
        return self.session["revokedAt"] is None


@dataclass(frozen=True)
class RevokeAllPlan:
    """What revoking every session of a user would do."""

    user: UserRow
    live: int  # live sessions now


# -- lookups -----------------------------------------------------------------------


def _find_for_login(conn: psycopg.Connection[Any], identifier: str) -> LoginRow | None:
    """The user an identifier names (with the password hash); an email match wins."""
    identifier = unicodedata.normalize("NFC", identifier)  # as emails are stored
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f'SELECT {USER_COLUMNS}, password FROM "User"'
            " WHERE lower(email) = lower(%s) OR username = %s"
            " ORDER BY (lower(email) = lower(%s)) DESC LIMIT 1",
            [identifier, identifier, identifier],
        )
        return cast(LoginRow | None, cur.fetchone())


def public_user(row: LoginRow) -> UserRow:
    """A user row without its password hash."""
    return cast(UserRow, {k: v for k, v in row.items() if k != "password"})


# -- throttle reset ----------------------------------------------------------------


def clear_throttle(
    conn: psycopg.Connection[Any],
    actor: Actor,
    *,
    email: str | None = None,
    ip: str | None = None,
) -> int:
    """Lift the login throttle of an account (email or username: its devices too) and/or
    an address (its pairs with every account too); how many counters it deleted."""
    if not email and not ip:
        raise Invalid("give an email (or username) or an IP address to unlock")
    accounts: list[str] = []
    user_id = None
    if email:
        email = users.login_identifier(email)
        accounts.append(email)
        row = _find_for_login(conn, email)
        if row is not None:
            accounts.append(row["email"])
            user_id = row["id"]
    cleared = throttle.clear(
        conn, accounts=accounts, user_id=user_id, ip=ip.strip() if ip else None
    )
    target = [throttle.account_key(a) for a in dict.fromkeys(a.lower() for a in accounts)]
    if ip:
        target.append(throttle.ip_key(ip.strip()))
    audit.record(
        conn,
        actor,
        "auth.throttle_cleared",
        resource="throttle",
        resource_id=",".join(target),
        keys=cleared,
        cleared=len(cleared),
    )
    return len(cleared)


# -- login / logout ----------------------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    """A successful login: the session token (shown once), its row, the user, and a new
    device token for the device cookie."""

    token: str
    session: sessions.NewSession
    user: UserRow
    device: str


@dataclass(frozen=True)
class _Attempt:
    identifier: str
    user: LoginRow | None
    keys: list[throttle.Key]
    trusted: bool  # a genuine device token of this account came with it
    actor: Actor

    @property
    def user_id(self) -> str | None:
        return self.user["id"] if self.user else None


def _refusal(conn: psycopg.Connection[Any], attempt: _Attempt, action: str, **details: Any) -> None:
    audit.record(
        conn,
        attempt.actor,
        action,
        resource="user",
        resource_id=attempt.user_id,
        identifier=attempt.identifier,
        **details,
    )


def _begin(
    conn: psycopg.Connection[Any],
    identifier: str,
    actor: Actor,
    device: str | None,
    settings: Settings,
) -> tuple[_Attempt, TooManyRequests | None]:
    """Look the user up and check the throttle; a refusal is audited here."""
    user = _find_for_login(conn, identifier) if identifier else None
    device_id = throttle.device_id(settings, device, user["id"]) if user else None
    keys = throttle.keys_for(
        user["email"] if user else identifier,
        actor.ip,
        user_id=user["id"] if user else None,
        device=device_id,
    )
    attempt = _Attempt(identifier, user, keys, device_id is not None, actor)
    retry_after, locked = throttle.locked_for(conn, keys)
    if not retry_after:
        return attempt, None
    _refusal(
        conn,
        attempt,
        "auth.throttled",
        locked=locked,
        retry_after=retry_after,
        device=attempt.trusted,
    )
    return attempt, TooManyRequests(
        f"too many failed sign-ins; try again in {retry_after} s", retry_after=retry_after
    )


def _settle(
    conn: psycopg.Connection[Any],
    attempt: _Attempt,
    verified: bool,
    new_hash: str | None,
    settings: Settings,
) -> SignedIn | DomainError:
    """Record the outcome of a checked password: a session, or the failure to raise."""
    current = None
    if verified and attempt.user is not None:
        # Read again, locked: the password may have changed (or the user gone) while
        # bcrypt ran, and a password change now waits for this session to exist, so
        # its trigger ends it.
        current = conn.execute(
            'SELECT password, status FROM "User" WHERE id = %s FOR NO KEY UPDATE',
            [attempt.user_id],
        ).fetchone()
    if current is None or attempt.user is None or current[0] != attempt.user["password"]:
        throttle.record_failure(conn, attempt.keys)
        reason = "wrong_password" if attempt.user else "unknown_user"
        _refusal(conn, attempt, "auth.login_failed", reason=reason, device=attempt.trusted)
        return Unauthorized(INVALID_CREDENTIALS)
    status = current[1]
    if status != "ACTIVE":
        _refusal(conn, attempt, "auth.login_failed", reason="inactive", status=status)
        return Forbidden(
            f"this account is {status}, not ACTIVE; ask an administrator",
            details={"reason": "account_inactive", "status": status},
        )
    user_id = attempt.user["id"]
    throttle.record_success(conn, attempt.keys)
    if new_hash is not None:
        # before the session is made: the trigger ends sessions when the hash changes
        conn.execute('UPDATE "User" SET password = %s WHERE id = %s', [new_hash, user_id])
    token, session = sessions.create(
        conn,
        user_id,
        lifetime=timedelta(hours=settings.session_lifetime_hours),
        ip=attempt.actor.ip,
        user_agent=attempt.actor.user_agent,
    )
    audit.record(
        conn,
        Actor.user(user_id, attempt.actor.ip, attempt.actor.user_agent),
        "auth.login",
        resource="session",
        resource_id=session["id"],
        identifier=attempt.identifier,
        rehashed=new_hash is not None,
        device=attempt.trusted,
    )
    user = public_user(attempt.user)
    user["status"] = status  # as read now, locked
    return SignedIn(token, session, user, throttle.issue_device(settings, user_id))


def login(
    transaction: Transaction,
    identifier: str,
    password: str,
    *,
    ip: str | None,
    user_agent: str | None,
    settings: Settings,
    device: str | None = None,
) -> SignedIn:
    """Sign in (device: the device token from an earlier login, if any).
    Invalid, Unauthorized, Forbidden or TooManyRequests otherwise."""
    identifier = users.login_identifier(identifier)
    with transaction() as conn:
        attempt, refused = _begin(
            conn, identifier, Actor.anonymous(ip, user_agent), device, settings
        )
    if refused is not None:
        raise refused
    hashed = attempt.user["password"] if attempt.user else None
    verified = passwords.verify(password, hashed, settings.bcrypt_rounds)
    new_hash = None
    if verified and hashed and passwords.needs_rehash(hashed, settings.bcrypt_rounds):
        new_hash = passwords.hash_password(password, settings.bcrypt_rounds)
    with transaction() as conn:
        outcome = _settle(conn, attempt, verified, new_hash, settings)
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def logout(conn: psycopg.Connection[Any], actor: Actor, session_id: str) -> None:
    """End the actor's current session."""
    ended = sessions.revoke(conn, session_id, user_id=actor.user_id)
    audit.record(
        conn, actor, "auth.logout", resource="session", resource_id=session_id, ended=ended
    )


# -- one's own password ------------------------------------------------------------


def apart(conn: psycopg.Connection[Any]) -> Transaction:
    """Transactions on new connections to conn's database: for what must outlive the
    rollback of conn's transaction (a refusal's audit row and throttle count)."""
    info = conn.info

    @contextmanager
    def transaction() -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(info.dsn, password=info.password, connect_timeout=5) as other:
            yield other  # committed when the block ends normally

    return transaction


def _fail(
    refusals: Transaction,
    actor: Actor,
    action: str,
    error: Exception,
    *,
    failed: list[throttle.Key] | None = None,
    **details: Any,
) -> Exception:
    """Record a refused attempt (and count it against `failed`) in a transaction of its
    own, so the request's rollback keeps it; hand back the error."""
    resource_id = details.pop("user_id", None)
    with refusals() as conn:
        if failed:
            throttle.record_failure(conn, failed)
        audit.record(conn, actor, action, resource="user", resource_id=resource_id, **details)
    return error


def change_own_password(
    conn: psycopg.Connection[Any],
    actor: Actor,
    user_id: str,
    current: str,
    new: str,
    settings: Settings,
    *,
    refusals: Transaction,
) -> tuple[str, sessions.NewSession]:
    """Replace one's password (the current one required); every session ends and a new
    one is returned (token, session row) for the caller. A refusal is recorded through
    `refusals` (e.g. `apart(conn)`), never by committing conn.

    A wrong current password is 422 (a 401 would read as "signed out") and counts
    against the user's password-change throttle (not the sign-in one: a stolen session
    must not be able to lock the owner out).
    """
    passwords.validate(new, field="new_password")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute('SELECT id, password FROM "User" WHERE id = %s FOR UPDATE', [user_id])
        user = cur.fetchone()
    if user is None:
        raise NotFound("no such user", details={"id": user_id})
    keys = [throttle.Key(throttle.password_key(user_id), throttle.PASSWORD_MAX_FAILURES)]
    retry_after, locked = throttle.locked_for(conn, keys)
    if retry_after:
        raise _fail(
            refusals,
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
        raise _fail(
            refusals,
            actor,
            "auth.password_change_failed",
            Invalid("the current password is wrong", details={"field": "current_password"}),
            failed=keys,
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


def list_user_sessions(
    conn: psycopg.Connection[Any],
    user_id: str,
    settings: Settings,
    *,
    include_ended: bool = False,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> paging.Page[SessionRow]:
    """A page of a user's sessions, newest first, each with its `state` (active, revoked,
    expired, idle); only active ones unless include_ended."""
    limit = paging.check_limit(limit)
    keyset = paging.Keyset(
        "sessions", ("ts", "str"), {"user": user_id, "include_ended": include_ended}
    )
    after = keyset.after(settings, cursor)
    clauses = ['"userId" = %(user)s']
    params: dict[str, Any] = {"user": user_id, "idle": _idle(settings), "limit": limit + 1}
    if not include_ended:
        clauses.append(
            '"revokedAt" IS NULL AND "expiresAt" > now() AND "lastSeenAt" > now() - %(idle)s'
        )
    if after is not None:
        params["c_at"], params["c_id"] = after
        clauses.append('("createdAt", id) < (%(c_at)s, %(c_id)s)')
    query = (
        f"SELECT {SESSION_COLUMNS}, CASE"
        " WHEN \"revokedAt\" IS NOT NULL THEN 'revoked'"
        " WHEN \"expiresAt\" <= now() THEN 'expired'"
        " WHEN \"lastSeenAt\" <= now() - %(idle)s THEN 'idle'"
        " ELSE 'active' END AS state"
        f' FROM "Session" WHERE {" AND ".join(clauses)} ORDER BY "createdAt" DESC, id DESC'
        " LIMIT %(limit)s"
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        rows = cast(list[SessionRow], cur.fetchall())
    return keyset.page(settings, rows, limit, lambda r: (r["createdAt"], r["id"]))


def get_session(conn: psycopg.Connection[Any], session_id: str) -> SessionInfo:
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
    return cast(SessionInfo, row)


def plan_revoke_session(conn: psycopg.Connection[Any], session_id: str) -> RevokeSessionPlan:
    """What `revoke_session` would do now."""
    return RevokeSessionPlan(get_session(conn, session_id))


def plan_revoke_all(
    conn: psycopg.Connection[Any], user_ref: str, settings: Settings
) -> RevokeAllPlan:
    """What `revoke_all_sessions` would do now, for the user ref names."""
    user = resolve_user(conn, user_ref)
    return RevokeAllPlan(user, _count_live(conn, user["id"], settings))


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


def me(conn: psycopg.Connection[Any], user_id: str) -> Me:
    """The user, their roles, and each effective permission with the roles it comes from."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(BY_ID_SQL, [user_id])
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
    return {
        "user": cast(UserRow, user),
        "roles": roles,
        "permissions": effective_permissions(conn, user_id),
    }
