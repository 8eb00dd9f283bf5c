"""`db health`'s bloat, WAL archiving and growth checks, and a role without the monitoring
privileges (as on a `SMARTSTART_DATABASE_URL` server): what it needs, said, not failed."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from smartstart import health
from smartstart.config import Settings
from smartstart.domain import statshistory
from smartstart.health import HealthConfig, State, Thresholds
from smartstart.pg import archive
from smartstart.pg.cluster import Cluster
from tests.conftest import FAST_CONF, free_port, make_home


def run(settings: Settings, name: str, **limits: float) -> health.CheckResult:
    config = HealthConfig()
    if limits:
        base = config.for_check(health.select([name])[0])
        config = health.with_thresholds(
            config, name, Thresholds(limits.get("warn", base.warn), limits.get("crit", base.crit))
        )
    (result,) = health.run(settings, health.select([name]), config)
    return result


def _sql(settings: Settings, *statements: str) -> None:
    with psycopg.connect(settings.url_for(), autocommit=True) as c:
        for statement in statements:
            c.execute(statement)  # type: ignore[call-overload]


def test_bloat_after_a_mass_delete(seeded_settings: Settings) -> None:
    _sql(
        seeded_settings,
        "CREATE TABLE fat (id int, pad text) WITH (autovacuum_enabled = false)",
        "INSERT INTO fat SELECT i, repeat('x', 100) FROM generate_series(1, 60000) i",
        "ANALYZE fat",
    )
    assert run(seeded_settings, "bloat", warn=1024 * 1024).state is State.OK
    _sql(seeded_settings, "DELETE FROM fat WHERE id % 10 <> 0", "VACUUM ANALYZE fat")
    result = run(seeded_settings, "bloat", warn=1024 * 1024)
    assert result.state is State.WARN, result
    worst = result.details[0]
    assert worst["table"] == "fat"
    assert float(worst["wasted_pct"] or 0) > 80  # type: ignore[arg-type]
    assert (result.recommendation or "").startswith('VACUUM (FULL, ANALYZE) "public"."fat";')
    _sql(seeded_settings, "VACUUM (FULL, ANALYZE) fat")
    assert run(seeded_settings, "bloat", warn=1024 * 1024).state is State.OK


@pytest.fixture(scope="module")
def archiving_cluster() -> Iterator[Cluster]:
    """A cluster whose archive command always fails."""
    home = make_home("smartstart-archive-")
    conf = {**FAST_CONF, "archive_mode": "on", "archive_command": "'false'"}
    cluster = Cluster(home, port=free_port(), server_conf=conf)
    cluster.init()
    cluster.start()
    yield cluster
    cluster.destroy()
    shutil.rmtree(home, ignore_errors=True)


def test_wal_archiving_failures(archiving_cluster: Cluster, seeded_settings: Settings) -> None:
    check = health.select(["wal_archiving"])[0]
    # archive_mode off (the test cluster): nothing to judge.
    assert run(seeded_settings, "wal_archiving").state is State.OK
    with archiving_cluster.connect() as su:
        su.execute("CREATE TABLE w (a int)")
        su.execute("INSERT INTO w SELECT generate_series(1, 1000)")
        su.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 30
        while not (measured := archive.wal_archiving(su)).metric:
            assert time.monotonic() < deadline, measured
            time.sleep(0.2)
    state, advice = health.judge(check, measured, HealthConfig().for_check(check))
    assert state in (State.WARN, State.CRIT)
    assert "WAL archiving failed for 0000000" in (advice or "")
    assert measured.details[0]["failed_count"]


def test_database_growth_from_the_history(seeded_conn: psycopg.Connection[Any]) -> None:
    first = statshistory.database_growth(seeded_conn)
    assert first.metric is None  # no snapshot yet: no verdict, no failure
    snapshot = statshistory.take_snapshot(seeded_conn)
    seeded_conn.execute(
        "UPDATE stats_snapshot SET \"takenAt\" = now() - interval '12 hours', "
        '"databaseBytes" = pg_database_size(current_database()) - 1000000 WHERE id = %s',
        [snapshot],
    )
    grown = statshistory.database_growth(seeded_conn)
    assert grown.metric is not None
    assert 1_990_000 < grown.metric < 2_050_000  # a million bytes in half a day


@pytest.fixture
def plain_settings(seeded_settings: Settings, pg_cluster: Cluster) -> Iterator[Settings]:
    """SMARTSTART_DATABASE_URL of a role with SELECT on the tables and nothing else: no
    superuser, no pg_monitor."""
    role = f"plain_{seeded_settings.db_name}"
    password = "a perfectly fine passphrase"  # noqa: S105
    with pg_cluster.connect(seeded_settings.db_name) as su:
        su.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        su.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            )
        )
    url = f"postgresql://{role}:a%20perfectly%20fine%20passphrase@127.0.0.1:{pg_cluster.port}/{seeded_settings.db_name}"
    yield Settings(_env_file=None, database_url=url, env="test")  # type: ignore[call-arg]
    with pg_cluster.connect(seeded_settings.db_name) as su:
        su.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_role_without_monitoring_privileges_is_told_what_it_needs(
    plain_settings: Settings, seeded_settings: Settings
) -> None:
    assert not plain_settings.embedded
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as other:
        other.execute("SELECT 1")  # another role's session, invisible to the plain role
        results = {r.name: r for r in health.run(plain_settings)}
    failed = {n: r.reason for n, r in results.items() if r.state in (State.ERROR, State.TIMEOUT)}
    assert failed == {}
    for name in ("long_running_queries", "idle_in_transaction", "blocking_locks", "slow_queries"):
        reason = results[name].reason or ""
        assert "GRANT pg_monitor TO" in reason, (name, reason)
        assert "plain_" in reason
    # The embedded role has pg_monitor: nothing to say there.
    assert run(seeded_settings, "long_running_queries").reason is None


def test_orphans_where_a_foreign_key_is_not_enforced(seeded_settings: Settings) -> None:
    assert run(seeded_settings, "orphans").details == ()  # every key validated and enforced
    _sql(
        seeded_settings,
        "CREATE TABLE parent (id int PRIMARY KEY)",
        'CREATE TABLE "Child" (id int, "parentId" int)',
        "INSERT INTO parent VALUES (1)",
        """INSERT INTO "Child" VALUES (1, 1), (2, 99), (3, 98), (4, NULL)""",
        'ALTER TABLE "Child" ADD CONSTRAINT child_parent FOREIGN KEY ("parentId") '
        "REFERENCES parent NOT VALID",
    )
    result = run(seeded_settings, "orphans")
    assert (result.state, result.metric) == (State.CRIT, 2.0)
    assert result.details[0]["constraint"] == "child_parent"
    assert 'VALIDATE CONSTRAINT "child_parent"' in (result.recommendation or "")
    _sql(seeded_settings, """DELETE FROM "Child" WHERE "parentId" > 1""")
    assert run(seeded_settings, "orphans").state is State.OK
