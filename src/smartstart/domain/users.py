"""User accounts: listing, creation, changes, status, passwords and deletion.

XP and reputation live in `xp`, the rules of each field in `userfields`; the
names callers use (`users.add_xp`, `users.MAX_NAME_LENGTH`...) are re-exported.

Every function takes the caller's connection and never commits; every write
records exactly one audit row. No function ever returns or audits the password
hash: rows are read through `PUBLIC_COLUMNS` only.

Deletion is HARD: the guide's schema has no "deletedAt" column, a soft-deleted
row would keep the person's personal data and hold their email and username
forever, and every query would have to remember to skip it. Reversible removal
already exists as `deactivate` (status INACTIVE: no login, sessions ended).
`delete` removes the row; the database cascades its sessions, journey states and
role assignments, and the audit row keeps the before-image (minus secrets).
`plan_delete` says what would go, for a face to show before it asks.

Every write takes an `Actor` and a user reference (id, email or username, see
`resolve.resolve_user`) and asks `authorize` first: the permission, and the
"outranked" rule (no change to a user who holds permissions the actor lacks, no
role that grants what the actor lacks). An administrator's password reset is
refused on one's own account: that takes the current password (`POST
/api/auth/password`), so a stolen session cannot lock its owner out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict, cast

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from smartstart.config import Settings
from smartstart.db.vocabulary import LEVELS
from smartstart.domain import guards, paging, passwords, usersearch
from smartstart.domain import userfields as fields
from smartstart.domain.actor import Actor
from smartstart.domain.authorize import authorize
from smartstart.domain.errors import Invalid
from smartstart.domain.paging import Page
from smartstart.domain.resolve import PUBLIC_COLUMNS as PUBLIC_COLUMNS
from smartstart.domain.resolve import UserRow, resolve_user

# Re-exported: callers name them `users.X` (the rules live in userfields, XP in xp).
from smartstart.domain.userfields import INT4_MAX as INT4_MAX
from smartstart.domain.userfields import MAX_EMAIL_LENGTH as MAX_EMAIL_LENGTH
from smartstart.domain.userfields import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from smartstart.domain.userfields import MAX_REASON_LENGTH as MAX_REASON_LENGTH
from smartstart.domain.userfields import MAX_SEARCH_LENGTH as MAX_SEARCH_LENGTH
from smartstart.domain.userfields import UPDATE_FIELDS as UPDATE_FIELDS
from smartstart.domain.userfields import login_identifier as login_identifier
from smartstart.domain.usersearch import escape_like
from smartstart.domain.xp import add_reputation as add_reputation
from smartstart.domain.xp import add_xp as add_xp
from smartstart.domain.xp import set_reputation as set_reputation
from smartstart.domain.xp import set_xp as set_xp

_SELECT = sql.SQL(", ").join(sql.Identifier("u", c) for c in PUBLIC_COLUMNS)

LEVEL_NAMES = tuple(name for name, _ in LEVELS)
# Shorter searches match the start of the email or username (trigrams need three).
MIN_SUBSTRING_SEARCH = 3
MIN_SEARCH = 2  # shorter than MIN_SUBSTRING_SEARCH: a prefix of the email or username
PROFILE_FIELDS = ("name", "firstName", "lastName", "username")
_NULLABLE = frozenset({"name", "firstName", "lastName"})

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


class ProfileChanges(TypedDict, total=False):
    """What a user may change of their own profile (the keys present are changed)."""

    username: str
    name: str | None
    firstName: str | None
    lastName: str | None


class UserChanges(ProfileChanges, total=False):
    """What an administrator may change of a user (the keys present are changed)."""

    email: str
    role: str
    status: str


@dataclass(frozen=True)
class DeletePlan:
    """What deleting a user removes with them: shown before asking, audited after."""

    user: UserRow
    sessions: int
    active_sessions: int
    journey_states: int
    role_assignments: int

    def removed(self) -> dict[str, int]:
        """The counts, as the audit row keeps them."""
        return {
            "sessions": self.sessions,
            "activeSessions": self.active_sessions,
            "journeyStates": self.journey_states,
            "roleAssignments": self.role_assignments,
        }


@dataclass(frozen=True)
class UserFilter:
    """What `list_users` selects: a search text and exact filters (None: any)."""

    q: str | None = None
    role: str | None = None
    status: str | None = None
    level: str | None = None


# -- reads ------------------------------------------------------------------------


def list_users(
    conn: psycopg.Connection[Any],
    filters: UserFilter | None = None,
    *,
    settings: Settings,
    sort: str = "createdAt",
    order: str = "desc",
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[UserRow]:
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
    q = fields.text(f.q, "q", max_length=MAX_SEARCH_LENGTH, nullable=True)
    if q and len(q) < MIN_SEARCH:
        # One character is no search: a prefix that many users share ("m") or few ("z")
        # sends the planner walking creation order until a page is filled.
        raise Invalid(
            f"search needs at least {MIN_SEARCH} characters",
            details={"field": "q", "min_length": MIN_SEARCH},
        )
    substring = q is not None and len(q) >= MIN_SUBSTRING_SEARCH
    if q and substring:
        match, match_params = usersearch.conditions(q)
        clauses.extend(match)
        params.extend(match_params)
    elif q:
        # Too short for trigrams: a substring would read every row; a prefix uses an index.
        clauses.append(sql.SQL("(lower(u.email) LIKE %s OR lower(u.username) LIKE %s)"))
        params.extend([f"{escape_like(q.lower())}%"] * 2)
    role = None if f.role is None else fields.text(f.role, "role", max_length=MAX_NAME_LENGTH)
    if f.status is not None:
        clauses.append(sql.SQL("u.status = %s"))
        params.append(fields.status(f.status))
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
    position: list[sql.Composable] = []  # the rows after the cursor's, in the page's order
    if after is not None:
        op = sql.SQL(">") if order == "asc" else sql.SQL("<")
        position.append(sql.SQL("({}, u.id) {} (%s, %s)").format(key, op))
    direction = sql.SQL("ASC") if order == "asc" else sql.SQL("DESC")
    if substring and q and sort == "createdAt" and f == UserFilter(q=f.q):
        # The search box's own listing: found in two steps whatever the substring.
        rows = usersearch.newest_matching(
            conn, q, _SELECT, position, list(after or ()), order == "asc", limit + 1
        )
    else:
        clauses.extend(position)
        params.extend(after or ())
        query, params = _users_query(conn, role, clauses, params, key, direction, limit + 1)
        with conn.cursor(row_factory=dict_row) as cur:
            # Never prepared: a generic plan cannot tell a rare role or search from a
            # common one, and would walk a million rows for the rare ones (planning
            # costs ~0.2 ms).
            cur.execute(query, params, prepare=False)
            rows = cur.fetchall()
    page = keyset.page(settings, rows, limit, lambda r: (r["_key"], r["id"]))
    for row in page.items:
        del row["_key"]
    # Without "_key", each row holds exactly the public columns.
    return cast(Page[UserRow], page)


def _users_query(
    conn: psycopg.Connection[Any],
    role: str | None,
    clauses: list[sql.Composable],
    params: list[Any],
    key: sql.Composable,
    direction: sql.Composable,
    rows: int,
) -> tuple[sql.Composed, list[Any]]:
    """The statement reading `rows` users in the page's order, and its parameters.

    A role filter matches the primary role ("User".role, next to the sort key in
    "User_role_createdAt_id_idx") or an additional one ("UserRole"). The additional
    holders are looked for only when role_holders says there are some: probing
    "UserRole" for every user of a 1 % role costs a page ~300 ms at a million users.
    """

    def select(where: list[sql.Composable]) -> sql.Composed:
        cond = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
        return sql.SQL(
            'SELECT {cols}, {key} AS "_key" FROM "User" u{where}'
            " ORDER BY {key} {dir}, u.id {dir} LIMIT %s"
        ).format(cols=_SELECT, key=key, where=cond, dir=direction)

    if role is None:
        return select(clauses), [*params, rows]
    found = conn.execute(
        'SELECT r.id, COALESCE(sum(h.holders - h.primaries), 0) FROM "Role" r'
        ' LEFT JOIN role_holders h ON h."roleId" = r.id WHERE r.name = %s GROUP BY r.id',
        [role],
    ).fetchone()
    primary = select([sql.SQL("u.role = %s"), *clauses])
    if found is None or found[1] <= 0:
        return primary, [role, *params, rows]
    additional = select(
        [
            sql.SQL("u.role <> %s"),
            sql.SQL(
                'EXISTS (SELECT 1 FROM "UserRole" ur WHERE ur."userId" = u.id AND ur."roleId" = %s)'
            ),
            *clauses,
        ]
    )
    # Each branch is a sorted page; the merge of the two is the page.
    query = sql.SQL(
        'SELECT * FROM (({}) UNION ALL ({})) t ORDER BY "_key" {dir}, id {dir} LIMIT %s'
    ).format(primary, additional, dir=direction)
    return query, [role, *params, rows, role, found[0], *params, rows, rows]


def plan_delete(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> DeletePlan:
    """What deleting the user would remove, for a face to show before it asks.

    Refused as the deletion itself would be (permission, outranked, the last
    SUPER_ADMIN), so a dry run or a question never promises what `delete` refuses.
    Reads only: nothing is locked while the operator reads the question.
    """
    user = resolve_user(conn, ref)
    authorize(conn, actor, "users:delete", user["id"])
    if guards.active_super_admins(conn) == [user["id"]]:
        guards.ensure_not_last_super_admin(conn, user["id"])
    return _impact(conn, user)


def _impact(conn: psycopg.Connection[Any], user: UserRow) -> DeletePlan:
    row = conn.execute(
        'SELECT (SELECT count(*) FROM "Session" WHERE "userId" = %(id)s),'
        ' (SELECT count(*) FROM "Session" WHERE "userId" = %(id)s AND "revokedAt" IS NULL'
        ' AND "expiresAt" > now()),'
        ' (SELECT count(*) FROM "UserJourneyState" WHERE "userId" = %(id)s),'
        ' (SELECT count(*) FROM "UserRole" WHERE "userId" = %(id)s)',
        {"id": user["id"]},
    ).fetchone()
    assert row is not None
    return DeletePlan(user, int(row[0]), int(row[1]), int(row[2]), int(row[3]))


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
) -> UserRow:
    """A new user; Conflict(field) on a taken email (any case) or username."""
    primary = fields.required_text(role, "role", max_length=MAX_NAME_LENGTH)
    values: dict[str, str | None] = {
        "email": fields.email(email),
        "username": fields.username(username),
        "name": fields.text(name, "name", max_length=MAX_NAME_LENGTH, nullable=True),
        "firstName": fields.text(
            first_name, "firstName", max_length=MAX_NAME_LENGTH, nullable=True
        ),
        "lastName": fields.text(last_name, "lastName", max_length=MAX_NAME_LENGTH, nullable=True),
        "role": primary,
        "status": fields.status(status),
    }
    passwords.validate(password)
    authorize(conn, actor, "users:write", grants=role_permissions(conn, primary))
    values["password"] = passwords.hash_password(password, rounds)
    query = sql.SQL('INSERT INTO "User" ({}) VALUES ({}) RETURNING {}').format(
        sql.SQL(", ").join(sql.Identifier(k) for k in values),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
        fields.RETURNING,
    )
    user = fields.fetch_user(conn, query, list(values.values()))
    assert user is not None
    fields.record(conn, actor, "users.create", user["id"], None, user)
    return user


def _validate_changes(
    changes: UserChanges | ProfileChanges, allowed: tuple[str, ...]
) -> dict[str, str | None]:
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise Invalid(
            f"cannot change {', '.join(unknown)}", details={"fields": unknown, "allowed": allowed}
        )
    clean: dict[str, str | None] = {}
    for key, value in changes.items():
        if key == "email":
            clean[key] = fields.email(value)
        elif key == "username":
            clean[key] = fields.username(value)
        elif key == "status":
            clean[key] = fields.status(value)
        elif key == "role":
            clean[key] = fields.text(value, "role", max_length=MAX_NAME_LENGTH)
        else:
            clean[key] = fields.text(
                value, key, max_length=MAX_NAME_LENGTH, nullable=key in _NULLABLE
            )
    return clean


def _write(
    conn: psycopg.Connection[Any],
    actor: Actor,
    action: str,
    before: UserRow,
    changes: dict[str, str | None],
    **details: object,
) -> UserRow:
    """Apply validated changes to the (locked) user `before` and audit both images."""
    after = fields.update_row(conn, before["id"], changes)
    fields.record(conn, actor, action, before["id"], before, after, **details)
    return after


def update(conn: psycopg.Connection[Any], actor: Actor, ref: str, changes: UserChanges) -> UserRow:
    """Change email, username, names, role or status (the keys present in changes)."""
    clean = _validate_changes(changes, UPDATE_FIELDS)
    before = resolve_user(conn, ref, lock=True)
    user_id = before["id"]
    if not clean:
        raise Invalid("nothing to change", details={"allowed": list(UPDATE_FIELDS)})
    role = clean.get("role")
    new_role = role is not None and role != before["role"]
    grants = role_permissions(conn, role) if role is not None and new_role else set()
    authorize(conn, actor, "users:write", user_id, grants=grants)
    if new_role and before["role"] == guards.SUPER_ADMIN:
        guards.ensure_not_last_super_admin(conn, user_id)
    if clean.get("status", "ACTIVE") != "ACTIVE" and before["status"] == "ACTIVE":
        guards.ensure_not_last_super_admin(conn, user_id)
    return _write(conn, actor, "users.update", before, clean, fields=sorted(clean))


def update_profile(
    conn: psycopg.Connection[Any], actor: Actor, ref: str, changes: ProfileChanges
) -> UserRow:
    """A user's change of their own profile: names and username only."""
    clean = _validate_changes(changes, PROFILE_FIELDS)
    before = resolve_user(conn, ref, lock=True)
    if before["id"] != actor.user_id:
        authorize(conn, actor, "users:write", before["id"])
    if not clean:
        raise Invalid("nothing to change", details={"allowed": list(PROFILE_FIELDS)})
    return _write(conn, actor, "users.update_profile", before, clean, fields=sorted(clean))


SELF_RESET_REFUSED = (
    "you cannot reset your own password here: change it with your current password"
    " (POST /api/auth/password)"
)
_STATUS_ACTIONS = {"SUSPENDED": "suspend", "ACTIVE": "activate", "INACTIVE": "deactivate"}


def set_status(conn: psycopg.Connection[Any], actor: Actor, ref: str, status: str) -> UserRow:
    """Suspend, activate or deactivate; leaving ACTIVE ends every session (trigger)."""
    fields.status(status)
    before = resolve_user(conn, ref, lock=True)
    user_id = before["id"]
    authorize(conn, actor, "users:write", user_id)
    if status != "ACTIVE" and before["status"] == "ACTIVE":
        guards.ensure_not_last_super_admin(conn, user_id)
    verb = _STATUS_ACTIONS.get(status, "status")
    return _write(conn, actor, f"users.{verb}", before, {"status": status})


def suspend(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> UserRow:
    """Status SUSPENDED: no login, every session ended."""
    return set_status(conn, actor, ref, "SUSPENDED")


def activate(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> UserRow:
    """Status ACTIVE: the user may sign in again."""
    return set_status(conn, actor, ref, "ACTIVE")


def deactivate(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> UserRow:
    """Status INACTIVE (the reversible alternative to delete): no login, sessions ended."""
    return set_status(conn, actor, ref, "INACTIVE")


def set_password(
    conn: psycopg.Connection[Any],
    actor: Actor,
    ref: str,
    password: str,
    *,
    rounds: int = passwords.DEFAULT_ROUNDS,
) -> UserRow:
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
    revoked = int(live[0]) if live else 0
    return _write(
        conn, actor, "users.set_password", before, {"password": hashed}, sessionsRevoked=revoked
    )


def delete(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> DeletePlan:
    """Hard-delete the user (see the module docstring for why); returns what was removed."""
    user = resolve_user(conn, ref, lock=True)
    authorize(conn, actor, "users:delete", user["id"])
    guards.ensure_not_last_super_admin(conn, user["id"])
    impact = _impact(conn, user)
    conn.execute('DELETE FROM "User" WHERE id = %s', [user["id"]])
    fields.record(conn, actor, "users.delete", user["id"], user, None, removed=impact.removed())
    return impact
