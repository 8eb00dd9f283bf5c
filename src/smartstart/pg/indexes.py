"""Index checks: unused, duplicate, invalid, and foreign keys no index serves."""

from __future__ import annotations

from typing import Any

import psycopg

from smartstart.pg.checks import Measurement, counted, ident, num, rows

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
    total = sum(num(r["bytes"]) for r in found)
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
    return counted(
        found,
        "indexes",
        lambda w: f"DROP INDEX CONCURRENTLY {ident(w['schema'], w['duplicate'])};",
    )


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
    return counted(
        found, "indexes", lambda w: f"REINDEX INDEX CONCURRENTLY {ident(w['schema'], w['index'])};"
    )


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
    return counted(
        found,
        "foreign keys",
        lambda w: (
            f"CREATE INDEX CONCURRENTLY ON {ident(w['schema'], w['table'])} ({w['columns']});"
        ),
    )
