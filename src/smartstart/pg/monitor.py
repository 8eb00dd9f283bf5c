"""Server-level health checks: each returns its numbers, a judgement elsewhere grades them.

Nothing here knows of users or roles: these are PostgreSQL's own statistics, as PgHero and
pg-extras read them, written for PostgreSQL 12 and later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg

from smartstart.pg.checks import (
    Check,
    Detail,
    Measurement,
    ident,
    led_by,
    num,
    own_sessions_only,
    rows,
    server_version,
)
from smartstart.pg.indexes import (
    duplicate_indexes,
    foreign_keys_without_index,
    invalid_indexes,
    unused_indexes,
)
from smartstart.pg.storage import bloat, orphans

__all__ = ["CHECKS", "Check", "Detail", "Measurement", "rows"]
# -- size --------------------------------------------------------------------------


def database_size(conn: psycopg.Connection[Any]) -> Measurement:
    (size,) = rows(conn, "SELECT pg_database_size(current_database()) AS bytes")
    return Measurement(num(size["bytes"]), "bytes", (size,))


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
    largest = num(found[0]["total_bytes"]) if found else 0.0
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
    usable = max(num(limits["max_connections"]) - num(limits["reserved"]), 1.0)
    pct = round(100.0 * num(limits["used"]) / usable, 1)
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
    return led_by(
        found,
        "seconds",
        "s",
        lambda w: (
            f"SELECT pg_terminate_backend({w['pid']}); and set idle_in_transaction_session_timeout"
        ),
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
    return led_by(found, "seconds", "s", lambda w: f"SELECT pg_cancel_backend({w['pid']});")


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
    return led_by(
        found,
        "waiting_seconds",
        "s",
        lambda w: (
            f"SELECT pg_terminate_backend({w['blocking_pid']}); -- the session blocking "
            f"{w['blocked_pid']}"
        ),
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
        hits, reads = num(ratio[f"{kind}_hits"]), num(ratio[f"{kind}_reads"])
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
    return led_by(
        found,
        "mean_ms",
        "ms",
        lambda w: (
            f"EXPLAIN (ANALYZE, BUFFERS) the query {w['queryid']} above and index "
            "what it filters on"
        ),
    )


MIN_CALLS = 5


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
    judged = [r for r in found if num(r["dead"]) >= MIN_DEAD_TUPLES]
    if not judged:
        return Measurement(0.0, "% dead", tuple(found))
    worst = max(judged, key=lambda r: num(r["dead_pct"]))
    return Measurement(
        num(worst["dead_pct"]),
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
        num(worst["xid_age"]),
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
        used = num(r["last_value"]) - 0.0
        limit = max(num(r["limit_value"]), 1.0)
        graded.append({**r, "used_pct": round(100.0 * used / limit, 2)})
    graded.sort(key=lambda r: -num(r["used_pct"]))
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
    return Measurement(num(w["used_pct"]), "% used", tuple(graded[:20]), fix=fix)


MIN_SEQ_SCAN_ROWS = 10_000


def sequential_scans(conn: psycopg.Connection[Any]) -> Measurement:
    # A table big enough to want an index that is still mostly read by sequential scans.
    found = rows(
        conn,
        """
        SELECT schemaname AS schema, relname AS "table", n_live_tup AS live_rows,
               seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan,
               round(100.0 * seq_scan / greatest(seq_scan + coalesce(idx_scan, 0), 1), 1)::float
                   AS seq_pct
        FROM pg_stat_user_tables
        WHERE n_live_tup >= %s AND seq_scan > 0
        ORDER BY seq_pct DESC, seq_tup_read DESC, relname LIMIT 20
        """,
        [MIN_SEQ_SCAN_ROWS],
    )
    return led_by(
        found,
        "seq_pct",
        "% sequential",
        lambda w: (
            f"find the queries that scan {ident(w['schema'], w['table'])} "
            "(pg_stat_statements) and CREATE INDEX CONCURRENTLY on what they filter by"
        ),
    )


def replication(conn: psycopg.Connection[Any]) -> Measurement:
    # An inactive slot keeps every WAL segment since it was last read: the disk fills.
    slots = rows(
        conn,
        """
        SELECT slot_name AS slot, slot_type AS type, active, database,
               pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes
        FROM pg_replication_slots ORDER BY retained_bytes DESC NULLS LAST
        """,
    )
    replicas = rows(
        conn,
        """
        SELECT application_name AS replica, client_addr::text AS address, state,
               pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes,
               extract(epoch FROM replay_lag)::float AS lag_seconds
        FROM pg_stat_replication ORDER BY lag_bytes DESC NULLS LAST
        """,
    )
    inactive = [s for s in slots if not s["active"]]
    fix = None
    if inactive:
        slot = str(inactive[0]["slot"]).replace("'", "''")
        fix = f"SELECT pg_drop_replication_slot('{slot}'); -- if nothing will read it again"
    return Measurement(float(len(inactive)), "inactive slots", (*slots, *replicas), fix=fix)


Run = Callable[[psycopg.Connection[Any]], Measurement]


def visible(run: Run) -> Run:
    """A check of other sessions that says what this role needs when it sees only its own."""

    def measured(conn: psycopg.Connection[Any]) -> Measurement:
        return replace(run(conn), limited=own_sessions_only(conn))

    measured.__name__ = run.__name__
    return measured


GiB = 1024**3
MiB = 1024**2

CHECKS: tuple[Check, ...] = (
    Check("database_size", "Database size", database_size, advice="informational"),
    Check("table_sizes", "Largest tables (table, indexes, toast)", table_sizes),
    Check("connections", "Connections vs max_connections", visible(connections), warn=70, crit=90),
    Check(
        "idle_in_transaction",
        "Idle in transaction",
        visible(idle_in_transaction),
        warn=60,
        crit=600,
    ),
    Check(
        "long_running_queries",
        "Long-running queries",
        visible(long_running_queries),
        warn=60,
        crit=300,
    ),
    Check("blocking_locks", "Blocking locks", visible(blocking_locks), warn=5, crit=60),
    Check("cache_hit_ratio", "Cache hit ratio", cache_hit_ratio, "lower", warn=99, crit=95),
    Check(
        "slow_queries",
        "Slow queries (pg_stat_statements)",
        visible(slow_queries),
        warn=100,
        crit=1000,
    ),
    Check("unused_indexes", "Unused indexes", unused_indexes, warn=MiB, crit=GiB),
    Check("duplicate_indexes", "Duplicate indexes", duplicate_indexes, warn=1),
    Check("invalid_indexes", "Invalid indexes", invalid_indexes, crit=1),
    Check(
        "foreign_keys_without_index",
        "Foreign keys without an index",
        foreign_keys_without_index,
        warn=1,
    ),
    Check(
        "sequential_scans",
        "Heavy sequential scans",
        sequential_scans,
        warn=50,
        crit=95,
    ),
    Check("replication", "Replication lag and inactive slots", replication, warn=1),
    Check("dead_tuples", "Dead tuples and (auto)vacuum", dead_tuples, warn=20, crit=50),
    Check(
        "wraparound",
        "Transaction-id wraparound age",
        wraparound,
        warn=1_000_000_000,
        crit=1_500_000_000,
    ),
    Check("sequences", "Sequences and integer keys near exhaustion", sequences, warn=75, crit=90),
    Check("bloat", "Table bloat estimate", bloat, warn=100 * MiB, crit=10 * GiB),
    Check("orphans", "Rows orphaned where a foreign key is not enforced", orphans, crit=1),
)
