"""Statistics history: snapshots of pg_stat_statements and table sizes in the platform's own
tables (migration 0006), pruned by retention, and what changed since a point in time.

The Brain's scheduler takes a snapshot at the slots of `SMARTSTART_STATS_SNAPSHOT_SCHEDULE`
(every 5 minutes by default; services/jobs.py calls `snapshot_job(settings)`);
`smartstart db stats --snapshot` takes one by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from smartstart.config import Settings
from smartstart.pg import stats
from smartstart.pg.checks import Check, Measurement, num, rows

# Statements kept per snapshot: the slowest by mean time and the heaviest by total time.
KEEP_STATEMENTS = 200


def take_snapshot(conn: psycopg.Connection[Any]) -> int:
    """Record the statements' counters and the tables' sizes now; the snapshot's id.

    In the caller's transaction (the face commits).
    """
    row = conn.execute(
        'INSERT INTO stats_snapshot ("databaseBytes") '
        "VALUES (pg_database_size(current_database())) RETURNING id"
    ).fetchone()
    assert row is not None
    snapshot = int(row[0])
    counted = stats.statement_counters(conn, limit=None)
    heaviest = sorted(counted.items, key=lambda r: -num(r["total_ms"]))[:KEEP_STATEMENTS]
    slowest = counted.items[:KEEP_STATEMENTS]
    kept = {int(num(r["queryid"])): r for r in (*slowest, *heaviest)}
    with conn.cursor() as cur:
        cur.executemany(
            'INSERT INTO stats_statement ("snapshotId", queryid, query, calls, "totalMs", rows) '
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (snapshot, qid, str(r["query"] or ""), r["calls"], r["total_ms"], r["rows"])
                for qid, r in kept.items()
            ],
        )
    conn.execute(
        """
        INSERT INTO stats_table ("snapshotId", schema, "table", "totalBytes", "tableBytes",
                                 "indexBytes", "liveTuples", "deadTuples")
        SELECT %s, schemaname, relname, pg_total_relation_size(relid),
               pg_relation_size(relid), pg_indexes_size(relid), n_live_tup, n_dead_tup
        FROM pg_stat_user_tables
        """,
        [snapshot],
    )
    return snapshot


def prune_snapshots(conn: psycopg.Connection[Any], retention: timedelta) -> int:
    """Delete the snapshots older than retention (their rows go with them); how many."""
    cur = conn.execute('DELETE FROM stats_snapshot WHERE "takenAt" < now() - %s', [retention])
    return cur.rowcount


def snapshot_job(settings: Settings) -> int:
    """One scheduled run: a snapshot, then pruning by retention; the snapshot's id."""
    with psycopg.connect(settings.url_for(), connect_timeout=10) as conn:
        snapshot = take_snapshot(conn)
        prune_snapshots(conn, timedelta(days=settings.stats_retention_days))
        conn.commit()
    return snapshot


@dataclass(frozen=True)
class StatementDelta:
    """A statement over the window: its calls and mean time then, against its mean before."""

    queryid: int
    query: str
    calls: int
    mean_ms: float
    before_mean_ms: float | None
    total_ms: float

    def as_json(self) -> dict[str, object]:
        return {
            "queryid": str(self.queryid),
            "query": self.query,
            "calls": self.calls,
            "mean_ms": round(self.mean_ms, 3),
            "before_mean_ms": None
            if self.before_mean_ms is None
            else round(self.before_mean_ms, 3),
            "total_ms": round(self.total_ms, 3),
        }


@dataclass(frozen=True)
class TableDelta:
    schema: str
    table: str
    total_bytes: int
    grew_bytes: int
    live_tuples: int
    grew_tuples: int

    def as_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Since:
    """What changed between a snapshot and now."""

    baseline_at: datetime
    database_bytes: int
    database_grew_bytes: int
    statements: tuple[StatementDelta, ...]
    tables: tuple[TableDelta, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "baseline_at": self.baseline_at.isoformat(),
            "database_bytes": self.database_bytes,
            "database_grew_bytes": self.database_grew_bytes,
            "statements": [s.as_json() for s in self.statements],
            "tables": [t.as_json() for t in self.tables],
        }


def baseline(conn: psycopg.Connection[Any], since: datetime) -> tuple[int, datetime, int] | None:
    """The snapshot to compare with: the last one at or before `since`, else the first after."""
    row = conn.execute(
        """
        (SELECT id, "takenAt", "databaseBytes" FROM stats_snapshot WHERE "takenAt" <= %s
         ORDER BY "takenAt" DESC LIMIT 1)
        UNION ALL
        (SELECT id, "takenAt", "databaseBytes" FROM stats_snapshot WHERE "takenAt" > %s
         ORDER BY "takenAt" LIMIT 1)
        LIMIT 1
        """,
        [since, since],
    ).fetchone()
    return None if row is None else (int(row[0]), row[1], int(row[2]))


def since(conn: psycopg.Connection[Any], when: datetime, limit: int = 20) -> Since | None:
    """The statements that got slower and the tables that grew since `when` (None: no
    snapshot to compare with)."""
    base = baseline(conn, when)
    if base is None:
        return None
    snapshot, taken_at, db_bytes = base
    before = {
        int(r[0]): (int(r[1]), float(r[2]))
        for r in conn.execute(
            'SELECT queryid, calls, "totalMs" FROM stats_statement WHERE "snapshotId" = %s',
            [snapshot],
        )
    }
    deltas = []
    for r in stats.statement_counters(conn, limit=None).items:
        qid, calls, total = int(num(r["queryid"])), int(num(r["calls"])), num(r["total_ms"])
        then = before.get(qid)
        # Fewer calls than before: the counters were reset since; all of it is new.
        if then is not None and calls >= then[0]:
            new_calls, new_total = calls - then[0], total - then[1]
            before_mean = then[1] / then[0] if then[0] else None
        else:
            new_calls, new_total, before_mean = calls, total, None
        if new_calls <= 0:
            continue
        deltas.append(
            StatementDelta(
                qid, str(r["query"] or ""), new_calls, new_total / new_calls, before_mean, new_total
            )
        )
    # Slower first: by how much the mean grew, new statements by their mean.
    deltas.sort(key=lambda d: -(d.mean_ms - (d.before_mean_ms or 0.0)))
    tables = [
        TableDelta(str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]))
        for r in conn.execute(
            """
            SELECT s.schemaname, s.relname, pg_total_relation_size(s.relid) AS total,
                   pg_total_relation_size(s.relid) - coalesce(t."totalBytes", 0) AS grew,
                   s.n_live_tup, s.n_live_tup - coalesce(t."liveTuples", 0)
            FROM pg_stat_user_tables s
            LEFT JOIN stats_table t ON t."snapshotId" = %s AND t.schema = s.schemaname
                 AND t."table" = s.relname
            ORDER BY grew DESC, s.schemaname, s.relname LIMIT %s
            """,
            [snapshot, limit],
        )
    ]
    size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert size is not None
    return Since(
        baseline_at=taken_at,
        database_bytes=int(size[0]),
        database_grew_bytes=int(size[0]) - db_bytes,
        statements=tuple(deltas[:limit]),
        tables=tuple(tables),
    )


def database_growth(conn: psycopg.Connection[Any]) -> Measurement:
    """Bytes a day the database grew over the last day of snapshots (none yet: no verdict)."""
    found = rows(
        conn,
        """
        SELECT s."takenAt"::text AS since, s."databaseBytes" AS then_bytes,
               pg_database_size(current_database()) AS now_bytes,
               extract(epoch FROM now() - s."takenAt")::float AS seconds
        FROM stats_snapshot s
        WHERE s."takenAt" >= now() - interval '1 day' - interval '1 hour'
        ORDER BY s."takenAt" LIMIT 1
        """,
    )
    if not found or num(found[0]["seconds"]) < 60:
        return Measurement(None, "bytes/day", tuple(found))
    r = found[0]
    per_day = (num(r["now_bytes"]) - num(r["then_bytes"])) * 86400 / num(r["seconds"])
    return Measurement(round(per_day), "bytes/day", ({**r, "bytes_per_day": round(per_day)},))


CHECKS: tuple[Check, ...] = (
    Check(
        "database_growth",
        "Database growth (from the statistics history)",
        database_growth,
        advice="informational",
    ),
)
