"""The live schema as the catalog holds it (`smartstart db inspect`, the guide's `prisma db
pull`): tables and their columns, indexes, constraints, triggers, functions, extensions.

Knows nothing of the platform: it reads one schema (the connection's current one)."""

from __future__ import annotations

from typing import Any, TypedDict

import psycopg
from psycopg.rows import dict_row


class Column(TypedDict):
    name: str
    type: str
    nullable: bool
    default: str | None


class Table(TypedDict):
    name: str
    kind: str  # table, partitioned table, view, materialized view, foreign table
    owner: str
    rows_estimate: int
    columns: list[Column]


class Index(TypedDict):
    name: str
    table: str
    unique: bool
    primary: bool
    valid: bool
    definition: str


class Constraint(TypedDict):
    name: str
    table: str
    type: str
    definition: str


class Trigger(TypedDict):
    name: str
    table: str
    enabled: bool
    definition: str


class Function(TypedDict):
    name: str  # the signature, as regprocedure prints it
    returns: str
    language: str
    security_definer: bool
    search_path: str | None


class Extension(TypedDict):
    name: str
    version: str


class Schema(TypedDict):
    schema: str
    tables: list[Table]
    indexes: list[Index]
    constraints: list[Constraint]
    triggers: list[Trigger]
    functions: list[Function]
    extensions: list[Extension]


_KINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
}
_CONSTRAINT_TYPES = {
    "p": "primary key",
    "f": "foreign key",
    "u": "unique",
    "c": "check",
    "x": "exclusion",
    "t": "trigger",
}
# Objects of the schema that belong to an extension (pg_trgm's functions) are the
# extension's, listed once as it.
_NOT_EXTENSION = """NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass
                  AND d.objid = {oid} AND d.deptype = 'e')"""


def _rows(conn: psycopg.Connection[Any], query: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query)
        return list(cur.fetchall())


def inspect(conn: psycopg.Connection[Any]) -> Schema:
    """The connection's current schema, read from the catalog in one transaction."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        (schema,) = conn.execute("SELECT current_schema()").fetchone() or ("public",)
        return Schema(
            schema=str(schema),
            tables=_tables(conn),
            indexes=[Index(**r) for r in _rows(conn, _INDEXES)],  # type: ignore[typeddict-item]
            constraints=[
                Constraint(
                    name=r["name"],
                    table=r["table"],
                    type=_CONSTRAINT_TYPES.get(r["contype"], r["contype"]),
                    definition=r["definition"],
                )
                for r in _rows(conn, _CONSTRAINTS)
            ],
            triggers=[Trigger(**r) for r in _rows(conn, _TRIGGERS)],  # type: ignore[typeddict-item]
            functions=[Function(**r) for r in _rows(conn, _FUNCTIONS)],  # type: ignore[typeddict-item]
            extensions=[Extension(**r) for r in _rows(conn, _EXTENSIONS)],  # type: ignore[typeddict-item]
        )


def _tables(conn: psycopg.Connection[Any]) -> list[Table]:
    tables: dict[str, Table] = {}
    for r in _rows(
        conn,
        f"""
        SELECT c.relname AS name, c.relkind AS kind, pg_get_userbyid(c.relowner) AS owner,
               greatest(c.reltuples, 0)::bigint AS rows_estimate
        FROM pg_class c
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND {_NOT_EXTENSION.format(catalog="pg_class", oid="c.oid")}
        ORDER BY c.relname
        """,
    ):
        tables[r["name"]] = Table(
            name=r["name"],
            kind=_KINDS[r["kind"]],
            owner=r["owner"],
            rows_estimate=int(r["rows_estimate"]),
            columns=[],
        )
    for r in _rows(
        conn,
        """
        SELECT c.relname AS "table", a.attname AS name,
               format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable,
               CASE WHEN a.attidentity <> '' THEN 'generated '
                         || CASE a.attidentity WHEN 'a' THEN 'always' ELSE 'by default' END
                         || ' as identity'
                    ELSE pg_get_expr(d.adbin, d.adrelid) END AS "default"
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum
        """,
    ):
        table = tables.get(r["table"])
        if table is not None:
            table["columns"].append(
                Column(name=r["name"], type=r["type"], nullable=r["nullable"], default=r["default"])
            )
    return list(tables.values())


_INDEXES = """
SELECT i.relname AS name, t.relname AS "table", x.indisunique AS unique,
       x.indisprimary AS primary, x.indisvalid AS valid,
       pg_get_indexdef(x.indexrelid) AS definition
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relnamespace = current_schema()::regnamespace
ORDER BY t.relname, i.relname
"""

_CONSTRAINTS = """
SELECT k.conname AS name, c.relname AS "table", k.contype,
       pg_get_constraintdef(k.oid) AS definition
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE c.relnamespace = current_schema()::regnamespace
ORDER BY c.relname, k.contype, k.conname
"""

_TRIGGERS = """
SELECT t.tgname AS name, c.relname AS "table", t.tgenabled <> 'D' AS enabled,
       pg_get_triggerdef(t.oid) AS definition
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal
ORDER BY c.relname, t.tgname
"""

_FUNCTIONS = f"""
SELECT p.oid::regprocedure::text AS name, pg_get_function_result(p.oid) AS returns,
       l.lanname AS language, p.prosecdef AS security_definer,
       (SELECT substr(c, 13) FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')
         AS search_path
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = current_schema()::regnamespace
  AND {_NOT_EXTENSION.format(catalog="pg_proc", oid="p.oid")}
ORDER BY 1
"""

_EXTENSIONS = """
SELECT extname AS name, extversion AS version FROM pg_extension ORDER BY extname
"""
