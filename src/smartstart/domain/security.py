"""The platform's security findings (`smartstart security check`), in the shape of the
health checks: the integrity checks that are security matters, and users with no role."""

from __future__ import annotations

from typing import Any

import psycopg

from smartstart.domain import integrity
from smartstart.pg.checks import Check, Measurement, rows


def users_without_roles(conn: psycopg.Connection[Any]) -> Measurement:
    """Users holding no role at all: they can sign in and do nothing, or were made by hand."""
    found = rows(
        conn,
        """
        WITH missing AS MATERIALIZED (
            SELECT u.id, u.email, u.status FROM "User" u
            WHERE NOT EXISTS (SELECT 1 FROM "UserRole" ur WHERE ur."userId" = u.id))
        SELECT *, (SELECT count(*) FROM missing) AS total
        FROM missing ORDER BY email LIMIT 50
        """,
    )
    total = float(found[0]["total"] or 0) if found else 0.0
    return Measurement(
        total,
        "users",
        tuple(found),
        fix=f"smartstart rbac assign {found[0]['email']} MEMBER  (or suspend the account)"
        if found
        else None,
    )


def _integrity(name: str) -> Check:
    return next(c for c in integrity.CHECKS if c.name == name)


CHECKS: tuple[Check, ...] = (
    _integrity("non_bcrypt_hashes"),
    _integrity("super_admins"),
    _integrity("roles_without_permissions"),
    Check("users_without_roles", "Users holding no role", users_without_roles, warn=1),
)
