"""Storage checks: table bloat (an estimate from the planner's statistics), WAL archiving,
and rows orphaned where a foreign key is not enforced."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from smartstart.pg.checks import Detail, Measurement, ident, num, rows

# An estimate is rough: a table is reported only when most of it would be wasted space.
MIN_BLOAT_PCT = 30.0


def bloat(conn: psycopg.Connection[Any]) -> Measurement:
    # Expected pages from the row count and the average row width (pg_stats), against the
    # pages the table has: the pgstattuple-free estimate PgHero and pg-extras use, simplified
    # (24-byte tuple header, 4-byte line pointer, the table's fillfactor).
    found = rows(
        conn,
        """
        WITH t AS (
            SELECT c.oid, n.nspname AS schema, c.relname AS "table", c.relpages, c.reltuples,
                   current_setting('block_size')::int AS bs,
                   coalesce((SELECT split_part(o, '=', 2)::int FROM unnest(c.reloptions) o
                             WHERE o LIKE 'fillfactor=%%'), 100) AS fillfactor,
                   (SELECT sum(s.avg_width) FROM pg_stats s
                    WHERE s.schemaname = n.nspname AND s.tablename = c.relname) AS width
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND c.relpages > 10
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_toast%%'
        ), e AS (
            SELECT *, ceil(greatest(reltuples, 0) / greatest(floor(
                       (bs - 24) * fillfactor / 100.0 / (24 + width + 4)), 1)) AS expected
            FROM t WHERE width IS NOT NULL
        )
        SELECT schema, "table", relpages AS pages, expected::bigint AS expected_pages,
               ((relpages - expected) * bs)::bigint AS wasted_bytes,
               round((100.0 * (relpages - expected) / relpages)::numeric, 1)::float AS wasted_pct
        FROM e WHERE relpages > expected
        ORDER BY wasted_bytes DESC, schema, "table" LIMIT 20
        """,
    )
    judged = [r for r in found if num(r["wasted_pct"]) >= MIN_BLOAT_PCT]
    if not judged:
        return Measurement(0.0, "bytes", tuple(found))
    worst = judged[0]
    return Measurement(
        num(worst["wasted_bytes"]),
        "bytes",
        tuple(found),
        fix=f"VACUUM (FULL, ANALYZE) {ident(worst['schema'], worst['table'])}; -- takes an "
        "exclusive lock: in a maintenance window (or pg_repack online)",
    )


def orphans(conn: psycopg.Connection[Any]) -> Measurement:
    # A validated foreign key with its triggers enabled proves there are none; only the
    # others (NOT VALID, or triggers disabled, e.g. by a restore) are searched.
    suspects = rows(
        conn,
        """
        SELECT n.nspname AS schema, t.relname AS "table", c.conname AS constraint,
               rn.nspname AS ref_schema, rt.relname AS ref_table,
               (SELECT string_agg(a.attname, ',' ORDER BY k.ord)
                FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum)
                   AS columns,
               (SELECT string_agg(a.attname, ',' ORDER BY k.ord)
                FROM unnest(c.confkey) WITH ORDINALITY k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum)
                   AS ref_columns,
               NOT c.convalidated AS not_valid
        FROM pg_constraint c
        JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        JOIN pg_class rt ON rt.oid = c.confrelid
        JOIN pg_namespace rn ON rn.oid = rt.relnamespace
        WHERE c.contype = 'f' AND (NOT c.convalidated OR EXISTS (
            SELECT 1 FROM pg_trigger g WHERE g.tgconstraint = c.oid AND g.tgenabled = 'D'))
        ORDER BY 1, 2, 3
        """,
    )
    found: list[Detail] = []
    for fk in suspects:
        cols = str(fk["columns"]).split(",")
        refs = str(fk["ref_columns"]).split(",")
        query = sql.SQL(
            "SELECT count(*) FROM {child} c WHERE {present} AND NOT EXISTS "
            "(SELECT 1 FROM {parent} p WHERE {match})"
        ).format(
            child=sql.Identifier(str(fk["schema"]), str(fk["table"])),
            parent=sql.Identifier(str(fk["ref_schema"]), str(fk["ref_table"])),
            present=sql.SQL(" AND ").join(
                sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(col)) for col in cols
            ),
            match=sql.SQL(" AND ").join(
                sql.SQL("p.{} = c.{}").format(sql.Identifier(ref), sql.Identifier(col))
                for col, ref in zip(cols, refs, strict=True)
            ),
        )
        row = conn.execute(query).fetchone()
        found.append({**fk, "orphans": int(row[0]) if row else 0})
    found.sort(key=lambda r: -num(r["orphans"]))
    total = sum(num(r["orphans"]) for r in found)
    fix = None
    if total:
        w = found[0]
        fix = (
            f"delete or re-point the {int(num(w['orphans']))} rows of "
            f"{ident(w['schema'], w['table'])} whose ({w['columns']}) match no "
            f"{ident(w['ref_schema'], w['ref_table'])} row, then ALTER TABLE "
            f"{ident(w['schema'], w['table'])} VALIDATE CONSTRAINT {ident(w['constraint'])};"
        )
    return Measurement(total, "rows", tuple(found), fix=fix)
