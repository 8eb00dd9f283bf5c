"""Substring search of users: the conditions, and the newest-first page found in two steps.

A page of the newest users matching a substring is cheap one of two ways, and which
one depends on how many users match: a common substring is met soon walking creation
order (the covering index `"User_createdAt_id_searchText_idx"` holds the searched text,
so the walk reads no table row); a rare one is read from the trigram index, its matches
sorted. The planner's estimate of a substring's frequency is a guess (at a million
users it guessed 100 for 28,000 matches and sorted them all: 120-300 ms), so the choice
is made by trying: walk at most `WALK_PER_ROW` users per row of the page, a fifth of it
first (a substring too rare there goes on to the trigram index at once); when that did
not fill the page, the substring is rare (fewer than one user in 200 among the newest)
and its trigram matches are few. At 1,000,000 users the median search takes ~2 ms and
the slowest ~9 ms (docs/benchmarks.md, "Search: any substring").
"""

from __future__ import annotations

import string
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Protocol

import psycopg
from psycopg import pq, sql
from psycopg.rows import dict_row

from smartstart.db.vocabulary import SEPARATORS, search_key

# Users walked, per row of the page, before the search counts as rare (~0.3 µs each,
# index-only): a page of 50 walks up to 10,200 users (~3 ms at a million); a rarer
# substring has fewer than ~5,000 matches there. Of 200, 350 and 500 per row, measured on
# the same 150 substrings at 1M users, 200 was fastest in total and in the slowest ones
# (docs/benchmarks.md, "Search: any substring").
WALK_PER_ROW = 200
MAX_WALK = 50_000
# The walk starts with a fifth of its length: a substring met there fewer than once per
# fifth of the page would not fill it in the whole walk either, so it goes to the trigram
# index at once (the rare substrings whose trigrams are each common paid both steps).
PROBE_PARTS = 5
# The pattern made as "searchText" is (folded when planned): the match, and what the
# trigram index serves.
_PATTERN = search_key("%s")
_MATCH = 'u."searchText" LIKE ' + _PATTERN
# The plans the trigram step must not take: a walk or a scan of every user.
_NOT_THESE = ("enable_seqscan", "enable_indexscan", "enable_indexonlyscan")
# A trigram that nearly every user's text holds (the domain of everyone's email: "mar" of
# "smartstart" in all demo users) narrows the trigram step's matches by nothing and costs
# it the most: its list of users is read whole. The step asks the index for the parts of
# the substring without such trigrams and re-checks the whole substring on each match
# (`amara co` at 1M users: 9.5 → 6.4 ms). Which trigrams: those in COMMON_SHARE of the
# column's statistics sample (pg_stats, kept by ANALYZE), read again after COMMON_TTL.
COMMON_SHARE = 0.9
COMMON_TTL = 300.0
_MIN_SAMPLE = 20
_common: dict[tuple[Any, ...], tuple[float, frozenset[str]]] = {}
_LETTERS = dict(SEPARATORS)
# The characters counted in a trigram here: those pg_trgm surely reads as letters or
# digits (ASCII ones, and the separators' letters, which the search key relies on; other
# letters depend on the server's locale). A part judged to hold no trigram is left out,
# never wrongly kept: the index reads every entry for a part with no trigram.
_WORD = frozenset(
    string.ascii_lowercase + string.digits + "".join(c.lower() for _, c in SEPARATORS)
)


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
    probe = walk // PROBE_PARTS
    found = _walk(read, where, [*position_params, probe, pattern, rows])
    if len(found) < rows and len(found) * PROBE_PARTS >= rows:
        # On from the probe's last match (its non-matching tail is walked again).
        last = found[-1]
        past = sql.SQL('(u."createdAt", u.id) {} (%s, %s)').format(
            sql.SQL(">" if ascending else "<")
        )
        found += _walk(
            read,
            sql.SQL(" WHERE ") + sql.SQL(" AND ").join([*position, past]),
            [*position_params, last["_key"], last["id"], walk - probe, pattern, rows - len(found)],
        )
    if len(found) == rows:
        return found
    match, match_params = trigram_conditions(q, common_trigrams(conn))
    with _only_bitmaps(conn):
        return _from_trigrams(read, [*match, *position], [*match_params, *position_params, rows])


def trigram_conditions(q: str, common: frozenset[str]) -> tuple[list[sql.Composable], list[Any]]:
    """conditions(q) for the trigram index: without the `common` trigrams where it can."""
    pieces = rare_pieces(q, common)
    if not pieces:
        return conditions(q)
    # The whole substring re-checked on each match, out of the index's reach (|| '').
    whole = sql.SQL("(u.\"searchText\" || '') LIKE " + _PATTERN)
    return [*(sql.SQL(_MATCH) for _ in pieces), whole], [
        *(f"%{escape_like(p)}%" for p in pieces),
        f"%{escape_like(q)}%",
    ]


def _lower(text: str) -> str:
    """text lower-cased character by character, as PostgreSQL's lower() (same length)."""
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _folded(text: str) -> str:
    """text as pg_trgm reads the search key of it: lower-cased, the separators made
    letters, folded again."""
    return _lower("".join(_LETTERS.get(c, c) for c in _lower(text)))


def _trigram_starts(folded: str) -> Iterator[int]:
    """Where each trigram of folded starts: three letters or digits (pg_trgm's words)."""
    for i in range(len(folded) - 2):
        if all(c in _WORD for c in folded[i : i + 3]):
            yield i


def rare_pieces(q: str, common: frozenset[str]) -> list[str]:
    """The longest parts of q that hold trigrams, none of them common; [] when q holds no
    common trigram (or only common ones: the index then gets q whole)."""
    folded = _folded(q)
    starts = list(_trigram_starts(folded))
    if not any(folded[i : i + 3] in common for i in starts):
        return []
    pieces: list[str] = []
    begin = 0
    for i in starts:
        if folded[i : i + 3] in common:
            if i + 2 - begin >= 3:
                pieces.append(q[begin : i + 2])
            begin = i + 1
    if len(q) - begin >= 3:
        pieces.append(q[begin:])
    return [p for p in pieces if any(True for _ in _trigram_starts(_folded(p)))]


def common_trigrams(conn: psycopg.Connection[Any]) -> frozenset[str]:
    """The trigrams of at least COMMON_SHARE of the users' search keys (ANALYZE's sample)."""
    key = (conn.info.host, conn.info.port, conn.info.dbname)
    cached = _common.get(key)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    row = conn.execute(
        "SELECT histogram_bounds::text::text[] FROM pg_stats WHERE schemaname = current_schema()"
        " AND tablename = 'User' AND attname = 'searchText'",
        prepare=False,
    ).fetchone()
    samples: list[str] = list(row[0] or []) if row else []
    found: frozenset[str] = frozenset()
    if len(samples) >= _MIN_SAMPLE:
        counts: dict[str, int] = {}
        for sample in samples:
            text = _lower(sample)
            for trigram in {text[i : i + 3] for i in _trigram_starts(text)}:
                counts[trigram] = counts.get(trigram, 0) + 1
        found = frozenset(t for t, n in counts.items() if n >= COMMON_SHARE * len(samples))
    _common[key] = (time.monotonic() + COMMON_TTL, found)
    return found


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
