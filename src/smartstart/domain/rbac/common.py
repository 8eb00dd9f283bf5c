"""What every part of RBAC shares: names and their validation, row reads, error mapping."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import psycopg
from psycopg.rows import dict_row

from smartstart.domain import guards
from smartstart.domain.errors import Conflict, Invalid
from smartstart.domain.rbac.rows import UserBrief
from smartstart.domain.resolve import UserRow

ROLE_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{1,49}$")
PERMISSION_PART = r"[a-z][a-z0-9_-]{0,39}"
PERMISSION_NAME_RE = re.compile(rf"^{PERMISSION_PART}:{PERMISSION_PART}$")
ROLE_NAME_PATTERN = ROLE_NAME_RE.pattern
PERMISSION_NAME_PATTERN = PERMISSION_NAME_RE.pattern
SUPER_ADMIN = guards.SUPER_ADMIN
# The role every new user gets by default ("User".role's default): renaming or
# deleting it would make plain user creation fail.
SYSTEM_ROLES = frozenset({SUPER_ADMIN, "MEMBER"})
MAX_DESCRIPTION = 500
MAX_REF_LENGTH = 320  # ids, names and emails alike

Row = TypeVar("Row")
Param = str | int | None


def validate_role_name(name: str) -> str:
    if not ROLE_NAME_RE.match(name):
        raise Invalid(
            f"invalid role name {name!r}: 2-50 characters, upper-case letters, digits and _,"
            " starting with a letter (e.g. CONTENT_EDITOR)",
            details={"field": "name"},
        )
    return name


def validate_permission_name(name: str) -> tuple[str, str]:
    """The (resource, action) of a well-formed permission name."""
    if not PERMISSION_NAME_RE.match(name):
        raise Invalid(
            f"invalid permission name {name!r}: resource:action in lower case (e.g. reports:read)",
            details={"field": "name"},
        )
    resource, action = name.split(":", 1)
    return resource, action


def description(value: str | None) -> str | None:
    """A description fit to store, or Invalid."""
    if value is not None and (len(value) > MAX_DESCRIPTION or "\x00" in value):
        raise Invalid(
            f"description must be at most {MAX_DESCRIPTION} characters, without NUL",
            details={"field": "description"},
        )
    return value


def usable(ref: str) -> bool:
    """A reference that can be looked up at all (PostgreSQL text refuses NUL)."""
    return 0 < len(ref) <= MAX_REF_LENGTH and "\x00" not in ref


def fetch_one(
    conn: psycopg.Connection[Any], row: type[Row], query: str, params: Sequence[Param]
) -> Row | None:
    """The first row of query as the typed row `row` (a TypedDict read by dict_row)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cast(Row | None, cur.fetchone())


def fetch_all(
    conn: psycopg.Connection[Any], row: type[Row], query: str, params: Sequence[Param]
) -> list[Row]:
    """Every row of query as the typed row `row` (a TypedDict read by dict_row)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cast(list[Row], cur.fetchall())


def user_brief(user: UserRow) -> UserBrief:
    return {
        "id": user["id"],
        "email": user["email"],
        "username": user["username"],
        "role": user["role"],
        "status": user["status"],
    }


@contextmanager
def mapped(field: str | None = None) -> Iterator[None]:
    """Integrity errors (a concurrent change got there first) as 409/422, never a 500."""
    try:
        yield
    except psycopg.errors.UniqueViolation as e:
        raise Conflict(f"{field or 'value'} already exists", field=field) from e
    except psycopg.errors.CheckViolation as e:
        raise Invalid(f"invalid {field or 'value'}", details={"field": field}) from e
    except psycopg.errors.ForeignKeyViolation as e:
        raise Conflict("the role is still some user's primary role", field=field) from e
    except psycopg.errors.IntegrityConstraintViolation as e:
        # raised by the "UserRole_keep_primary" trigger
        raise Conflict(
            "that is the user's primary role; change the primary role instead",
            details={"reason": "primary_role"},
        ) from e
