"""`db stats`: the guide's four monitoring statements, corrected, and the history (`--since`)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from typer.testing import CliRunner

from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.domain import statshistory
from smartstart.pg import stats

runner = CliRunner()
GUIDE_SQL = Path(__file__).resolve().parents[1] / "docs" / "guide-sql.md"


def corrected(title: str) -> str:
    """A corrected statement from docs/guide-sql.md, by its `-- title` comment."""
    for block in re.findall(r"```sql\n(.*?)```", GUIDE_SQL.read_text(), re.S):
        if block.startswith(f"-- {title}\n"):
            return str(block)
    raise AssertionError(f"no sql block -- {title}")


def _sql(settings: Settings, *statements: str) -> None:
    with psycopg.connect(settings.url_for(), autocommit=True) as c:
        for statement in statements:
            c.execute(statement)  # type: ignore[call-overload]


def _query(conn: psycopg.Connection[Any], statement: str) -> list[tuple[Any, ...]]:
    return conn.execute(statement).fetchall()  # type: ignore[call-overload]


def test_the_four_corrected_statements_and_db_stats_agree(
    seeded_conn: psycopg.Connection[Any],
) -> None:
    conn = seeded_conn
    _query(conn, "SELECT count(*) FROM \"User\" WHERE email = 'x'")
    sizes = _query(conn, corrected("Check table sizes"))
    mine = stats.table_sizes(conn)
    # Equal sizes may come in any order: compared by table, and the order by size.
    assert {(r[0], r[1]): r[2] for r in sizes} == {
        (r["schema"], r["table"]): r["size"] for r in mine
    }
    assert ("public", "User") in [(r[0], r[1]) for r in sizes]  # the mixed-case one works
    totals = [r["total_bytes"] for r in mine]
    assert totals == sorted(totals, reverse=True)  # type: ignore[type-var]

    usage = _query(conn, corrected("Check index usage"))
    by_index = {(r["table"], r["index"]): r["idx_scan"] for r in stats.index_usage(conn)}
    assert {(r[1], r[2]): r[3] for r in usage} == by_index
    assert any(table == "User" for table, _ in by_index)

    tables = _query(conn, corrected("Check table statistics"))
    mine_t = {
        r["table"]: (r["inserts"], r["live_tuples"], r["dead_tuples"])
        for r in stats.table_statistics(conn)
    }
    assert {r[1]: (r[2], r[5], r[6]) for r in tables} == mine_t

    for _ in range(3):
        _query(conn, "SELECT pg_sleep(0.02)")
    slow = _query(conn, corrected("Check slow queries of this database only"))
    assert any("pg_sleep" in r[0] for r in slow)
    found = stats.statement_counters(conn, limit=50)
    assert found.unavailable is None
    sleep = next(r for r in found.items if "pg_sleep" in str(r["query"]))
    assert sleep["calls"] == 3 and float(sleep["mean_ms"] or 0) >= 20  # type: ignore[arg-type]
    mine_slow = {r[0]: r[2] for r in slow}
    assert mine_slow[sleep["query"]] == 3
    # The guide's own spans every database of the server (other tests' too): it runs.
    guide = _query(conn, corrected("Check slow queries"))
    assert 0 < len(guide) <= 10
    assert [r[1] for r in guide] == sorted((r[1] for r in guide), reverse=True)


def test_db_stats_cli_json_and_table(seeded_settings: Settings, cli_env: Any) -> None:
    cli_env(seeded_settings)
    result = runner.invoke(app, ["db", "stats", "--json", "--limit", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) >= {"table_sizes", "index_usage", "table_statistics", "slow_queries"}
    assert len(data["table_sizes"]) == 3
    assert data["slow_queries_unavailable"] is None
    text = runner.invoke(app, ["db", "stats"])
    assert text.exit_code == 0, text.output
    for title in ("Table sizes", "Index usage", "Table statistics", "Slow queries"):
        assert title in text.output


def test_reset_zeroes_the_counters_through_the_embedded_superuser(
    seeded_settings: Settings, cli_env: Any
) -> None:
    cli_env(seeded_settings)
    _sql(seeded_settings, *['SELECT count(*) FROM "Role"'] * 3)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
        assert stats.statement_counters(c).items
    result = runner.invoke(app, ["db", "stats", "--reset", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "reset": ["table and index statistics", "pg_stat_statements"],
        "refused": [],
    }
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
        queries = [str(r["query"]) for r in stats.statement_counters(c, limit=None).items]
        assert not any('"Role"' in q for q in queries)


def test_reset_as_a_plain_role_says_what_it_needs(seeded_settings: Settings) -> None:
    # smartstart_user is no superuser: as on an external server, the refusal says what to grant.
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
        done = stats.reset(c)
    assert done.reset == ()
    assert len(done.refused) == 2
    assert "GRANT EXECUTE ON FUNCTION pg_stat_reset TO smartstart_user" in done.refused[0]
    assert "pg_stat_statements_reset" in done.refused[1]


def test_history_shows_the_queries_that_got_slow_and_the_tables_that_grew(
    seeded_settings: Settings, cli_env: Any
) -> None:
    cli_env(seeded_settings)
    _sql(seeded_settings, "CREATE TABLE grows (a int, pad text)")
    _sql(seeded_settings, *["SELECT pg_sleep(0.001)"] * 3)
    none_yet = runner.invoke(app, ["db", "stats", "--since", "1h"])
    assert none_yet.exit_code == 1
    assert "smartstart db stats --snapshot" in none_yet.output
    taken = runner.invoke(app, ["db", "stats", "--snapshot", "--json"])
    assert taken.exit_code == 0, taken.output
    snapshot = json.loads(taken.output)["snapshot"]
    with psycopg.connect(seeded_settings.url_for()) as c:
        (n_tables,) = c.execute(
            'SELECT count(*) FROM stats_table WHERE "snapshotId" = %s', [snapshot]
        ).fetchone() or (0,)
        assert n_tables >= 8
    # The same statement, slower now; a table that grew.
    _sql(
        seeded_settings,
        *["SELECT pg_sleep(0.03)"] * 2,
        "INSERT INTO grows SELECT i, repeat('x', 200) FROM generate_series(1, 5000) i",
    )
    result = runner.invoke(app, ["db", "stats", "--since", "1h", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    sleep = next(s for s in data["statements"] if "pg_sleep" in s["query"])
    assert sleep["calls"] == 2
    assert sleep["mean_ms"] >= 30 > sleep["before_mean_ms"]
    slowed = [s["mean_ms"] - (s["before_mean_ms"] or 0) for s in data["statements"]]
    # The most slowed first; ordered before rounding to 0.001 ms, so allow that much.
    assert all(a >= b - 0.0011 for a, b in zip(slowed, slowed[1:], strict=False)), slowed
    grew = data["tables"][0]
    assert grew["table"] == "grows"
    assert grew["grew_bytes"] > 1_000_000  # tuple counts arrive with the statistics, later
    text = runner.invoke(app, ["db", "stats", "--since", "1h"])
    assert text.exit_code == 0 and "grows" in text.output


def test_prune_by_retention(seeded_conn: psycopg.Connection[Any]) -> None:
    old = statshistory.take_snapshot(seeded_conn)
    new = statshistory.take_snapshot(seeded_conn)
    seeded_conn.execute(
        "UPDATE stats_snapshot SET \"takenAt\" = now() - interval '10 days' WHERE id = %s", [old]
    )
    assert statshistory.prune_snapshots(seeded_conn, timedelta(days=7)) == 1
    left = seeded_conn.execute("SELECT id FROM stats_snapshot").fetchall()
    assert left == [(new,)]
    assert seeded_conn.execute(
        'SELECT count(*) FROM stats_table WHERE "snapshotId" = %s', [old]
    ).fetchone() == (0,)
    # The baseline for a point before every snapshot is the oldest one kept.
    base = statshistory.baseline(seeded_conn, datetime.now(UTC) - timedelta(days=30))
    assert base is not None and base[0] == new


def test_snapshot_job_takes_and_prunes(seeded_settings: Settings) -> None:
    first = statshistory.snapshot_job(seeded_settings)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
        c.execute(
            "UPDATE stats_snapshot SET \"takenAt\" = now() - interval '8 days' WHERE id = %s",
            [first],
        )
    second = statshistory.snapshot_job(
        seeded_settings.model_copy(update={"stats_retention_days": 7})
    )
    with psycopg.connect(seeded_settings.url_for()) as c:
        assert c.execute("SELECT id FROM stats_snapshot").fetchall() == [(second,)]


def test_bad_since_is_one_clear_line(seeded_settings: Settings, cli_env: Any) -> None:
    cli_env(seeded_settings)
    for bad in ("yesterdayish", "\x00", "9" * 1_000_000):
        result = runner.invoke(app, ["db", "stats", "--since", bad])
        assert result.exit_code != 0
        assert "Traceback" not in result.output
        assert len(result.output) < 2000
