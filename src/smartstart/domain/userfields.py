"""The fields of a user: their rules, and the one UPDATE that writes validated ones.

Shared by `users` (accounts) and `xp` (XP and reputation). Every check raises
`Invalid` naming the field; a constraint the checks did not foresee (the database
has the last word) is turned into `Invalid` or `Conflict` the same way.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row

from smartstart.db.vocabulary import USER_STATUSES
from smartstart.domain import audit
from smartstart.domain.actor import Actor
from smartstart.domain.errors import Conflict, Invalid, NotFound
from smartstart.domain.resolve import PUBLIC_COLUMNS, UserRow

Conn = psycopg.Connection[Any]
RETURNING = sql.SQL(", ").join(sql.Identifier(c) for c in PUBLIC_COLUMNS)

INT4_MAX = 2**31 - 1
MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254
MAX_SEARCH_LENGTH = 200
MAX_REASON_LENGTH = 500
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,49}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")  # the same rule as the table's CHECK
# Unicode categories no email or sign-in identifier may hold: controls, format characters
# (zero-width spaces and joiners, bidi marks), lone surrogates, spaces and separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
UPDATE_FIELDS = ("email", "username", "name", "firstName", "lastName", "role", "status")

# The unique constraints of "User", by name, and the field each one protects.
_CONSTRAINT_FIELDS = {"User_email_lower_key": "email", "User_username_key": "username"}


def text(value: Any, field: str, *, max_length: int, nullable: bool = False) -> str | None:
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


def required_text(value: Any, field: str, *, max_length: int) -> str:
    """`text` for a field that cannot be null."""
    checked = text(value, field, max_length=max_length)
    assert checked is not None
    return checked


def visible(value: str, field: str) -> str:
    """value in NFC; Invalid when it holds a control, format or space character.

    Such characters make look-alike addresses (a zero-width space, NFD's separate
    accents) that are different accounts to the database but the same to a person.
    """
    value = unicodedata.normalize("NFC", value)
    if any(ch.isspace() or unicodedata.category(ch) in _INVISIBLE for ch in value):
        raise Invalid(
            f"{field} cannot contain spaces, control or invisible characters",
            details={"field": field},
        )
    return value


def email(value: Any) -> str:
    """An email as it is stored and compared: NFC, visible characters only."""
    address = visible(required_text(value, "email", max_length=MAX_EMAIL_LENGTH), "email")
    if len(address) > MAX_EMAIL_LENGTH or not EMAIL_RE.match(address):
        raise Invalid("email is not a valid address", details={"field": "email"})
    return address


def login_identifier(value: str) -> str:
    """A sign-in identifier (email or username) in the form accounts are looked up by."""
    return visible(value.strip(), "identifier")


def username(value: Any) -> str:
    name = required_text(value, "username", max_length=50)
    if not USERNAME_RE.match(name):
        raise Invalid(
            "username must be 2 to 50 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit",
            details={"field": "username"},
        )
    return name


def status(value: Any) -> str:
    if value not in USER_STATUSES:
        raise Invalid(
            f"status must be one of {', '.join(USER_STATUSES)}",
            details={"field": "status", "allowed": list(USER_STATUSES)},
        )
    return str(value)


def integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{field} must be an integer", details={"field": field})
    if not low <= value <= high:
        raise Invalid(f"{field} must be between {low} and {high}", details={"field": field})
    return value


def reason(value: Any, *, required: bool) -> str | None:
    checked = text(value, "reason", max_length=MAX_REASON_LENGTH, nullable=not required)
    if required and not (checked or "").strip():
        raise Invalid("a reason is required", details={"field": "reason"})
    return checked


def _valid_id(user_id: Any) -> bool:
    return isinstance(user_id, str) and 0 < len(user_id) <= MAX_ID_LENGTH and "\x00" not in user_id


def not_found(user_id: Any) -> NotFound:
    shown = user_id if _valid_id(user_id) else None
    return NotFound("no such user", details={"id": shown})


def conflict(e: pg_errors.UniqueViolation) -> Conflict:
    field = _CONSTRAINT_FIELDS.get(e.diag.constraint_name or "")
    if field is None:
        return Conflict("the user conflicts with an existing one")
    return Conflict(f"a user with this {field} already exists", field=field)


def refused(e: pg_errors.IntegrityError) -> Invalid:
    """A CHECK or foreign key the checks above let through (the database has the last word)."""
    constraint = e.diag.constraint_name or ""
    field = next((f for f in UPDATE_FIELDS + ("xp",) if f in constraint.split("_")), None)
    return Invalid(
        f"the database refused the value ({constraint or 'constraint'})",
        details={"field": field, "constraint": constraint},
    )


def fetch_user(conn: psycopg.Connection[Any], query: sql.Composed, params: Any) -> UserRow | None:
    """The user row a write's RETURNING gives, in a savepoint: a refused write (conflict,
    CHECK) leaves the caller's transaction usable."""
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            row = cur.fetchone()
    except pg_errors.UniqueViolation as e:
        raise conflict(e) from None
    except (pg_errors.CheckViolation, pg_errors.ForeignKeyViolation) as e:
        raise refused(e) from None
    return cast(UserRow | None, row)


def update_row(
    conn: psycopg.Connection[Any], user_id: str, changes: Mapping[str, object]
) -> UserRow:
    """UPDATE the given columns (names from a whitelist) and return the new public row."""
    assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in changes)
    query = sql.SQL('UPDATE "User" SET {} WHERE id = %s RETURNING {}').format(
        assignments, RETURNING
    )
    row = fetch_user(conn, query, [*changes.values(), user_id])
    if row is None:
        raise not_found(user_id)
    return row


def record(
    conn: Conn, actor: Actor, action: str, user: str, before: object, after: object, **kw: Any
) -> None:
    """The audit row of a change to one user (in the caller's transaction)."""
    audit.record(
        conn, actor, action, resource="user", resource_id=user, before=before, after=after, **kw
    )
