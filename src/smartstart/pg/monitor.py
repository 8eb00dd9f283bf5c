"""Server-level health checks: each returns its numbers, a judgement elsewhere grades them.

Nothing here knows of users or roles: these are PostgreSQL's own statistics, as PgHero and
pg-extras read them, written for PostgreSQL 12 and later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

Scalar = str | int | float | bool | None
Detail = Mapping[str, Scalar]
Worse = Literal["higher", "lower"]


@dataclass(frozen=True)
class Measurement:
    """What one check measured: the number it is judged by, and the rows behind it."""

    metric: float | None
    unit: str
    details: tuple[Detail, ...] = ()
    # Set when the check cannot measure here (an extension missing, a privilege lacking):
    # what is needed, said instead of failing.
    unavailable: str | None = None
    # The fix for the worst row, when the check can name one (SQL or a command).
    fix: str | None = None


@dataclass(frozen=True)
class Check:
    """A check as data: its name, what it measures, and how its metric is read."""

    name: str
    title: str
    run: Callable[[psycopg.Connection[Any]], Measurement]
    worse: Worse = "higher"
    # Default thresholds (None: never graded on that level); a judgement may override them.
    warn: float | None = None
    crit: float | None = None
    # A metric below the floor is CRIT whatever the direction (e.g. no SUPER_ADMIN at all).
    floor: float | None = None
    advice: str = ""
    tags: tuple[str, ...] = field(default=())


def rows(conn: psycopg.Connection[Any], query: str, params: Sequence[Any] = ()) -> list[Detail]:
    """The rows of a query as plain mappings of scalars."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [{k: _scalar(v) for k, v in r.items()} for r in cur.fetchall()]


def _scalar(value: object) -> Scalar:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def ident(*parts: Scalar) -> str:
    """A (qualified) SQL identifier for a recommendation, quoted as PostgreSQL does."""
    return ".".join('"' + str(p).replace('"', '""') + '"' for p in parts)


def _num(value: Scalar) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def server_version(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.server_version)


# -- size --------------------------------------------------------------------------


def database_size(conn: psycopg.Connection[Any]) -> Measurement:
    (size,) = rows(conn, "SELECT pg_database_size(current_database()) AS bytes")
    return Measurement(_num(size["bytes"]), "bytes", (size,))


def table_sizes(conn: psycopg.Connection[Any]) -> Measurement:
    found = rows(
        conn,
        """
        SELECT n.nspname AS schema, c.relname AS "table",
               pg_total_relation_size(c.oid) AS total_bytes,
               pg_relation_size(c.oid) AS table_bytes,
               pg_indexes_size(c.oid) AS index_bytes,
               coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast_bytes
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'm')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg_toast%%'
        ORDER BY total_bytes DESC, "table" LIMIT 20
        """,
    )
    largest = _num(found[0]["total_bytes"]) if found else 0.0
    return Measurement(largest, "bytes", tuple(found))


# -- activity ----------------------------------------------------------------------


# The health checks' own sessions (one per check, running now) are not the load measured.
HEALTH_APPLICATION = "smartstart-health"
_NOT_US = f"application_name NOT LIKE '{HEALTH_APPLICATION}%%'"


def connections(conn: psycopg.Connection[Any]) -> Measurement:
    (limits,) = rows(
        conn,
        f"""
        SELECT current_setting('max_connections')::int AS max_connections,
               current_setting('superuser_reserved_connections')::int AS reserved,
               (SELECT count(*) FROM pg_stat_activity
                WHERE backend_type = 'client backend' AND {_NOT_US}) AS used
        """,
    )
    groups = rows(
        conn,
        f"""
        SELECT datname AS database, coalesce(state, 'unknown') AS state,
               application_name AS application, count(*) AS connections
        FROM pg_stat_activity WHERE backend_type = 'client backend' AND {_NOT_US}
        GROUP BY 1, 2, 3 ORDER BY connections DESC, 1, 2, 3 LIMIT 50
        """,
    )
    usable = max(_num(limits["max_connections"]) - _num(limits["reserved"]), 1.0)
    pct = round(100.0 * _num(limits["used"]) / usable, 1)
    return Measurement(
        pct,
        "% of max_connections",
        (limits, *groups),
        fix="lower the pool sizes of the clients above, or raise max_connections "
        "(ALTER SYSTEM SET max_connections = …; then restart the server)",
    )


_OTHERS = f"pid <> pg_backend_pid() AND backend_type = 'client backend' AND {_NOT_US}"


def idle_in_transaction(conn: psycopg.Connection[Any]) -> Measurement:
    found = rows(
        conn,
        f"""
        SELECT pid, datname AS database, usename AS "user", application_name AS application,
               round(extract(epoch FROM now() - state_change)::numeric, 1)::float AS seconds,
               left(query, 200) AS last_query
        FROM pg_stat_activity
        WHERE state IN ('idle in transaction', 'idle in transaction (aborted)') AND {_OTHERS}
        ORDER BY seconds DESC LIMIT 20
        """,
    )
    if not found:
        return Measurement(0.0, "s", ())
    worst = found[0]
    return Measurement(
        _num(worst["seconds"]),
        "s",
        tuple(found),
        fix=f"SELECT pg_terminate_backend({worst['pid']}); and set "
        "idle_in_transaction_session_timeout",
    )


def long_running_queries(conn: psycopg.Connection[Any]) -> Measurement:
    found = rows(
        conn,
        f"""
        SELECT pid, datname AS database, usename AS "user", application_name AS application,
               round(extract(epoch FROM now() - query_start)::numeric, 1)::float AS seconds,
               wait_event_type, wait_event, left(query, 200) AS query
        FROM pg_stat_activity
        WHERE state = 'active' AND {_OTHERS}
        ORDER BY seconds DESC LIMIT 20
        """,
    )
    if not found:
        return Measurement(0.0, "s", ())
    worst = found[0]
    return Measurement(
        _num(worst["seconds"]),
        "s",
        tuple(found),
        fix=f"SELECT pg_cancel_backend({worst['pid']});",
    )


def blocking_locks(conn: psycopg.Connection[Any]) -> Measurement:
    found = rows(
        conn,
        """
        SELECT blocked.pid AS blocked_pid, blocked.usename AS blocked_user,
               round(extract(epoch FROM now() - blocked.query_start)::numeric, 1)::float
                   AS waiting_seconds,
               left(blocked.query, 200) AS blocked_query,
               blocker.pid AS blocking_pid, blocker.usename AS blocking_user,
               blocker.state AS blocking_state, left(blocker.query, 200) AS blocking_query
        FROM pg_stat_activity blocked
        JOIN LATERAL unnest(pg_blocking_pids(blocked.pid)) AS b(pid) ON true
        JOIN pg_stat_activity blocker ON blocker.pid = b.pid
        ORDER BY waiting_seconds DESC NULLS LAST LIMIT 50
        """,
    )
    if not found:
        return Measurement(0.0, "s", ())
    worst = found[0]
    return Measurement(
        _num(worst["waiting_seconds"]),
        "s",
        tuple(found),
        fix=f"SELECT pg_terminate_backend({worst['blocking_pid']}); -- the session blocking "
        f"{worst['blocked_pid']}",
    )


def cache_hit_ratio(conn: psycopg.Connection[Any]) -> Measurement:
    (ratio,) = rows(
        conn,
        """
        SELECT (SELECT sum(heap_blks_hit) FROM pg_statio_user_tables) AS table_hits,
               (SELECT sum(heap_blks_read) FROM pg_statio_user_tables) AS table_reads,
               (SELECT sum(idx_blks_hit) FROM pg_statio_user_indexes) AS index_hits,
               (SELECT sum(idx_blks_read) FROM pg_statio_user_indexes) AS index_reads
        """,
    )
    ratios: dict[str, float | None] = {}
    for kind in ("table", "index"):
        hits, reads = _num(ratio[f"{kind}_hits"]), _num(ratio[f"{kind}_reads"])
        # Too few reads say nothing about the cache: a fresh database is not a cold one.
        ratios[kind] = round(100.0 * hits / (hits + reads), 2) if hits + reads >= 1000 else None
    known = [r for r in ratios.values() if r is not None]
    detail = {**ratio, "table_hit_pct": ratios["table"], "index_hit_pct": ratios["index"]}
    return Measurement(
        min(known) if known else 100.0,
        "% hits",
        (detail,),
        fix="give the server more memory for its cache (ALTER SYSTEM SET shared_buffers = …; "
        "then restart), or look for sequential scans of large tables",
    )


# -- statements ------------------------------------------------------------------


def slow_queries(conn: psycopg.Connection[Any]) -> Measurement:
    installed = rows(
        conn,
        "SELECT n.nspname AS schema FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'",
    )
    if not installed:
        return Measurement(
            None,
            "ms",
            unavailable="pg_stat_statements is not installed in this database: run "
            "CREATE EXTENSION pg_stat_statements; (its library must be in "
            "shared_preload_libraries)",
        )
    # The columns were renamed in PostgreSQL 13.
    prefix = "" if server_version(conn) < 130000 else "_exec"
    schema = str(installed[0]["schema"])
    try:
        with conn.transaction():
            found = rows(
                conn,
                f"""
                SELECT queryid::text AS queryid, calls,
                       round(mean{prefix}_time::numeric, 2)::float AS mean_ms,
                       round(total{prefix}_time::numeric, 1)::float AS total_ms,
                       rows, left(query, 200) AS query
                FROM "{schema}".pg_stat_statements
                WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND calls >= %s
                ORDER BY mean{prefix}_time DESC LIMIT 20
                """,
                [MIN_CALLS],
            )
    except psycopg.errors.ObjectNotInPrerequisiteState as e:
        return Measurement(
            None,
            "ms",
            unavailable=f"{str(e).splitlines()[0]}: add pg_stat_statements to "
            "shared_preload_libraries (ALTER SYSTEM SET shared_preload_libraries = "
            "'pg_stat_statements';) and restart the server",
        )
    if not found:
        return Measurement(0.0, "ms", ())
    return Measurement(
        _num(found[0]["mean_ms"]),
        "ms",
        tuple(found),
        fix=f"EXPLAIN (ANALYZE, BUFFERS) the query {found[0]['queryid']} above and index "
        "what it filters on",
    )


MIN_CALLS = 5


# -- indexes -----------------------------------------------------------------------

_USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'"
)


def unused_indexes(conn: psycopg.Connection[Any]) -> Measurement:
    found = rows(
        conn,
        f"""
        SELECT n.nspname AS schema, t.relname AS "table", i.relname AS index,
               s.idx_scan AS scans, pg_relation_size(i.oid) AS bytes
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        JOIN pg_stat_user_indexes s ON s.indexrelid = x.indexrelid
        WHERE s.idx_scan = 0 AND NOT x.indisunique AND NOT x.indisprimary
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
          AND {_USER_SCHEMAS}
        ORDER BY bytes DESC, index
        """,
    )
    total = sum(_num(r["bytes"]) for r in found)
    fix = None
    if found:
        worst = found[0]
        fix = f"DROP INDEX CONCURRENTLY {ident(worst['schema'], worst['index'])};"
    return Measurement(total, "bytes", tuple(found), fix=fix)


def duplicate_indexes(conn: psycopg.Connection[Any]) -> Measurement:
    # An index whose key columns lead another index of the same kind on the same table
    # (no expressions, no predicates) is redundant: the longer one serves both.
    found = rows(
        conn,
        f"""
        WITH ix AS (
            SELECT x.indexrelid, x.indrelid, x.indisunique, x.indisprimary,
                   x.indkey::text AS keys, x.indclass::text AS classes, i.relam,
                   i.relname AS index, t.relname AS "table", n.nspname AS schema
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE x.indexprs IS NULL AND x.indpred IS NULL AND x.indisvalid
              AND {_USER_SCHEMAS}
        )
        SELECT d.schema, d."table", d.index AS duplicate, c.index AS covered_by,
               pg_relation_size(d.indexrelid) AS bytes
        FROM ix d JOIN ix c
          ON c.indrelid = d.indrelid AND c.indexrelid <> d.indexrelid AND c.relam = d.relam
         AND (c.keys = d.keys AND c.classes = d.classes AND (
                  (c.indisunique AND NOT d.indisunique)
                  OR (c.indisunique = d.indisunique AND c.indexrelid < d.indexrelid))
              OR (c.keys LIKE d.keys || ' %%' AND c.classes LIKE d.classes || ' %%'))
        WHERE NOT d.indisunique AND NOT d.indisprimary
        ORDER BY bytes DESC, duplicate
        """,
    )
    fix = None
    if found:
        fix = f"DROP INDEX CONCURRENTLY {ident(found[0]['schema'], found[0]['duplicate'])};"
    return Measurement(float(len(found)), "indexes", tuple(found), fix=fix)


def invalid_indexes(conn: psycopg.Connection[Any]) -> Measurement:
    found = rows(
        conn,
        f"""
        SELECT n.nspname AS schema, t.relname AS "table", i.relname AS index
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE NOT x.indisvalid AND {_USER_SCHEMAS}
        ORDER BY 1, 2, 3
        """,
    )
    fix = None
    if found:
        fix = f"REINDEX INDEX CONCURRENTLY {ident(found[0]['schema'], found[0]['index'])};"
    return Measurement(float(len(found)), "indexes", tuple(found), fix=fix)


def foreign_keys_without_index(conn: psycopg.Connection[Any]) -> Measurement:
    # A delete or key update on the referenced table scans the referencing one without it.
    found = rows(
        conn,
        f"""
        SELECT n.nspname AS schema, t.relname AS "table", c.conname AS constraint,
               (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord)
                FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum)
                   AS columns
        FROM pg_constraint c
        JOIN pg_class t ON t.oid = c.conrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE c.contype = 'f' AND {_USER_SCHEMAS}
          AND NOT EXISTS (
              SELECT 1 FROM pg_index x
              WHERE x.indrelid = c.conrelid AND x.indpred IS NULL
                AND (x.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
                AND (x.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)
        ORDER BY 1, 2, 3
        """,
    )
    fix = None
    if found:
        w = found[0]
        fix = f"CREATE INDEX CONCURRENTLY ON {ident(w['schema'], w['table'])} ({w['columns']});"
    return Measurement(float(len(found)), "foreign keys", tuple(found), fix=fix)


# -- maintenance ---------------------------------------------------------------------


MIN_DEAD_TUPLES = 1000


def dead_tuples(conn: psycopg.Connection[Any]) -> Measurement:
    found = rows(
        conn,
        """
        SELECT schemaname AS schema, relname AS "table", n_live_tup AS live, n_dead_tup AS dead,
               round(100.0 * n_dead_tup / greatest(n_live_tup + n_dead_tup, 1), 1)::float
                   AS dead_pct,
               last_vacuum, last_autovacuum, last_analyze, last_autoanalyze
        FROM pg_stat_user_tables
        ORDER BY n_dead_tup DESC, relname LIMIT 20
        """,
    )
    # A handful of dead rows in a tiny table is not bloat worth a verdict.
    judged = [r for r in found if _num(r["dead"]) >= MIN_DEAD_TUPLES]
    if not judged:
        return Measurement(0.0, "% dead", tuple(found))
    worst = max(judged, key=lambda r: _num(r["dead_pct"]))
    return Measurement(
        _num(worst["dead_pct"]),
        "% dead",
        tuple(found),
        fix=f"VACUUM (ANALYZE) {ident(worst['schema'], worst['table'])};",
    )


def wraparound(conn: psycopg.Connection[Any]) -> Measurement:
    found = rows(
        conn,
        """
        SELECT datname AS database, age(datfrozenxid) AS xid_age,
               round(100.0 * age(datfrozenxid) / 2147483647, 2)::float AS pct_of_limit
        FROM pg_database ORDER BY xid_age DESC
        """,
    )
    worst = found[0]
    return Measurement(
        _num(worst["xid_age"]),
        "transactions",
        tuple(found),
        fix=f'VACUUM (FREEZE, VERBOSE); -- in database "{worst["database"]}", its oldest '
        "tables first",
    )


def sequences(conn: psycopg.Connection[Any]) -> Measurement:
    # A sequence feeding an int4 column runs out at the column's limit, not its own.
    found = rows(
        conn,
        """
        SELECT s.schemaname AS schema, s.sequencename AS sequence,
               coalesce(s.last_value, s.start_value) AS last_value,
               least(s.max_value, CASE col.atttypid WHEN 'int2'::regtype THEN 32767
                                                    WHEN 'int4'::regtype THEN 2147483647
                                                    ELSE 9223372036854775807 END) AS limit_value,
               col_t.relname AS "table", col.attname AS "column",
               format_type(col.atttypid, col.atttypmod) AS column_type
        FROM pg_sequences s
        JOIN pg_class sc ON sc.relname = s.sequencename
        JOIN pg_namespace sn ON sn.oid = sc.relnamespace AND sn.nspname = s.schemaname
        LEFT JOIN pg_depend d ON d.objid = sc.oid AND d.classid = 'pg_class'::regclass
             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        LEFT JOIN pg_attribute col ON col.attrelid = d.refobjid AND col.attnum = d.refobjsubid
        LEFT JOIN pg_class col_t ON col_t.oid = d.refobjid
        WHERE s.increment_by > 0
        """,
    )
    graded: list[Detail] = []
    for r in found:
        used = _num(r["last_value"]) - 0.0
        limit = max(_num(r["limit_value"]), 1.0)
        graded.append({**r, "used_pct": round(100.0 * used / limit, 2)})
    graded.sort(key=lambda r: -_num(r["used_pct"]))
    if not graded:
        return Measurement(0.0, "% used", ())
    w = graded[0]
    if w["column"] is not None and w["column_type"] in ("integer", "smallint"):
        fix = (
            f"ALTER TABLE {ident(w['schema'], w['table'])} "
            f"ALTER COLUMN {ident(w['column'])} TYPE bigint;"
        )
    else:
        fix = f"ALTER SEQUENCE {ident(w['schema'], w['sequence'])} AS bigint NO MAXVALUE;"
    return Measurement(_num(w["used_pct"]), "% used", tuple(graded[:20]), fix=fix)


GiB = 1024**3
MiB = 1024**2

CHECKS: tuple[Check, ...] = (
    Check("database_size", "Database size", database_size, advice="informational"),
    Check("table_sizes", "Largest tables (table, indexes, toast)", table_sizes),
    Check("connections", "Connections vs max_connections", connections, warn=70, crit=90),
    Check("idle_in_transaction", "Idle in transaction", idle_in_transaction, warn=60, crit=600),
    Check("long_running_queries", "Long-running queries", long_running_queries, warn=60, crit=300),
    Check("blocking_locks", "Blocking locks", blocking_locks, warn=5, crit=60),
    Check("cache_hit_ratio", "Cache hit ratio", cache_hit_ratio, "lower", warn=99, crit=95),
    Check("slow_queries", "Slow queries (pg_stat_statements)", slow_queries, warn=100, crit=1000),
    Check("unused_indexes", "Unused indexes", unused_indexes, warn=MiB, crit=GiB),
    Check("duplicate_indexes", "Duplicate indexes", duplicate_indexes, warn=1),
    Check("invalid_indexes", "Invalid indexes", invalid_indexes, crit=1),
    Check(
        "foreign_keys_without_index",
        "Foreign keys without an index",
        foreign_keys_without_index,
        warn=1,
    ),
    Check("dead_tuples", "Dead tuples and (auto)vacuum", dead_tuples, warn=20, crit=50),
    Check(
        "wraparound",
        "Transaction-id wraparound age",
        wraparound,
        warn=1_000_000_000,
        crit=1_500_000_000,
    ),
    Check("sequences", "Sequences and integer keys near exhaustion", sequences, warn=75, crit=90),
)
