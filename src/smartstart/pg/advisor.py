"""Server-level security checks (`smartstart security check`): each returns its numbers,
as the health checks do; the judgement (smartstart.advisor) grades them.

Nothing here knows of users: roles, privileges, server settings, pg_hba.conf, functions.
"""

from __future__ import annotations

from typing import Any

import psycopg

from smartstart.pg.checks import Measurement, counted, rows

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", ""})


def app_superuser(conn: psycopg.Connection[Any]) -> Measurement:
    """Whether the role the app connects as is a superuser (or may become one)."""
    found = rows(
        conn,
        "SELECT rolname AS role, rolsuper AS superuser, rolcreaterole AS createrole"
        " FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolcreaterole)",
    )
    return counted(
        found,
        "roles",
        lambda w: (
            f'ALTER ROLE "{w["role"]}" NOSUPERUSER NOCREATEROLE;  (as a superuser; '
            "the app needs neither)"
        ),
    )


def create_on_public(conn: psycopg.Connection[Any]) -> Measurement:
    """Roles that may create objects in the public schema besides a separate schema owner:
    the app's role itself (before `security harden`), other roles, PUBLIC."""
    found = rows(
        conn,
        """
        WITH owner AS (
            SELECT CASE WHEN n.nspowner = 'pg_database_owner'::regrole THEN d.datdba
                        ELSE n.nspowner END AS oid
            FROM pg_namespace n, pg_database d
            WHERE n.nspname = 'public' AND d.datname = current_database())
        SELECT r.rolname AS role, r.oid = (SELECT oid FROM owner) AS owns_schema
        FROM pg_roles r
        WHERE NOT r.rolsuper AND r.rolname !~ '^pg_'
          AND has_schema_privilege(r.oid, 'public', 'CREATE')
          AND (r.oid <> (SELECT oid FROM owner) OR r.rolname = current_user)
        UNION ALL
        SELECT 'PUBLIC', false WHERE has_schema_privilege('public', 'public', 'CREATE')
        ORDER BY 1
        """,
    )
    return counted(
        found,
        "roles",
        lambda w: (
            "smartstart security harden  (the guide's REVOKE CREATE ON SCHEMA public "
            f"FROM {w['role']}, without breaking migrations)"
        ),
    )


def _exposed(addresses: str) -> list[str]:
    return [a.strip() for a in addresses.split(",") if a.strip() not in LOOPBACK]


def listen_addresses(conn: psycopg.Connection[Any]) -> Measurement:
    (row,) = rows(conn, "SELECT current_setting('listen_addresses') AS listen_addresses")
    exposed = _exposed(str(row["listen_addresses"]))
    return Measurement(
        float(len(exposed)),
        "addresses",
        (row,),
        fix="listen on loopback only (SMARTSTART_PG_HOST=127.0.0.1; ALTER SYSTEM SET "
        "listen_addresses = 'localhost' and restart), or keep it and require SSL and "
        "scram-sha-256 in pg_hba.conf"
        if exposed
        else None,
    )


def ssl_exposed(conn: psycopg.Connection[Any]) -> Measurement:
    """SSL off on a server that listens beyond loopback, or this very connection in clear
    over a network."""
    (row,) = rows(
        conn,
        """
        SELECT current_setting('ssl') AS ssl, current_setting('listen_addresses') AS listen,
               coalesce((SELECT s.ssl FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()), false)
                 AS this_connection_encrypted,
               coalesce(host(inet_client_addr()), 'local socket') AS client
        """,
    )
    exposed = bool(_exposed(str(row["listen"])))
    remote = str(row["client"]) not in ("local socket", "127.0.0.1", "::1")
    bad = (row["ssl"] == "off" and exposed) or (remote and not row["this_connection_encrypted"])
    return Measurement(
        1.0 if bad else 0.0,
        "",
        (row,),
        fix="turn SSL on (ssl = on with a certificate) and use hostssl lines in pg_hba.conf; "
        "connect with sslmode=require"
        if bad
        else None,
    )


def hba_trust(conn: psycopg.Connection[Any]) -> Measurement:
    """`trust` lines of pg_hba.conf: anyone who can reach them logs in without a password."""
    try:
        found = rows(
            conn,
            """
            SELECT line_number AS line, type, array_to_string(database, ',') AS database,
                   array_to_string(user_name, ',') AS "user", address
            FROM pg_hba_file_rules WHERE auth_method = 'trust' ORDER BY line_number
            """,
        )
    except psycopg.errors.InsufficientPrivilege:
        return Measurement(
            None,
            "lines",
            unavailable="reading pg_hba.conf needs a superuser (pg_hba_file_rules): run "
            "SELECT * FROM pg_hba_file_rules WHERE auth_method = 'trust' as one",
        )
    return counted(
        found,
        "lines",
        lambda w: (
            f"pg_hba.conf line {w['line']}: replace trust with scram-sha-256 (or peer "
            "for local), then SELECT pg_reload_conf()"
        ),
    )


def mutable_search_path(conn: psycopg.Connection[Any]) -> Measurement:
    """Functions of the public schema that run with the caller's search_path."""
    found = rows(
        conn,
        """
        SELECT p.oid::regprocedure::text AS function, p.prosecdef AS security_definer
        FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                            AND d.objid = p.oid AND d.deptype = 'e')
          AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%%')
        ORDER BY p.prosecdef DESC, 1 LIMIT 50
        """,
    )
    return counted(
        found,
        "functions",
        lambda w: f"ALTER FUNCTION {w['function']} SET search_path = public, pg_temp;",
    )
