"""The operators' overview in numbers: users (total, active, new this week), live sessions,
database size. One statement; what the web app's Overview page shows.

Analytics (issue 11) will own user counts over time; until it lands this is the one
place the overview's counts are read.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypedDict, cast

import psycopg
from psycopg.rows import dict_row

NEW_WINDOW = timedelta(days=7)

SUMMARY_SQL = """
SELECT u.total, u.active, u.new, s.live, pg_database_size(current_database()) AS "databaseBytes"
FROM (SELECT count(*) AS total,
             count(*) FILTER (WHERE status = 'ACTIVE') AS active,
             count(*) FILTER (WHERE "createdAt" >= now() - %(window)s) AS new
      FROM "User") u,
     (SELECT count(*) AS live FROM "Session"
      WHERE "revokedAt" IS NULL AND "expiresAt" > now() AND "lastSeenAt" > now() - %(idle)s) s
"""


class Summary(TypedDict):
    total: int
    active: int
    new: int  # registered in the last NEW_WINDOW
    live: int  # sessions neither revoked, expired nor idle
    databaseBytes: int


def summary(conn: psycopg.Connection[Any], *, idle: timedelta) -> Summary:
    """Users, live sessions and the database's size, now."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(SUMMARY_SQL, {"window": NEW_WINDOW, "idle": idle})
        row = cur.fetchone()
    assert row is not None
    return cast(Summary, row)
