"""Substring search of users: the conditions, and the newest-first page found in two steps.

A page of the newest users matching a substring is cheap one of two ways, and which
one depends on how many users match: a common substring is met soon walking creation
order (the covering index `"User_createdAt_id_searchText_idx"` holds the searched text,
so the walk reads no table row); a rare one is read from the trigram index, its matches
sorted. The planner's estimate of a substring's frequency is a guess (at a million
users it guessed 100 for 28,000 matches and sorted them all: 120-300 ms), so the choice
is made by trying: walk at most `WALK_PER_ROW` users per row of the page; when that did
not fill the page, the substring is rare (fewer than one user in 200 among the newest)
and its trigram matches are few. At 1,000,000 users the median search takes ~2 ms and the
slowest tens (docs/benchmarks.md, "Search: any substring").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Protocol

import psycopg
from psycopg import pq, sql
from psycopg.rows import dict_row

from smartstart.db.vocabulary import search_key

# Users walked, per row of the page, before the search counts as rare (~0.3 µs each,
# index-only): a page of 50 walks up to 10,200 users (~3 ms at a million); a rarer
# substring has fewer than ~5,000 matches there. Of 200, 350 and 500 per row, measured on
# the same 150 substrings at 1M users, 200 was fastest in total and in the slowest ones
# (docs/benchmarks.md, "Search: any substring").
WALK_PER_ROW = 200
MAX_WALK = 50_000
# The pattern made as "searchText" is (folded when planned): the match, and what the
# trigram index serves.
_PATTERN = search_key("%s")
_MATCH = 'u."searchText" LIKE ' + _PATTERN
# The plans the trigram step must not take: a walk or a scan of every user.
_NOT_THESE = ("enable_seqscan", "enable_indexscan", "enable_indexonlyscan")


def escape_like(text: str) -> str:
    """text with LIKE's wildcards and escape character taken literally (ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def conditions(q: str) -> tuple[list[sql.Composable], list[Any]]:
    """WHERE conditions (on `"User" u`) for users with q in a searched field, any case."""
    return [sql.SQL(_MATCH)], [f"%{escape_like(q)}%"]


def newest_matching(
    conn: psycopg.Connection[Any],
    q: str,
    columns: sql.Composable,
    position: list[sql.Composable],
    position_params: list[Any],
    ascending: bool,
    rows: int,
) -> list[dict[str, Any]]:
    """Up to `rows` users matching q in creation order, past the keyset `position`.

    `position` is `list_users`' cursor condition on `"User" u` (none on a first page);
    each row has `columns` and `"_key"` (its "createdAt"), as `list_users` reads them.
    """
    direction = sql.SQL("ASC" if ascending else "DESC")
    pattern = f"%{escape_like(q)}%"

    def read(template: str, params: list[Any], **parts: sql.Composable) -> list[dict[str, Any]]:
        query = sql.SQL(template).format(cols=columns, dir=direction, **parts)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params, prepare=False)
            return cur.fetchall()

    walk = min(WALK_PER_ROW * rows, MAX_WALK)
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(position) if position else sql.SQL("")
    found = _walk(read, where, [*position_params, walk, pattern, rows])
    if len(found) == rows:
        return found
    match, match_params = conditions(q)
    with _only_bitmaps(conn):
        return _from_trigrams(read, [*match, *position], [*match_params, *position_params, rows])


class Read(Protocol):
    """Runs a statement template of the page's columns and order: its rows."""

    def __call__(
        self, template: str, params: list[Any], **parts: sql.Composable
    ) -> list[dict[str, Any]]: ...


def _walk(read: Read, after: sql.Composable, params: list[Any]) -> list[dict[str, Any]]:
    """The first matches among the next users in creation order (index-only)."""
    return read(
        'SELECT {cols}, u."createdAt" AS "_key" FROM ('
        " SELECT w.id FROM ("
        '  SELECT u.id, u."createdAt", u."searchText" FROM "User" u{after}'
        '  ORDER BY u."createdAt" {dir}, u.id {dir} LIMIT %s'
        ' ) w WHERE w."searchText" LIKE {pattern}'
        ' ORDER BY w."createdAt" {dir}, w.id {dir} LIMIT %s'
        ') m JOIN "User" u ON u.id = m.id ORDER BY u."createdAt" {dir}, u.id {dir}',
        params,
        after=after,
        pattern=sql.SQL(_PATTERN),
    )


def _from_trigrams(
    read: Read, where: list[sql.Composable], params: list[Any]
) -> list[dict[str, Any]]:
    """The first matches in creation order, from all the matches the trigram index finds."""
    return read(
        'SELECT {cols}, u."createdAt" AS "_key" FROM "User" u WHERE {where}'
        ' ORDER BY u."createdAt" {dir}, u.id {dir} LIMIT %s',
        params,
        where=sql.SQL(" AND ").join(where),
    )


@contextmanager
def _only_bitmaps(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """The statements inside planned with bitmap scans only (the trigram index)."""
    # set_config(…, true) lasts until the transaction ends: one is needed, and the
    # caller's own statements after this one must get the planner back as it was.
    with conn.transaction() if conn.autocommit else nullcontext():
        previous = conn.execute(
            "SELECT " + ", ".join(f"current_setting('{n}')" for n in _NOT_THESE)
        ).fetchone()
        conn.execute("SELECT " + ", ".join(f"set_config('{n}', 'off', true)" for n in _NOT_THESE))
        try:
            yield
        finally:
            if conn.info.transaction_status != pq.TransactionStatus.INERROR:
                conn.execute(
                    "SELECT " + ", ".join(f"set_config('{n}', %s, true)" for n in _NOT_THESE),
                    list(previous or ()),
                )
