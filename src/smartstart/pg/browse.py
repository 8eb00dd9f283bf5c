"""A read-only look at any table of a schema: its columns, and a page of its rows filtered
and sorted by a column. Knows nothing of the platform: names come from the catalog and
reach the SQL only as `sql.Identifier`, values only as parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from smartstart.errors import SmartStartError

MAX_OFFSET = 10_000  # deeper than this, a filter finds rows faster than paging does
MAX_VALUE = 500  # characters of a filter value
OPS = ("=", "contains", "starts", ">", "<", "is null")


class BrowseError(SmartStartError):
    code = "invalid"


@dataclass(frozen=True)
class Table:
    name: str
    rows: int  # the planner's estimate (reltuples), -1 when never analysed
    bytes: int


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class Rows:
    columns: list[Column]
    rows: list[tuple[Any, ...]]
    more: bool


def tables(conn: psycopg.Connection[Any], schema: str = "public") -> list[Table]:
    """The schema's tables by name, with estimated rows and total size."""
    cur = conn.execute(
        "SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname",
        [schema],
    )
    return [Table(r[0], int(r[1]), int(r[2])) for r in cur]


def columns(conn: psycopg.Connection[Any], table: str, schema: str = "public") -> list[Column]:
    """The table's columns in order; BrowseError when there is no such table."""
    cur = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod)"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')"
        " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        [schema, table],
    )
    found = [Column(r[0], r[1]) for r in cur]
    if not found:
        raise BrowseError(f"no table {table[:100]!r}")
    return found


def rows(
    conn: psycopg.Connection[Any],
    table: str,
    *,
    schema: str = "public",
    where: tuple[str, str, str] | None = None,
    sort: str | None = None,
    descending: bool = False,
    offset: int = 0,
    limit: int = 50,
    hidden: frozenset[str] = frozenset(),
) -> Rows:
    """A page of rows; `where` is (column, op, value) with op one of OPS; `hidden` columns
    come back as None (secrets such as password hashes)."""
    cols = columns(conn, table, schema)
    names = {c.name for c in cols}
    if not 0 <= offset <= MAX_OFFSET:
        raise BrowseError(f"offset must be from 0 to {MAX_OFFSET}: filter to go further")
    if not 1 <= limit <= 500:
        raise BrowseError("limit must be from 1 to 500")
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    if where is not None:
        column, op, value = where
        if column not in names:
            raise BrowseError(f"no column {column[:100]!r}")
        if op not in OPS:
            raise BrowseError(f"the operator must be one of {', '.join(OPS)}")
        if len(value) > MAX_VALUE or "\x00" in value:
            raise BrowseError(f"a filter value is at most {MAX_VALUE} characters, without NUL")
        ident = sql.Identifier(column)
        if op == "is null":
            clauses.append(sql.SQL("{} IS NULL").format(ident))
        elif op in ("contains", "starts"):
            escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append(sql.SQL("{}::text ILIKE %s").format(ident))
            params.append(f"%{escaped}%" if op == "contains" else f"{escaped}%")
        else:
            # Compared as text cast to the column's type by the server: a value that is no
            # such type is the database's clear error, never an injection.
            clauses.append(sql.SQL("{} {} %s").format(ident, sql.SQL(op)))
            params.append(value)
    order: sql.Composable = sql.SQL("")
    if sort is not None:
        if sort not in names:
            raise BrowseError(f"no column {sort[:100]!r}")
        direction = sql.SQL(" DESC") if descending else sql.SQL(" ASC")
        order = sql.SQL(" ORDER BY {}{}").format(sql.Identifier(sort), direction)
    select = sql.SQL(", ").join(
        sql.SQL("NULL") if c.name in hidden else sql.Identifier(c.name) for c in cols
    )
    query = sql.SQL("SELECT {} FROM {}{}{} LIMIT %s OFFSET %s").format(
        select,
        sql.Identifier(schema, table),
        sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL(""),
        order,
    )
    try:
        found = conn.execute(query, [*params, limit + 1, offset]).fetchall()
    except (psycopg.DataError, psycopg.errors.UndefinedFunction) as e:
        raise BrowseError(f"the filter does not fit the column: {str(e).splitlines()[0]}") from e
    return Rows(cols, found[:limit], len(found) > limit)
