"""Server-level security operations: roles, grants, logging settings.

Knows nothing of users: it plans SQL statements (so a face can show them for --dry-run,
or print them for an external server it cannot reach as a superuser) and applies them
on a connection the caller chose (the embedded cluster's local superuser).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from smartstart.errors import SmartStartError

# Names SmartStart creates roles under: plain lower-case identifiers, so that the guide's
# unquoted SQL (`GRANT … TO readonly_user`) names the same role.
ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_OWNER = "smartstart_owner"
AUDIT_SETTINGS = ("log_statement", "log_min_duration_statement")
LOG_STATEMENT_VALUES = ("none", "ddl", "mod", "all")
# DML only: what the Brain and the guide's statements need, no TRUNCATE, no DDL.
APP_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
APP_SEQUENCE_PRIVILEGES = "USAGE, SELECT, UPDATE"


def check_role_name(name: str, what: str = "role name") -> str:
    """name, when it is a role name SmartStart will create; a clear error otherwise."""
    if len(name) > 63:
        raise SmartStartError(f"the {what} is {len(name)} characters long; at most 63")
    if not ROLE_NAME.fullmatch(name) or name.startswith("pg_"):
        raise SmartStartError(
            f"the {what} {name!r} is not a plain role name: lower-case letters, digits and "
            "underscores, starting with a letter or underscore, not pg_…"
        )
    return name


def generate_password() -> str:
    """A random password for a database role (printed once by the face)."""
    return secrets.token_urlsafe(24)


Statement = sql.SQL | sql.Composed


def show(conn: psycopg.Connection[Any], statements: Sequence[Statement]) -> list[str]:
    """The statements as SQL text, each ending with a semicolon."""
    return [s.as_string(conn) + ";" for s in statements]


def apply(conn: psycopg.Connection[Any], statements: Sequence[Statement]) -> None:
    """Run the statements in one transaction: all of them or none."""
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)


@dataclass(frozen=True)
class RoleInfo:
    name: str
    superuser: bool
    createrole: bool
    createdb: bool
    login: bool


def role(conn: psycopg.Connection[Any], name: str) -> RoleInfo | None:
    row = conn.execute(
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin"
        " FROM pg_roles WHERE rolname = %s",
        [name],
    ).fetchone()
    return None if row is None else RoleInfo(*row)


def schema_owner(conn: psycopg.Connection[Any], schema: str = "public") -> str | None:
    """The role that owns schema (pg_database_owner resolved to the database's owner)."""
    row = conn.execute(
        """
        SELECT CASE WHEN n.nspowner = 'pg_database_owner'::regrole
                    THEN d.datdba::regrole::text ELSE n.nspowner::regrole::text END
        FROM pg_namespace n, pg_database d
        WHERE n.nspname = %s AND d.datname = current_database()
        """,
        [schema],
    ).fetchone()
    return None if row is None else str(row[0]).strip('"')


# -- read-only user -------------------------------------------------------------------


@dataclass(frozen=True)
class ReadonlyPlan:
    """What `readonly-user` will do: create or update the role, and the grants."""

    role: str
    exists: bool
    sets_password: bool
    statements: tuple[Statement, ...]


def plan_readonly_user(
    conn: psycopg.Connection[Any],
    *,
    name: str,
    database: str,
    password: str | None,
    refuse: Sequence[str] = (),
) -> ReadonlyPlan:
    """The guide's read-only user, done fully: login, CONNECT, USAGE, SELECT now and later.

    An existing role is reused only when it holds no more power than a read-only user:
    refuse names roles that must never become one (the app's, the schema owner's)."""
    check_role_name(name)
    found = role(conn, name)
    if name in refuse or (
        found is not None and (found.superuser or found.createrole or found.createdb)
    ):
        raise SmartStartError(
            f"{name!r} is an existing role with more privileges than a read-only user "
            "(a superuser, CREATEROLE, CREATEDB, or the platform's own); choose another name"
        )
    ident = sql.Identifier(name)
    statements: list[Statement] = []
    if found is None:
        statements.append(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(password))
        )
    elif password is not None:
        statements.append(
            sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(password))
        )
    statements += [
        # Belt and braces: every transaction of the role is read-only, even a SELECT of a
        # function that writes.
        sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), ident),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident),
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(ident),
        sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(ident),
    ]
    # Tables made later (by a migration) are readable too: default privileges of every role
    # that creates tables here, the app's role before `harden`, the schema owner after.
    for creator in _table_creators(conn):
        statements.append(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT ON TABLES TO {}"
            ).format(sql.Identifier(creator), ident)
        )
    return ReadonlyPlan(name, found is not None, password is not None, tuple(statements))


def _table_creators(conn: psycopg.Connection[Any]) -> list[str]:
    """Roles owning tables in public, and the schema's owner."""
    owners = {
        str(r[0])
        for r in conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')"
        )
    }
    owner = schema_owner(conn)
    if owner is not None:
        owners.add(owner)
    return sorted(owners - {"postgres"})


# -- harden -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HardenPlan:
    """What `harden` will do, statement by statement."""

    owner: str
    app: str
    objects: int  # objects whose ownership moves to the owner
    statements: tuple[Statement, ...]


def plan_harden(
    conn: psycopg.Connection[Any], *, database: str, app: str, owner: str = DEFAULT_OWNER
) -> HardenPlan:
    """The guide's `REVOKE CREATE ON SCHEMA public FROM smartstart_user`, without breaking
    migrations: owner (NOLOGIN) owns the database, the schema and every object in it
    (extensions included) and runs migrations; app keeps DML only, on every table now and
    later."""
    check_role_name(owner, "owner role name")
    if owner == app:
        raise SmartStartError(f"the owner role must differ from the app's role {app!r}")
    found = role(conn, owner)
    if found is not None and found.superuser:
        raise SmartStartError(f"{owner!r} is a superuser; choose another owner role name")
    o, a, db = sql.Identifier(owner), sql.Identifier(app), sql.Identifier(database)
    statements: list[Statement] = []
    if found is None:
        statements.append(sql.SQL("CREATE ROLE {} NOLOGIN").format(o))
    row = conn.execute(
        "SELECT count(*) FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass"
        " AND refobjid = %s::regrole AND deptype = 'o'"
        " AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        [app],
    ).fetchone()
    moved = int(row[0]) if row else 0
    # REASSIGN OWNED moves everything of this database (an extension too, which has no
    # ALTER … OWNER) and every database the role owns: the others are given back at once,
    # in the same transaction.
    others = [
        str(r[0])
        for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datdba = %s::regrole AND datname <> %s"
            " ORDER BY 1",
            [app, database],
        )
    ]
    statements.append(sql.SQL("REASSIGN OWNED BY {} TO {}").format(a, o))
    statements += [
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), a) for name in others
    ]
    statements += [
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, o),
        sql.SQL("ALTER SCHEMA public OWNER TO {}").format(o),
    ]
    statements += [
        # The guide's statement, verbatim in effect; PUBLIC too (PostgreSQL before 15).
        sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(a),
        sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(db, a),
        sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, a),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(a),
        sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA public TO {}").format(
            sql.SQL(APP_TABLE_PRIVILEGES), a
        ),
        sql.SQL("GRANT {} ON ALL SEQUENCES IN SCHEMA public TO {}").format(
            sql.SQL(APP_SEQUENCE_PRIVILEGES), a
        ),
        # What later migrations create is usable by the app at once.
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT {} ON TABLES TO {}"
        ).format(o, sql.SQL(APP_TABLE_PRIVILEGES), a),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT {} ON SEQUENCES TO {}"
        ).format(o, sql.SQL(APP_SEQUENCE_PRIVILEGES), a),
    ]
    statements += _carried_default_privileges(conn, app, owner)
    return HardenPlan(owner, app, moved, tuple(statements))


_DEFACL_OBJECTS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES"}


def _carried_default_privileges(
    conn: psycopg.Connection[Any], app: str, owner: str
) -> list[Statement]:
    """Default privileges granted for tables the app's role creates (a read-only user's
    SELECT, say), granted again for the tables the owner will create."""
    out: list[Statement] = []
    for kind, grantee, privilege in conn.execute(
        """
        SELECT d.defaclobjtype, pg_get_userbyid(x.grantee), x.privilege_type
        FROM pg_default_acl d, aclexplode(d.defaclacl) x
        WHERE d.defaclrole = %s::regrole AND d.defaclnamespace = 'public'::regnamespace
          AND x.grantee <> 0 AND pg_get_userbyid(x.grantee) NOT IN (%s, %s)
        ORDER BY 1, 2, 3
        """,
        [app, app, owner],
    ):
        if kind in _DEFACL_OBJECTS:
            out.append(
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT {} ON {} TO {}"
                ).format(
                    sql.Identifier(owner),
                    sql.SQL(privilege),
                    sql.SQL(_DEFACL_OBJECTS[kind]),
                    sql.Identifier(grantee),
                )
            )
    return out


def is_hardened(conn: psycopg.Connection[Any], app: str) -> bool:
    """Whether another role owns the schema and app cannot create in it."""
    owner = schema_owner(conn)
    row = conn.execute("SELECT has_schema_privilege(%s, 'public', 'CREATE')", [app]).fetchone()
    return owner not in (None, app) and not (row and row[0])


# -- audit logging ------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSetting:
    name: str
    setting: str
    unit: str | None
    source: str
    pending_restart: bool


def audit_logging_status(conn: psycopg.Connection[Any]) -> list[LogSetting]:
    """The logging settings as the server applies them now (pg_settings)."""
    return [
        LogSetting(*r)
        for r in conn.execute(
            "SELECT name, setting, unit, source, pending_restart FROM pg_settings"
            " WHERE name = ANY(%s) ORDER BY name",
            [list(AUDIT_SETTINGS)],
        )
    ]


def plan_audit_logging(
    enable: bool, *, min_duration_ms: int = 1000, statements: str = "all"
) -> tuple[Statement, ...]:
    """The guide's ALTER SYSTEM settings (on), or back to the server's defaults (off)."""
    if not -1 <= min_duration_ms <= 2_147_483_647:
        raise SmartStartError(
            f"--min-duration {min_duration_ms} is out of range: milliseconds from 0 "
            "(every statement) up, or -1 (no duration logging)"
        )
    if statements not in LOG_STATEMENT_VALUES:
        raise SmartStartError(
            f"--statements {statements!r}: choose one of {', '.join(LOG_STATEMENT_VALUES)}"
        )
    if not enable:
        return tuple(
            sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)) for name in AUDIT_SETTINGS
        ) + (sql.SQL("SELECT pg_reload_conf()"),)
    return (
        sql.SQL("ALTER SYSTEM SET log_statement = {}").format(sql.Literal(statements)),
        sql.SQL("ALTER SYSTEM SET log_min_duration_statement = {}").format(
            sql.Literal(min_duration_ms)
        ),
        sql.SQL("SELECT pg_reload_conf()"),
    )


def apply_system(conn: psycopg.Connection[Any], statements: Sequence[Statement]) -> None:
    """ALTER SYSTEM statements (they refuse a transaction block) on an autocommit connection."""
    for statement in statements:
        conn.execute(statement)


def expected_settings(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """What the logging settings will be once the configuration files are reloaded: the
    last valid line of the files (postgresql.auto.conf included), else the built-in value."""
    return {
        str(name): str(value)
        for name, value in conn.execute(
            """
            SELECT s.name, coalesce(
                (SELECT f.setting FROM pg_file_settings f
                 WHERE f.name = s.name AND f.error IS NULL ORDER BY f.seqno DESC LIMIT 1),
                s.boot_val)
            FROM pg_settings s WHERE s.name = ANY(%s)
            """,
            [list(AUDIT_SETTINGS)],
        )
    }


def wait_reloaded(
    conn: psycopg.Connection[Any], expected: dict[str, str], timeout: float = 10
) -> list[LogSetting]:
    """pg_settings once the reload (a signal, asynchronous) shows the expected values."""
    deadline = time.monotonic() + timeout
    while True:
        current = audit_logging_status(conn)
        if all(s.setting == expected.get(s.name, s.setting) for s in current):
            return current
        if time.monotonic() > deadline:
            raise SmartStartError(
                "the server did not apply the new settings after pg_reload_conf(): "
                + ", ".join(f"{s.name}={s.setting}" for s in current),
                "see its log (smartstart logs postgres)",
            )
        time.sleep(0.05)
