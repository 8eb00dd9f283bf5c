"""What the guide's monitoring statements meant, working: table sizes, index usage, table
statistics and slow queries (docs/guide-sql.md has the SQL corrected for PostgreSQL 13+).

Server-level only: these read PostgreSQL's statistics views, whatever the schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from smartstart.pg.checks import Detail, rows, server_version

STATEMENT_CHARS = 1000


def table_sizes(conn: psycopg.Connection[Any]) -> list[Detail]:
    """Every user table, largest first: total (table + indexes + toast) and each part."""
    # By OID from pg_stat_user_tables: no name is ever built, so mixed-case names work.
    return rows(
        conn,
        """
        SELECT schemaname AS schema, relname AS "table",
               pg_total_relation_size(relid) AS total_bytes,
               pg_relation_size(relid) AS table_bytes,
               pg_indexes_size(relid) AS index_bytes,
               pg_total_relation_size(relid) - pg_relation_size(relid)
                   - pg_indexes_size(relid) AS toast_bytes,
               pg_size_pretty(pg_total_relation_size(relid)) AS size
        FROM pg_stat_user_tables
        ORDER BY total_bytes DESC, schema, "table"
        """,
    )


def index_usage(conn: psycopg.Connection[Any]) -> list[Detail]:
    """Every user index, most used first (the guide's `tablename`/`indexname` columns)."""
    return rows(
        conn,
        """
        SELECT schemaname AS schema, relname AS "table", indexrelname AS index,
               idx_scan, idx_tup_read, idx_tup_fetch,
               pg_relation_size(indexrelid) AS bytes
        FROM pg_stat_user_indexes
        ORDER BY idx_scan DESC, schema, "table", index
        """,
    )


def table_statistics(conn: psycopg.Connection[Any]) -> list[Detail]:
    """Writes, live and dead tuples and (auto)vacuum times per table, most rows first."""
    return rows(
        conn,
        """
        SELECT schemaname AS schema, relname AS "table",
               n_tup_ins AS inserts, n_tup_upd AS updates, n_tup_del AS deletes,
               n_live_tup AS live_tuples, n_dead_tup AS dead_tuples,
               seq_scan, coalesce(idx_scan, 0) AS idx_scan,
               last_vacuum, last_autovacuum, last_analyze, last_autoanalyze
        FROM pg_stat_user_tables
        ORDER BY n_live_tup DESC, schema, "table"
        """,
    )


@dataclass(frozen=True)
class Statements:
    """The slow-query report: the rows, or why there are none (what is needed)."""

    items: list[Detail]
    unavailable: str | None = None


def statements_schema(conn: psycopg.Connection[Any]) -> str | None:
    """The schema pg_stat_statements is installed in, in this database (None: not)."""
    found = rows(
        conn,
        "SELECT n.nspname AS schema FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'",
    )
    return str(found[0]["schema"]) if found else None


NOT_INSTALLED = (
    "pg_stat_statements is not installed in this database: run CREATE EXTENSION "
    "pg_stat_statements; (its library must be in shared_preload_libraries)"
)


def statement_counters(conn: psycopg.Connection[Any], limit: int | None = 20) -> Statements:
    """This database's statements with calls, mean and total execution time, slowest first.

    Summed over roles (and top-level or not), so one statement is one row. The columns
    were renamed in PostgreSQL 13 (`mean_time` became `mean_exec_time`).
    """
    schema = statements_schema(conn)
    if schema is None:
        return Statements([], NOT_INSTALLED)
    suffix = "" if server_version(conn) < 130000 else "_exec"
    limit_sql = "" if limit is None else "LIMIT %s"
    try:
        with conn.transaction():
            found = rows(
                conn,
                f"""
                SELECT queryid, calls, total_ms, rows,
                       round((total_ms / greatest(calls, 1))::numeric, 3)::float AS mean_ms,
                       query
                FROM (SELECT queryid, sum(calls)::bigint AS calls,
                             sum(total{suffix}_time)::float AS total_ms,
                             sum(rows)::bigint AS rows, left(min(query), %s) AS query
                      FROM "{schema}".pg_stat_statements
                      WHERE dbid = (SELECT oid FROM pg_database
                                    WHERE datname = current_database())
                        AND queryid IS NOT NULL
                      GROUP BY queryid) s
                ORDER BY mean_ms DESC, queryid {limit_sql}
                """,
                [STATEMENT_CHARS] if limit is None else [STATEMENT_CHARS, limit],
            )
    except psycopg.errors.ObjectNotInPrerequisiteState as e:
        return Statements(
            [],
            f"{str(e).splitlines()[0]}: add pg_stat_statements to shared_preload_libraries "
            "(ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';) and restart",
        )
    return Statements(found)


@dataclass(frozen=True)
class Reset:
    """What `db stats --reset` did: each counter set reset, or what it needs instead."""

    reset: tuple[str, ...]
    refused: tuple[str, ...]


def reset(conn: psycopg.Connection[Any]) -> Reset:
    """Zero this database's table/index counters and pg_stat_statements.

    Both functions are superuser-only unless granted: a refusal says what to grant.
    """
    done: list[str] = []
    refused: list[str] = []
    calls = [("table and index statistics", "SELECT pg_stat_reset()", "pg_stat_reset")]
    schema = statements_schema(conn)
    if schema is not None:
        calls.append(
            (
                "pg_stat_statements",
                f'SELECT "{schema}".pg_stat_statements_reset()',
                f'"{schema}".pg_stat_statements_reset',
            )
        )
    for what, statement, function in calls:
        try:
            with conn.transaction():
                conn.execute(statement)
            done.append(what)
        except psycopg.errors.InsufficientPrivilege:
            refused.append(
                f"{what}: needs a superuser, or GRANT EXECUTE ON FUNCTION {function} "
                f"TO {conn.info.user} (as a superuser)"
            )
    return Reset(tuple(done), tuple(refused))
