"""User accounts: listing, profile changes, status, passwords, deletion, XP and reputation.

Every function takes the caller's connection and never commits; every write
records exactly one audit row. No function ever returns or audits the password
hash: rows are read through `PUBLIC_COLUMNS` only.

Deletion is HARD: the guide's schema has no "deletedAt" column, a soft-deleted
row would keep the person's personal data and hold their email and username
forever, and every query would have to remember to skip it. Reversible removal
already exists as `deactivate` (status INACTIVE: no login, sessions ended).
`delete` removes the row; the database cascades its sessions, journey states and
role assignments, and the audit row keeps the before-image (minus secrets).

Every write takes an `Actor` and a user reference (id, email or username, see
`resolve.resolve_user`) and asks `authorize` first: the permission, and the
"outranked" rule (no change to a user who holds permissions the actor lacks, no
role that grants what the actor lacks). An administrator's password reset is
refused on one's own account: that takes the current password (`POST
/api/auth/password`), so a stolen session cannot lock its owner out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row

from smartstart.config import Settings
from smartstart.db.models import LEVELS, SEARCH_TEXT, USER_STATUSES, level_for
from smartstart.domain import audit, guards, paging, passwords
from smartstart.domain.actor import Actor
from smartstart.domain.authorize import authorize
from smartstart.domain.errors import Conflict, Invalid, NotFound
from smartstart.domain.paging import Page
from smartstart.domain.resolve import PUBLIC_COLUMNS as PUBLIC_COLUMNS
from smartstart.domain.resolve import resolve_user

_SELECT = sql.SQL(", ").join(sql.Identifier("u", c) for c in PUBLIC_COLUMNS)
_RETURNING = sql.SQL(", ").join(sql.Identifier(c) for c in PUBLIC_COLUMNS)

LEVEL_NAMES = tuple(name for name, _ in LEVELS)
INT4_MAX = 2**31 - 1
MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254
MAX_SEARCH_LENGTH = 200
# Shorter searches match the start of the email or username (trigrams need three).
MIN_SUBSTRING_SEARCH = 3
MAX_REASON_LENGTH = 500
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,49}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")  # the same rule as the table's CHECK
# Unicode categories no email or sign-in identifier may hold: controls, format characters
# (zero-width spaces and joiners, bidi marks), lone surrogates, spaces and separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
PROFILE_FIELDS = ("name", "firstName", "lastName", "username")
UPDATE_FIELDS = ("email", "username", "name", "firstName", "lastName", "role", "status")
_NULLABLE = frozenset({"name", "firstName", "lastName"})

# The unique constraints of "User", by name, and the field each one protects.
_CONSTRAINT_FIELDS = {"User_email_lower_key": "email", "User_username_key": "username"}

# Sort keys: expression and cursor value type. Only these constants ever reach the SQL.
SORTS: dict[str, tuple[sql.Composable, paging.KeyKind]] = {
    "createdAt": (sql.SQL('u."createdAt"'), "ts"),
    "email": (sql.SQL("lower(u.email)"), "str"),
    "username": (sql.SQL("u.username"), "str"),
    "xp": (sql.SQL("u.xp"), "int"),
    "lastActive": (sql.SQL('u."lastActive"'), "ts"),
}
ORDERS = ("asc", "desc")
# Each level's XP range [low, high): high is the next level's threshold (None: no limit).
_LEVEL_RANGES: dict[str, tuple[int, int | None]] = {
    name: (low, LEVELS[i + 1][1] if i + 1 < len(LEVELS) else None)
    for i, (name, low) in enumerate(LEVELS)
}


@dataclass(frozen=True)
class UserFilter:
    """What `list_users` selects: a search text and exact filters (None: any)."""

    q: str | None = None
    role: str | None = None
    status: str | None = None
    level: str | None = None


# -- validation -------------------------------------------------------------------


def _text(value: Any, field: str, *, max_length: int, nullable: bool = False) -> str | None:
    """A string field checked for type, NUL bytes and length (None allowed when nullable)."""
    if value is None:
        if nullable:
            return None
        raise Invalid(f"{field} cannot be null", details={"field": field})
    if not isinstance(value, str):
        raise Invalid(f"{field} must be a string", details={"field": field})
    if "\x00" in value:
        raise Invalid(f"{field} cannot contain NUL characters", details={"field": field})
    if len(value) > max_length:
        raise Invalid(f"{field} is longer than {max_length} characters", details={"field": field})
    return value


def _visible(text: str, field: str) -> str:
    """text in NFC; Invalid when it holds a control, format or space character.

    Such characters make look-alike addresses (a zero-width space, NFD's separate
    accents) that are different accounts to the database but the same to a person.
    """
    text = unicodedata.normalize("NFC", text)
    if any(ch.isspace() or unicodedata.category(ch) in _INVISIBLE for ch in text):
        raise Invalid(
            f"{field} cannot contain spaces, control or invisible characters",
            details={"field": field},
        )
    return text


def _email(value: Any) -> str:
    """An email as it is stored and compared: NFC, visible characters only."""
    email = _text(value, "email", max_length=MAX_EMAIL_LENGTH)
    assert email is not None
    email = _visible(email, "email")
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_RE.match(email):
        raise Invalid("email is not a valid address", details={"field": "email"})
    return email


def login_identifier(value: str) -> str:
    """A sign-in identifier (email or username) in the form accounts are looked up by."""
    return _visible(value.strip(), "identifier")


def _username(value: Any) -> str:
    username = _text(value, "username", max_length=50)
    assert username is not None
    if not USERNAME_RE.match(username):
        raise Invalid(
            "username must be 2 to 50 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit",
            details={"field": "username"},
        )
    return username


def _status(value: Any) -> str:
    if value not in USER_STATUSES:
        raise Invalid(
            f"status must be one of {', '.join(USER_STATUSES)}",
            details={"field": "status", "allowed": list(USER_STATUSES)},
        )
    return str(value)


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{field} must be an integer", details={"field": field})
    if not low <= value <= high:
        raise Invalid(f"{field} must be between {low} and {high}", details={"field": field})
    return value


def _reason(value: Any, *, required: bool) -> str | None:
    reason = _text(value, "reason", max_length=MAX_REASON_LENGTH, nullable=not required)
    if required and not (reason or "").strip():
        raise Invalid("a reason is required", details={"field": "reason"})
    return reason


def _valid_id(user_id: Any) -> bool:
    return isinstance(user_id, str) and 0 < len(user_id) <= MAX_ID_LENGTH and "\x00" not in user_id


def _not_found(user_id: Any) -> NotFound:
    shown = user_id if _valid_id(user_id) else None
    return NotFound("no such user", details={"id": shown})


def _conflict(e: pg_errors.UniqueViolation) -> Conflict:
    field = _CONSTRAINT_FIELDS.get(e.diag.constraint_name or "")
    if field is None:
        return Conflict("the user conflicts with an existing one")
    return Conflict(f"a user with this {field} already exists", field=field)


def _refused(e: pg_errors.IntegrityError) -> Invalid:
    """A CHECK or foreign key the checks above let through (the database has the last word)."""
    constraint = e.diag.constraint_name or ""
    field = next((f for f in UPDATE_FIELDS + ("xp",) if f in constraint.split("_")), None)
    return Invalid(
        f"the database refused the value ({constraint or 'constraint'})",
        details={"field": field, "constraint": constraint},
    )


# -- reads ------------------------------------------------------------------------


def escape_like(text: str) -> str:
    """text with LIKE's wildcards and escape character taken literally (ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_users(
    conn: psycopg.Connection[Any],
    filters: UserFilter | None = None,
    *,
    settings: Settings,
    sort: str = "createdAt",
    order: str = "desc",
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    """A page of users (keyset pagination: no duplicates or gaps while rows change)."""
    f = filters or UserFilter()
    if sort not in SORTS:
        raise Invalid(
            f"sort must be one of {', '.join(SORTS)}",
            details={"field": "sort", "allowed": list(SORTS)},
        )
    if order not in ORDERS:
        raise Invalid("order must be asc or desc", details={"field": "order"})
    limit = paging.check_limit(limit)
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    q = _text(f.q, "q", max_length=MAX_SEARCH_LENGTH, nullable=True)
    if q and len(q) >= MIN_SUBSTRING_SEARCH:
        # The expression of the trigram index (migration 0004), so the index serves it.
        clauses.append(sql.SQL(SEARCH_TEXT + " ILIKE %s"))
        params.append(f"%{escape_like(q)}%")
    elif q:
        # Too short for trigrams: a substring would read every row; a prefix uses an index.
        clauses.append(sql.SQL("(lower(u.email) LIKE %s OR lower(u.username) LIKE %s)"))
        params.extend([f"{escape_like(q.lower())}%"] * 2)
    if f.role is not None:
        role = _text(f.role, "role", max_length=MAX_NAME_LENGTH)
        # The role's id as a value (not a join) lets the planner see how many hold it:
        # a rare role starts from its holders, a common one from the sort order.
        found = conn.execute('SELECT id FROM "Role" WHERE name = %s', [role]).fetchone()
        # Primary or additional: the trigger keeps the primary role in "UserRole" too.
        clauses.append(
            sql.SQL(
                'EXISTS (SELECT 1 FROM "UserRole" ur WHERE ur."userId" = u.id AND ur."roleId" = %s)'
            )
        )
        params.append(found[0] if found else None)
    if f.status is not None:
        clauses.append(sql.SQL("u.status = %s"))
        params.append(_status(f.status))
    if f.level is not None:
        if f.level not in LEVEL_NAMES:
            raise Invalid(
                f"level must be one of {', '.join(LEVEL_NAMES)}",
                details={"field": "level", "allowed": list(LEVEL_NAMES)},
            )
        # The trigger keeps level = level_for(xp): the level's XP range lets the (xp, id)
        # index serve a level filter and a sort by XP together.
        clauses.append(sql.SQL("u.level = %s AND u.xp >= %s"))
        params.extend([f.level, _LEVEL_RANGES[f.level][0]])
        if _LEVEL_RANGES[f.level][1] is not None:
            clauses.append(sql.SQL("u.xp < %s"))
            params.append(_LEVEL_RANGES[f.level][1])
    key, kind = SORTS[sort]
    keyset = paging.Keyset(
        "users",
        (kind, "str"),
        {
            "sort": sort,
            "order": order,
            "q": q,
            "role": f.role,
            "status": f.status,
            "level": f.level,
        },
    )
    after = keyset.after(settings, cursor)
    if after is not None:
        op = sql.SQL(">") if order == "asc" else sql.SQL("<")
        clauses.append(sql.SQL("({}, u.id) {} (%s, %s)").format(key, op))
        params.extend(after)
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("")
    direction = sql.SQL("ASC") if order == "asc" else sql.SQL("DESC")
    query = sql.SQL(
        'SELECT {cols}, {key} AS "_key" FROM "User" u{where}'
        " ORDER BY {key} {dir}, u.id {dir} LIMIT %s"
    ).format(cols=_SELECT, key=key, where=where, dir=direction)
    with conn.cursor(row_factory=dict_row) as cur:
        # Never prepared: a generic plan cannot tell a rare role or search from a common
        # one, and would walk a million rows for the rare ones (planning costs ~0.2 ms).
        cur.execute(query, [*params, limit + 1], prepare=False)
        rows = cur.fetchall()
    page = keyset.page(settings, rows, limit, lambda r: (r["_key"], r["id"]))
    for row in page.items:
        del row["_key"]
    return page


def delete_impact(conn: psycopg.Connection[Any], ref: str) -> dict[str, Any]:
    """What deleting the user would remove with it (for confirmations and --dry-run)."""
    user = resolve_user(conn, ref)
    user_id = user["id"]
    row = conn.execute(
        'SELECT (SELECT count(*) FROM "Session" WHERE "userId" = %(id)s),'
        ' (SELECT count(*) FROM "Session" WHERE "userId" = %(id)s AND "revokedAt" IS NULL'
        ' AND "expiresAt" > now()),'
        ' (SELECT count(*) FROM "UserJourneyState" WHERE "userId" = %(id)s),'
        ' (SELECT count(*) FROM "UserRole" WHERE "userId" = %(id)s)',
        {"id": user_id},
    ).fetchone()
    assert row is not None
    return {
        "user": user,
        "sessions": int(row[0]),
        "activeSessions": int(row[1]),
        "journeyStates": int(row[2]),
        "roleAssignments": int(row[3]),
    }


# -- guards -----------------------------------------------------------------------


def role_permissions(conn: psycopg.Connection[Any], role: str) -> set[str]:
    """The permissions a role grants; Invalid (field role) when no such role exists."""
    rows = conn.execute(
        'SELECT p.name FROM "Role" r LEFT JOIN "RolePermission" rp ON rp."roleId" = r.id'
        ' LEFT JOIN "Permission" p ON p.id = rp."permissionId" WHERE r.name = %s',
        [role],
    ).fetchall()
    if not rows:
        raise Invalid(f"no such role: {role!r}", details={"field": "role"})
    return {r[0] for r in rows if r[0] is not None}


# -- writes -----------------------------------------------------------------------


def create(
    conn: psycopg.Connection[Any],
    actor: Actor,
    *,
    email: str,
    username: str,
    password: str,
    name: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    role: str = "MEMBER",
    status: str = "ACTIVE",
    rounds: int = passwords.DEFAULT_ROUNDS,
) -> dict[str, Any]:
    """A new user; Conflict(field) on a taken email (any case) or username."""
    values = {
        "email": _email(email),
        "username": _username(username),
        "name": _text(name, "name", max_length=MAX_NAME_LENGTH, nullable=True),
        "firstName": _text(first_name, "firstName", max_length=MAX_NAME_LENGTH, nullable=True),
        "lastName": _text(last_name, "lastName", max_length=MAX_NAME_LENGTH, nullable=True),
        "role": _text(role, "role", max_length=MAX_NAME_LENGTH),
        "status": _status(status),
    }
    passwords.validate(password)
    role_grants = role_permissions(conn, str(values["role"]))
    authorize(conn, actor, "users:write", grants=role_grants)
    values["password"] = passwords.hash_password(password, rounds)
    query = sql.SQL('INSERT INTO "User" ({}) VALUES ({}) RETURNING {}').format(
        sql.SQL(", ").join(sql.Identifier(k) for k in values),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
        _RETURNING,
    )
    try:
        # A savepoint: a conflict leaves the caller's transaction usable.
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, list(values.values()))
            user = cur.fetchone()
    except pg_errors.UniqueViolation as e:
        raise _conflict(e) from None
    except (pg_errors.CheckViolation, pg_errors.ForeignKeyViolation) as e:
        raise _refused(e) from None
    assert user is not None
    audit.record(conn, actor, "users.create", resource="user", resource_id=user["id"], after=user)
    return user


def _apply(
    conn: psycopg.Connection[Any], user_id: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """UPDATE the given columns (names from a whitelist) and return the new public row."""
    assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in changes)
    query = sql.SQL('UPDATE "User" SET {} WHERE id = %s RETURNING {}').format(
        assignments, _RETURNING
    )
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, [*changes.values(), user_id])
            row = cur.fetchone()
    except pg_errors.UniqueViolation as e:
        raise _conflict(e) from None
    except (pg_errors.CheckViolation, pg_errors.ForeignKeyViolation) as e:
        raise _refused(e) from None
    if row is None:
        raise _not_found(user_id)
    return row


def _validate_changes(changes: Mapping[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise Invalid(
            f"cannot change {', '.join(unknown)}", details={"fields": unknown, "allowed": allowed}
        )
    clean: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "email":
            clean[key] = _email(value)
        elif key == "username":
            clean[key] = _username(value)
        elif key == "status":
            clean[key] = _status(value)
        elif key == "role":
            clean[key] = _text(value, "role", max_length=MAX_NAME_LENGTH)
        else:
            clean[key] = _text(value, key, max_length=MAX_NAME_LENGTH, nullable=key in _NULLABLE)
    return clean


def update(
    conn: psycopg.Connection[Any], actor: Actor, ref: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Change email, username, names, role or status (the keys present in changes)."""
    clean = _validate_changes(changes, UPDATE_FIELDS)
    before = resolve_user(conn, ref, lock=True)
    user_id = before["id"]
    if not clean:
        raise Invalid("nothing to change", details={"allowed": list(UPDATE_FIELDS)})
    new_role = "role" in clean and clean["role"] != before["role"]
    grants = role_permissions(conn, clean["role"]) if new_role else set()
    authorize(conn, actor, "users:write", user_id, grants=grants)
    if new_role and before["role"] == guards.SUPER_ADMIN:
        guards.ensure_not_last_super_admin(conn, user_id)
    if clean.get("status", "ACTIVE") != "ACTIVE" and before["status"] == "ACTIVE":
        guards.ensure_not_last_super_admin(conn, user_id)
    after = _apply(conn, user_id, clean)
    audit.record(
        conn,
        actor,
        "users.update",
        resource="user",
        resource_id=user_id,
        before=before,
        after=after,
        fields=sorted(clean),
    )
    return after


def update_profile(
    conn: psycopg.Connection[Any], actor: Actor, ref: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """A user's change of their own profile: names and username only."""
    clean = _validate_changes(changes, PROFILE_FIELDS)
    before = resolve_user(conn, ref, lock=True)
    user_id = before["id"]
    if user_id != actor.user_id:
        authorize(conn, actor, "users:write", user_id)
    if not clean:
        raise Invalid("nothing to change", details={"allowed": list(PROFILE_FIELDS)})
    after = _apply(conn, user_id, clean)
    audit.record(
        conn,
        actor,
        "users.update_profile",
        resource="user",
        resource_id=user_id,
        before=before,
        after=after,
        fields=sorted(clean),
    )
    return after


SELF_RESET_REFUSED = (
    "you cannot reset your own password here: change it with your current password"
    " (POST /api/auth/password)"
)
_STATUS_ACTIONS = {"SUSPENDED": "suspend", "ACTIVE": "activate", "INACTIVE": "deactivate"}


def set_status(
    conn: psycopg.Connection[Any], actor: Actor, ref: str, status: str
) -> dict[str, Any]:
    """Suspend, activate or deactivate; leaving ACTIVE ends every session (trigger)."""
    _status(status)
    before = resolve_user(conn, ref, lock=True)
    user_id = before["id"]
    authorize(conn, actor, "users:write", user_id)
    if status != "ACTIVE" and before["status"] == "ACTIVE":
        guards.ensure_not_last_super_admin(conn, user_id)
    after = _apply(conn, user_id, {"status": status})
    verb = _STATUS_ACTIONS.get(status, "status")
    audit.record(
        conn,
        actor,
        f"users.{verb}",
        resource="user",
        resource_id=user_id,
        before=before,
        after=after,
    )
    return after


def suspend(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> dict[str, Any]:
    """Status SUSPENDED: no login, every session ended."""
    return set_status(conn, actor, ref, "SUSPENDED")


def activate(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> dict[str, Any]:
    """Status ACTIVE: the user may sign in again."""
    return set_status(conn, actor, ref, "ACTIVE")


def deactivate(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> dict[str, Any]:
    """Status INACTIVE (the reversible alternative to delete): no login, sessions ended."""
    return set_status(conn, actor, ref, "INACTIVE")


def set_password(
    conn: psycopg.Connection[Any],
    actor: Actor,
    ref: str,
    password: str,
    *,
    rounds: int = passwords.DEFAULT_ROUNDS,
) -> dict[str, Any]:
    """An administrator's reset of another user's password; ends every session (trigger)."""
    passwords.validate(password)
    user_id = resolve_user(conn, ref)["id"]
    authorize(conn, actor, "users:write", user_id, not_on_self=SELF_RESET_REFUSED)
    # Hashed before the row is locked: bcrypt takes a quarter of a second at cost 12.
    hashed = passwords.hash_password(password, rounds)
    before = resolve_user(conn, user_id, lock=True)
    live = conn.execute(
        'SELECT count(*) FROM "Session" WHERE "userId" = %s AND "revokedAt" IS NULL',
        [user_id],
    ).fetchone()
    after = _apply(conn, user_id, {"password": hashed})
    audit.record(
        conn,
        actor,
        "users.set_password",
        resource="user",
        resource_id=user_id,
        before=before,
        after=after,
        sessionsRevoked=int(live[0]) if live else 0,
    )
    return after


def delete(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> dict[str, Any]:
    """Hard-delete the user (see the module docstring for why); returns what was removed."""
    user_id = resolve_user(conn, ref, lock=True)["id"]
    authorize(conn, actor, "users:delete", user_id)
    guards.ensure_not_last_super_admin(conn, user_id)
    impact = delete_impact(conn, user_id)
    conn.execute('DELETE FROM "User" WHERE id = %s', [user_id])
    audit.record(
        conn,
        actor,
        "users.delete",
        resource="user",
        resource_id=user_id,
        before=impact["user"],
        removed={k: v for k, v in impact.items() if k != "user"},
    )
    return impact


# -- XP and reputation ------------------------------------------------------------

_COUNTERS = {"xp": (0, INT4_MAX), "reputation": (-INT4_MAX, INT4_MAX)}


def _add(
    conn: psycopg.Connection[Any],
    actor: Actor,
    ref: str,
    column: str,
    amount: int,
    reason: str | None,
) -> dict[str, Any]:
    """column += amount in one statement (concurrent additions are never lost)."""
    low, high = _COUNTERS[column]
    amount = _int(amount, "amount", -INT4_MAX, INT4_MAX)
    if amount == 0:
        raise Invalid("amount must not be 0", details={"field": "amount"})
    reason = _reason(reason, required=True)
    user_id = resolve_user(conn, ref)["id"]
    authorize(conn, actor, "users:write", user_id)
    col = sql.Identifier(column)
    # The bound check in WHERE keeps the row (and the int4 column) in range without an
    # error: a refused addition changes nothing and is told apart from a missing user.
    query = sql.SQL(
        'UPDATE "User" SET {col} = {col} + %(a)s WHERE id = %(id)s'
        " AND {col}::bigint + %(a)s BETWEEN %(low)s AND %(high)s RETURNING {ret}"
    ).format(col=col, ret=_RETURNING)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, {"a": amount, "id": user_id, "low": low, "high": high})
        after = cur.fetchone()
    if after is None:
        current = dict(resolve_user(conn, user_id))[column]
        raise Invalid(
            f"{column} would leave its range ({low} to {high}): it is {current}",
            details={"field": "amount", column: current},
        )
    before = {column: after[column] - amount}
    if column == "xp":
        before["level"] = level_for(before["xp"])
    audit.record(
        conn,
        actor,
        f"users.add_{column}",
        resource="user",
        resource_id=user_id,
        before=before,
        after={k: after[k] for k in before},
        amount=amount,
        reason=reason,
    )
    return after


def _set(
    conn: psycopg.Connection[Any],
    actor: Actor,
    ref: str,
    column: str,
    value: int,
    reason: str | None,
) -> dict[str, Any]:
    """column = value, returning the old value from the same locked row."""
    low, high = _COUNTERS[column]
    value = _int(value, column, low, high)
    reason = _reason(reason, required=False)
    before_row = resolve_user(conn, ref, lock=True)
    user_id = before_row["id"]
    authorize(conn, actor, "users:write", user_id)
    after = _apply(conn, user_id, {column: value})
    keys = [column, "level"] if column == "xp" else [column]
    audit.record(
        conn,
        actor,
        f"users.set_{column}",
        resource="user",
        resource_id=user_id,
        before={k: dict(before_row)[k] for k in keys},
        after={k: after[k] for k in keys},
        reason=reason,
    )
    return after


def add_xp(
    conn: psycopg.Connection[Any], actor: Actor, ref: str, amount: int, reason: str
) -> dict[str, Any]:
    """Add (or with a negative amount, take) XP atomically; Invalid if xp would go below 0."""
    return _add(conn, actor, ref, "xp", amount, reason)


def set_xp(
    conn: psycopg.Connection[Any], actor: Actor, ref: str, xp: int, reason: str | None = None
) -> dict[str, Any]:
    """Set XP (≥ 0); the level follows by trigger."""
    return _set(conn, actor, ref, "xp", xp, reason)


def add_reputation(
    conn: psycopg.Connection[Any], actor: Actor, ref: str, amount: int, reason: str
) -> dict[str, Any]:
    """Add (or take) reputation atomically; reputation may be negative."""
    return _add(conn, actor, ref, "reputation", amount, reason)


def set_reputation(
    conn: psycopg.Connection[Any],
    actor: Actor,
    ref: str,
    reputation: int,
    reason: str | None = None,
) -> dict[str, Any]:
    """Set reputation."""
    return _set(conn, actor, ref, "reputation", reputation, reason)
