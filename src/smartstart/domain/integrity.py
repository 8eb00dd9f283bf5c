"""The platform's own integrity checks, in the shape of the server checks (pg.monitor)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from smartstart.pg.checks import Check, Measurement, counted, rows


def users_without_primary_role(conn: psycopg.Connection[Any]) -> Measurement:
    # "User".role names the primary role; authorization reads "UserRole", so both must agree.
    # The role ids go in as constants (a name -> id map), so that no join with "Role" comes
    # between: "User_id_role_idx" and "UserRole_pkey" then give both sides in id order and
    # the proof is one merge anti-join of two index-only scans. Left to itself the planner
    # hashes 1,000,000 rows on three cores (0.65 s idle; cut at its 2 s timeout under load).
    # Materialized: with ORDER BY … LIMIT over the anti-join it would walk users in email
    # order probing "UserRole" one by one.
    role_ids = {str(r["name"]): r["id"] for r in rows(conn, 'SELECT id, name FROM "Role"')}
    with conn.transaction():
        conn.execute("SET LOCAL enable_hashjoin = off")
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        found = rows(
            conn,
            """
            WITH missing AS MATERIALIZED (
                SELECT u.id, u.role FROM "User" u
                WHERE NOT EXISTS (SELECT 1 FROM "UserRole" ur
                                  WHERE ur."userId" = u.id
                                    AND ur."roleId" = (%s::jsonb ->> u.role)))
            SELECT u.id, u.email, m.role AS primary_role,
                   (SELECT count(*) FROM missing) AS total
            FROM missing m JOIN "User" u ON u.id = m.id
            ORDER BY u.email LIMIT 50
            """,
            [Jsonb(role_ids)],
        )
    total = float(found[0]["total"] or 0) if found else 0.0
    fix = None
    if found:
        fix = (
            f"smartstart rbac assign {found[0]['email']} {found[0]['primary_role']}  (or for all: "
            'INSERT INTO "UserRole" ("userId", "roleId") SELECT u.id, r.id FROM "User" u '
            'JOIN "Role" r ON r.name = u.role ON CONFLICT DO NOTHING;)'
        )
    return Measurement(total, "users", tuple(found), fix=fix)


def roles_without_permissions(conn: psycopg.Connection[Any]) -> Measurement:
    found = rows(
        conn,
        """
        SELECT r.name AS role,
               (SELECT count(*) FROM "UserRole" ur WHERE ur."roleId" = r.id) AS users
        FROM "Role" r
        WHERE NOT EXISTS (SELECT 1 FROM "RolePermission" rp WHERE rp."roleId" = r.id)
        ORDER BY r.name
        """,
    )
    return counted(found, "roles", lambda w: f"smartstart rbac grant {w['role']} PERMISSION")


def super_admins(conn: psycopg.Connection[Any]) -> Measurement:
    # Two statements: in one, the planner cannot know that SUPER_ADMIN has a handful of
    # holders (it assumes a fifth of all users) and hashes the whole "User" table (1.3 s
    # at 1,000,000 users); with the ids in hand it is a few primary-key probes.
    holders = rows(
        conn,
        """
        SELECT ur."userId" AS id FROM "UserRole" ur
        WHERE ur."roleId" = (SELECT id FROM "Role" WHERE name = 'SUPER_ADMIN')
        LIMIT 1000
        """,
    )
    found = rows(
        conn,
        """
        SELECT u.email, u.status FROM "User" u
        WHERE u.id = ANY(%s) AND u.status = 'ACTIVE'
        ORDER BY u.email LIMIT 50
        """,
        [[h["id"] for h in holders]],
    )
    return Measurement(
        float(len(found)),
        "users",
        tuple(found),
        fix="keep SUPER_ADMIN to a few people: smartstart rbac unassign USER SUPER_ADMIN"
        if found
        else "make an ACTIVE user SUPER_ADMIN: smartstart rbac assign USER SUPER_ADMIN",
    )


def non_bcrypt_hashes(conn: psycopg.Connection[Any]) -> Measurement:
    # The table's CHECK refuses such rows; one can still exist from before it (NOT VALID)
    # or from a restore with the constraint dropped.
    guarded = rows(
        conn,
        """
        SELECT conname FROM pg_constraint
        WHERE conrelid = '"User"'::regclass AND contype = 'c' AND convalidated
          AND pg_get_constraintdef(oid) LIKE %s
        """,
        ["%password ~ %2[aby]%"],
    )
    if guarded:
        # A validated CHECK proves there is none: no need to read every row (1M users).
        return Measurement(0.0, "users", ({"guaranteed_by": guarded[0]["conname"]},))
    found = rows(
        conn,
        r"""SELECT id, email FROM "User" WHERE password !~ '^\$2[aby]\$' ORDER BY email LIMIT 50""",
    )
    return counted(
        found, "users", lambda w: f"smartstart users passwd {w['email']}  (each listed user)"
    )


CHECKS: tuple[Check, ...] = (
    Check(
        "users_without_primary_role",
        "Users without their primary role's row",
        users_without_primary_role,
        crit=1,
    ),
    Check(
        "roles_without_permissions", "Roles without permissions", roles_without_permissions, warn=1
    ),
    Check("super_admins", "Active SUPER_ADMIN users", super_admins, warn=4, floor=1),
    Check("non_bcrypt_hashes", "Password hashes that are not bcrypt", non_bcrypt_hashes, crit=1),
)
