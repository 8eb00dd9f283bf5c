"""`smartstart db stats`: table sizes, index usage, table statistics and slow queries (what the
guide's monitoring statements meant), with history (`--since`, `--snapshot`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import psycopg
import typer

from smartstart.cli.common import (
    JsonOpt,
    console,
    handle_errors,
    parse_when,
    print_json,
    print_table,
    settings,
)
from smartstart.config import Settings
from smartstart.db.engine import connect
from smartstart.domain import statshistory
from smartstart.errors import SmartStartError
from smartstart.pg import stats
from smartstart.services import database

SinceOpt = Annotated[
    datetime | None,
    typer.Option(
        "--since",
        parser=parse_when,
        metavar="WHEN",
        help="Show what changed since then (1h, 30m, 7d or ISO 8601), from the snapshots: "
        "the queries that got slower, the tables that grew.",
    ),
]
ResetOpt = Annotated[
    bool,
    typer.Option(
        "--reset",
        help="Zero the table/index counters and pg_stat_statements (needs a superuser: the "
        "embedded cluster's is used; on SMARTSTART_DATABASE_URL it says what to grant).",
    ),
]
SnapshotOpt = Annotated[
    bool,
    typer.Option("--snapshot", help="Take a statistics snapshot now (and prune old ones)."),
]
LimitOpt = Annotated[
    int, typer.Option("--limit", min=1, max=10_000, help="Rows per section (default 20).")
]

SECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "table_sizes",
        "Table sizes (table + indexes + toast)",
        ("schema", "table", "size", "table_bytes", "index_bytes", "toast_bytes"),
    ),
    (
        "index_usage",
        "Index usage",
        ("schema", "table", "index", "idx_scan", "idx_tup_read", "idx_tup_fetch", "bytes"),
    ),
    (
        "table_statistics",
        "Table statistics",
        (
            "schema",
            "table",
            "inserts",
            "updates",
            "deletes",
            "live_tuples",
            "dead_tuples",
            "last_autovacuum",
        ),
    ),
    (
        "slow_queries",
        "Slow queries (mean execution time)",
        ("calls", "mean_ms", "total_ms", "query"),
    ),
)


def collect(conn: psycopg.Connection[Any], limit: int) -> dict[str, Any]:
    """Every section's rows; the slow queries say what they need when they cannot tell."""
    statements = stats.statement_counters(conn, limit=limit)
    return {
        "table_sizes": stats.table_sizes(conn)[:limit],
        "index_usage": stats.index_usage(conn)[:limit],
        "table_statistics": stats.table_statistics(conn)[:limit],
        "slow_queries": statements.items,
        "slow_queries_unavailable": statements.unavailable,
    }


def _reset(s: Settings) -> stats.Reset:
    # The counters are the server's; zeroing them is a superuser's: the embedded cluster's
    # own superuser (the private socket) does it, an external server's as configured.
    if s.embedded:
        with database.cluster_for(s).connect(s.db_name) as su:
            return stats.reset(su)
    with connect(s, autocommit=True) as conn:
        return stats.reset(conn)


def stats_(
    as_json: JsonOpt = False,
    reset: ResetOpt = False,
    since: SinceOpt = None,
    snapshot: SnapshotOpt = False,
    limit: LimitOpt = 20,
) -> None:
    """Table sizes, index usage, table statistics and slow queries; history with --since."""
    s = settings()
    if reset:
        done = _reset(s)
        if as_json:
            print_json({"reset": list(done.reset), "refused": list(done.refused)})
        for what in done.reset if not as_json else ():
            console.print(f"[green]•[/] reset {what}", highlight=False)
        for why in done.refused if not as_json else ():
            console.print(f"[yellow]•[/] not reset: {why}", highlight=False)
        raise typer.Exit(1 if done.refused else 0)
    if snapshot:
        taken = statshistory.snapshot_job(s)
        if as_json:
            print_json({"snapshot": taken})
        else:
            console.print(f"[green]•[/] statistics snapshot {taken} taken", highlight=False)
        return
    with connect(s, autocommit=True) as conn:
        if since is not None:
            _since(conn, since, limit, as_json)
            return
        report = collect(conn, limit)
    if as_json:
        print_json(report)
        return
    for key, title, columns in SECTIONS:
        print_table(report[key], columns, title=title)
    if report["slow_queries_unavailable"]:
        console.print(f"[yellow]slow queries:[/] {report['slow_queries_unavailable']}")


def _since(conn: psycopg.Connection[Any], since: datetime, limit: int, as_json: bool) -> None:
    changed = statshistory.since(conn, since, limit)
    if changed is None:
        raise SmartStartError(
            "no statistics snapshot to compare with yet: the Brain's scheduler takes one at "
            "SMARTSTART_STATS_SNAPSHOT_SCHEDULE, or take one now with "
            "`smartstart db stats --snapshot`"
        )
    if as_json:
        print_json(changed.as_json())
        return
    console.print(
        f"since the snapshot of {changed.baseline_at:%Y-%m-%d %H:%M:%S %Z}: database "
        f"{changed.database_grew_bytes:+,} bytes (now {changed.database_bytes:,})",
        highlight=False,
    )
    statements = [d.as_json() for d in changed.statements]
    print_table(
        statements,
        ("calls", "mean_ms", "before_mean_ms", "total_ms", "query"),
        title="Queries, most slowed first",
    )
    print_table(
        [t.as_json() for t in changed.tables],
        ("schema", "table", "total_bytes", "grew_bytes", "live_tuples", "grew_tuples"),
        title="Tables, most grown first",
    )


def register(app: typer.Typer) -> None:
    """Add `stats` to the `db` group."""
    app.command("stats")(handle_errors(stats_))
