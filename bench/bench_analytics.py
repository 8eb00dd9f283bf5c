"""Every analysis of `smartstart analytics` on 1,000,000 demo users: p50/p99 of the domain
function (its SQL round trips included) against the target of issue 11, <= 500 ms each.

`python -m bench analytics`. Uses bench_listings' cached cluster (BENCH_LISTINGS_DIR, built
first when missing), migrated to head (migration 0007 counts everything once), with
ANALYTICS_PENDING deltas not yet compacted: the most a read meets before it folds them.
For comparison, the same numbers computed live from the tables (what the summaries save).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.bench_listings import _p, database
from bench.bench_listings import _timed as listings_timed

SAMPLES = int(os.environ.get("BENCH_ANALYTICS_SAMPLES", "30"))
TARGET_MS = 500.0
PENDING = int(os.environ.get("ANALYTICS_PENDING", "4998"))  # just under COMPACT_AT

# The same numbers without the summaries: what a naive implementation would run.
LIVE = {
    "registrations (live)": 'SELECT date("createdAt" AT TIME ZONE \'UTC\'), count(*) FROM "User"'
    " WHERE \"createdAt\" >= now() - interval '30 days' GROUP BY 1",
    "roles (live)": 'SELECT role, count(*) FROM "User" GROUP BY role',
    "xp (live)": "SELECT CASE WHEN xp < 100 THEN '0-99' WHEN xp < 500 THEN '100-499'"
    " WHEN xp < 1000 THEN '500-999' ELSE '1000+' END, count(*) FROM \"User\" GROUP BY 1",
    "journey (live)": 'SELECT "stageId", status, count(*) FROM "UserJourneyState" GROUP BY 1, 2',
}


def _timed(call: Callable[[], Any]) -> tuple[float, float]:
    """p50 and p99 in ms of SAMPLES calls, after bench_listings' warm-up."""
    return _p(listings_timed(call, SAMPLES))


def _prepare(settings: Any) -> None:
    """Migrate to head and leave PENDING deltas (pairs that cancel out) uncompacted."""
    import psycopg

    from smartstart.db import migrate

    dsn = settings.url_for()
    started = time.perf_counter()
    migrate.upgrade(settings.sqlalchemy_url())
    print(f"  migrated to head in {time.perf_counter() - started:.1f} s")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT smartstart_analytics_compact()")
        conn.execute(
            "INSERT INTO analytics_delta (kind, day, subject, status, level, band, n, xp)"
            " SELECT 'user', current_date - (g / 2 %% 365), 'MEMBER', 'ACTIVE', 'OWLET', '0-99',"
            " CASE WHEN g %% 2 = 0 THEN 1 ELSE -1 END, 0 FROM generate_series(0, %s - 1) g",
            [PENDING - PENDING % 2],
        )
        conn.execute("VACUUM ANALYZE analytics_delta")
        conn.execute("VACUUM ANALYZE analytics_count")
        conn.execute('VACUUM ANALYZE "UserJourneyState"')
        rows = conn.execute("SELECT count(*) FROM analytics_count").fetchone()
        print(f"  analytics_count: {rows[0] if rows else '?'} rows; {PENDING} pending deltas")


def _calls() -> list[tuple[str, Callable[[Any], Any]]]:
    from smartstart.domain import analytics
    from smartstart.domain.analytics import DateRange

    today = datetime.now(UTC).date()
    month = DateRange(today - timedelta(days=29), today)
    return [
        ("registrations per day (30)", lambda c: analytics.registrations(c)),
        ("registrations per week (12)", lambda c: analytics.registrations(c, period="week")),
        (
            "registrations per day, 10 years",
            lambda c: analytics.registrations(
                c, DateRange(today - timedelta(days=3650), today), "day"
            ),
        ),
        ("activity per day (30)", lambda c: analytics.activity(c)),
        ("roles, all users", lambda c: analytics.roles(c)),
        ("roles, last 30 days", lambda c: analytics.roles(c, month)),
        ("xp, all users", lambda c: analytics.xp(c)),
        ("status, all users", lambda c: analytics.statuses(c)),
        ("journey, all users", lambda c: analytics.journey(c)),
        ("journey, last 30 days", lambda c: analytics.journey(c, month)),
        (
            "journey, one day (with medians)",
            lambda c: analytics.journey(
                c, DateRange(today - timedelta(days=200), today - timedelta(days=200))
            ),
        ),
        (
            "journey, last 365 days",
            lambda c: analytics.journey(c, DateRange(today - timedelta(days=364), today)),
        ),
    ]


# One-row writes the triggers follow, each timed with the analytics triggers enabled and
# disabled (in one transaction, rolled back): what the summaries cost a writer.
WRITES = {
    "UPDATE one user's xp": 'UPDATE "User" SET xp = xp + 1 WHERE id = %(user)s',
    "UPDATE one user's lastActive": 'UPDATE "User" SET "lastActive" = now() WHERE id = %(user)s',
    "UPDATE one journey state": 'UPDATE "UserJourneyState" SET "updatedAt" = now()'
    ' WHERE "userId" = %(user)s',
}
ANALYTICS_TRIGGERS = (
    ("User", "User_analytics_update"),
    ("UserJourneyState", "UserJourneyState_analytics_update"),
)


def _write_cost(conn: Any) -> None:
    from psycopg import sql

    users = [r[0] for r in conn.execute('SELECT id FROM "User" LIMIT 200').fetchall()]
    print("one-row writes, ms p50 / p99: with the analytics triggers, without")
    for label, statement in WRITES.items():
        figures = []
        for enabled in (True, False):
            times = []
            with conn.transaction(force_rollback=True):
                if not enabled:
                    for table, trigger in ANALYTICS_TRIGGERS:
                        conn.execute(
                            sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(
                                sql.Identifier(table), sql.Identifier(trigger)
                            )
                        )
                for user in users:
                    started = time.perf_counter()
                    conn.execute(statement, {"user": user})
                    times.append((time.perf_counter() - started) * 1000)
            times.sort()
            figures.append(
                f"{statistics.median(times):6.2f} / {times[int(0.99 * (len(times) - 1))]:6.2f}"
            )
        print(f"  {label:<34} {figures[0]}   {figures[1]}")


def main() -> int:
    """Measure each analysis; 0 when every p50 and p99 is within TARGET_MS."""
    import psycopg

    print(f"analytics at 1,000,000 demo users; {os.cpu_count()} cores, load {os.getloadavg()}")
    missed = []
    with database() as built:
        dsn = built.db.dsn
        _prepare(built.db.settings)
        print(f"domain, ms ({SAMPLES} samples):  analysis                          p50      p99")
        with psycopg.connect(dsn, autocommit=True) as conn:
            for label, call in _calls():
                p50, p99 = _timed(lambda call=call: call(conn))  # type: ignore[misc]
                ok = p99 <= TARGET_MS
                note = ""
                if label.startswith("journey"):
                    omitted = call(conn).mediansOmitted
                    note = "  (medians omitted: cohort too large)" if omitted else "  (medians)"
                print(f"  {label:<34} {p50:8.1f} {p99:8.1f}  {'ok' if ok else 'MISSED'}{note}")
                if not ok:
                    missed.append(label)
            print("for comparison, live from the tables (no summaries), ms:")
            for label, query in LIVE.items():
                p50, p99 = _timed(lambda q=query: conn.execute(q).fetchall())  # type: ignore[misc]
                print(f"  {label:<34} {p50:8.1f} {p99:8.1f}")
            _write_cost(conn)
    print(f"load after: {os.getloadavg()}")
    if missed:
        print(f"MISSED p99 <= {TARGET_MS} ms: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
