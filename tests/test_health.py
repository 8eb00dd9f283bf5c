"""`db health`: each check driven into WARN/CRIT by a crafted situation on a real cluster."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from smartstart import health
from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.health import HealthConfig, State, Thresholds

runner = CliRunner()


def run(settings: Settings, name: str, **limits: float | None) -> health.CheckResult:
    config = HealthConfig()
    if limits:
        check = health.select([name])[0]
        base = config.for_check(check)
        config = health.with_thresholds(
            config,
            name,
            Thresholds(limits.get("warn", base.warn), limits.get("crit", base.crit), base.floor),
        )
    (result,) = health.run(settings, health.select([name]), config)
    return result


@pytest.fixture
def other(seeded_settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A second session on the test database (autocommit)."""
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
        yield c


def test_every_check_runs_on_a_fresh_seeded_database(seeded_settings: Settings) -> None:
    results = {r.name: r for r in health.run(seeded_settings)}
    assert set(results) == {c.name for c in health.CHECKS}
    bad = {
        n: (r.state.name, r.reason, r.recommendation)
        for n, r in results.items()
        if r.state is not State.OK
    }
    assert bad == {}


def _sql(settings: Settings, *statements: str) -> None:
    with psycopg.connect(settings.url_for(), autocommit=True) as c:
        for statement in statements:
            c.execute(statement)  # type: ignore[call-overload]


def _background(settings: Settings, statement: str) -> tuple[threading.Thread, list[int]]:
    """Run a statement in another session; its pid is published once it started."""
    pids: list[int] = []

    def go() -> None:
        with psycopg.connect(settings.url_for(), autocommit=True) as c:
            pids.append(c.info.backend_pid)
            with contextlib.suppress(psycopg.Error):  # cancelled or terminated by the test
                c.execute(statement)  # type: ignore[call-overload]

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    for _ in range(100):
        if pids:
            break
        time.sleep(0.05)
    return thread, pids


def once_reported(settings: Settings, name: str) -> health.CheckResult:
    """The check's result once it is no longer OK: backends report statistics once a second."""
    deadline = time.monotonic() + 10
    while (result := run(settings, name)).state is State.OK:
        assert time.monotonic() < deadline, result
        time.sleep(0.3)
    return result


def _stop(settings: Settings, pid: int) -> None:
    _sql(settings, f"SELECT pg_terminate_backend({int(pid)})")


def test_a_blocking_lock_names_who_blocks_whom(
    seeded_settings: Settings, other: psycopg.Connection[Any]
) -> None:
    _sql(
        seeded_settings, "CREATE TABLE t (id int PRIMARY KEY, v int)", "INSERT INTO t VALUES (1, 0)"
    )
    holder = other.execute("SELECT pg_backend_pid()").fetchone()
    assert holder is not None
    other.execute("BEGIN")
    other.execute("UPDATE t SET v = 1 WHERE id = 1")
    thread, pids = _background(seeded_settings, "UPDATE t SET v = 2 WHERE id = 1")
    try:
        time.sleep(0.6)
        result = run(seeded_settings, "blocking_locks", crit=0.3)
        assert result.state is State.CRIT
        row = result.details[0]
        assert (row["blocked_pid"], row["blocking_pid"]) == (pids[0], holder[0])
        assert result.recommendation is not None
        assert f"pg_terminate_backend({holder[0]})" in result.recommendation
        # And the default thresholds see a brief wait as no problem.
        assert run(seeded_settings, "blocking_locks").state is State.OK
    finally:
        other.execute("ROLLBACK")
        thread.join(5)
    assert run(seeded_settings, "blocking_locks").metric == 0


def test_a_long_query_and_idle_in_transaction(
    seeded_settings: Settings, other: psycopg.Connection[Any]
) -> None:
    thread, pids = _background(seeded_settings, "SELECT pg_sleep(30)")
    other.execute("BEGIN")
    other.execute("SELECT 1")
    try:
        time.sleep(0.8)
        long = run(seeded_settings, "long_running_queries", warn=0.5, crit=10)
        assert long.state is State.WARN
        assert long.details[0]["pid"] == pids[0]
        assert long.recommendation == f"SELECT pg_cancel_backend({pids[0]});"
        idle = run(seeded_settings, "idle_in_transaction", crit=0.5)
        assert idle.state is State.CRIT
        assert idle.details[0]["pid"] == other.info.backend_pid
        assert f"pg_terminate_backend({other.info.backend_pid})" in (idle.recommendation or "")
    finally:
        other.execute("ROLLBACK")
        _stop(seeded_settings, pids[0])
        thread.join(5)


def test_an_unused_and_a_duplicate_index(seeded_settings: Settings) -> None:
    _sql(
        seeded_settings,
        "CREATE TABLE t (a int, b int)",
        "INSERT INTO t SELECT i, i FROM generate_series(1, 100000) i",
        "CREATE INDEX t_a ON t (a)",
        "CREATE INDEX t_a_b ON t (a, b)",
    )
    unused = run(seeded_settings, "unused_indexes")
    assert unused.state is State.WARN  # over 1 MiB of indexes nothing reads
    assert {d["index"] for d in unused.details} >= {"t_a", "t_a_b"}
    assert (unused.recommendation or "").startswith('DROP INDEX CONCURRENTLY "public"."t_a')
    dup = run(seeded_settings, "duplicate_indexes")
    assert dup.state is State.WARN
    assert [(d["duplicate"], d["covered_by"]) for d in dup.details] == [("t_a", "t_a_b")]
    assert dup.recommendation == 'DROP INDEX CONCURRENTLY "public"."t_a";'


def test_an_invalid_index(seeded_settings: Settings) -> None:
    _sql(seeded_settings, "CREATE TABLE t (a int)", "INSERT INTO t VALUES (1), (1)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        _sql(seeded_settings, "CREATE UNIQUE INDEX CONCURRENTLY t_a ON t (a)")
    result = run(seeded_settings, "invalid_indexes")
    assert result.state is State.CRIT
    assert result.recommendation == 'REINDEX INDEX CONCURRENTLY "public"."t_a";'


def test_a_foreign_key_without_an_index(seeded_settings: Settings) -> None:
    _sql(
        seeded_settings,
        "CREATE TABLE parent (id int PRIMARY KEY)",
        "CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent)",
    )
    result = run(seeded_settings, "foreign_keys_without_index")
    assert result.state is State.WARN
    assert [d["table"] for d in result.details] == ["child"]
    assert result.recommendation == 'CREATE INDEX CONCURRENTLY ON "public"."child" (parent_id);'
    _sql(seeded_settings, "CREATE INDEX ON child (parent_id)")
    assert run(seeded_settings, "foreign_keys_without_index").state is State.OK


def test_dead_tuples(seeded_settings: Settings) -> None:
    _sql(
        seeded_settings,
        "CREATE TABLE t (a int) WITH (autovacuum_enabled = false)",
        "INSERT INTO t SELECT generate_series(1, 10000)",
        "DELETE FROM t WHERE a <= 6000",
    )
    result = once_reported(seeded_settings, "dead_tuples")
    assert result.state is State.CRIT
    assert result.details[0]["table"] == "t"
    assert "last_autovacuum" in result.details[0]
    assert result.recommendation == 'VACUUM (ANALYZE) "public"."t";'


def test_sequences_and_integer_keys_near_their_end(seeded_settings: Settings) -> None:
    _sql(seeded_settings, "CREATE SEQUENCE s MAXVALUE 100", "SELECT setval('s', 80)")
    result = run(seeded_settings, "sequences")
    assert (result.state, result.metric) == (State.WARN, 80.0)
    assert result.recommendation == 'ALTER SEQUENCE "public"."s" AS bigint NO MAXVALUE;'
    _sql(
        seeded_settings,
        "CREATE TABLE k (id serial PRIMARY KEY)",
        "SELECT setval('k_id_seq', 2000000000)",
    )
    result = run(seeded_settings, "sequences")
    assert result.state is State.CRIT
    assert result.details[0]["table"] == "k"
    assert result.recommendation == 'ALTER TABLE "public"."k" ALTER COLUMN "id" TYPE bigint;'


def test_slow_queries_and_a_missing_extension(seeded_settings: Settings, pg_cluster: Any) -> None:
    _sql(seeded_settings, *["SELECT pg_sleep(0.03)"] * 6)
    result = run(seeded_settings, "slow_queries", warn=20)
    assert result.state is State.WARN, result
    assert "pg_sleep" in str(result.details[0]["query"])
    assert "EXPLAIN" in (result.recommendation or "")
    with pg_cluster.connect(seeded_settings.db_name) as su:
        su.execute("DROP EXTENSION pg_stat_statements")
    missing = run(seeded_settings, "slow_queries")
    assert missing.state is State.WARN
    assert "CREATE EXTENSION pg_stat_statements" in (missing.recommendation or "")


def test_connections_by_state_and_application(seeded_settings: Settings) -> None:
    crowd = [psycopg.connect(seeded_settings.url_for(), application_name="crowd") for _ in range(3)]
    try:
        result = run(seeded_settings, "connections", warn=0.0)
        assert result.state is State.WARN
        groups = [d for d in result.details if d.get("application") == "crowd"]
        assert sum(int(d["connections"] or 0) for d in groups) == 3
        assert run(seeded_settings, "connections").state is State.OK
    finally:
        for c in crowd:
            c.close()


def test_platform_integrity(seeded_settings: Settings) -> None:
    assert run(seeded_settings, "super_admins").metric == 1
    _sql(seeded_settings, """INSERT INTO "Role" (name) VALUES ('EMPTY')""")
    roles = run(seeded_settings, "roles_without_permissions")
    assert roles.state is State.WARN
    assert [d["role"] for d in roles.details] == ["EMPTY"]
    assert roles.recommendation == "smartstart rbac grant EMPTY PERMISSION"
    # The table's CHECK refuses a plain-text password, so it need not be looked for...
    guarded = run(seeded_settings, "non_bcrypt_hashes")
    assert guarded.details == ({"guaranteed_by": "User_password_bcrypt_check"},)
    # ...but one from before it (or a restore without it) counts.
    _sql(
        seeded_settings,
        """ALTER TABLE "User" DROP CONSTRAINT "User_password_bcrypt_check" """,
        """INSERT INTO "User" (email, username, password)
           VALUES ('plain@example.com', 'plain', 'hunter2')""",
    )
    hashes = run(seeded_settings, "non_bcrypt_hashes")
    assert hashes.state is State.CRIT
    assert [d["email"] for d in hashes.details] == ["plain@example.com"]
    assert hashes.recommendation == "smartstart users passwd plain@example.com  (each listed user)"
    # The triggers keep the primary role's row; a restore with triggers disabled does not.
    _sql(
        seeded_settings,
        """ALTER TABLE "UserRole" DISABLE TRIGGER "UserRole_keep_primary" """,
        """DELETE FROM "UserRole" WHERE "userId" =
           (SELECT id FROM "User" WHERE email = 'plain@example.com')""",
    )
    orphan = run(seeded_settings, "users_without_primary_role")
    assert orphan.state is State.CRIT
    assert orphan.details[0]["email"] == "plain@example.com"
    assert (orphan.recommendation or "").startswith(
        "smartstart rbac assign plain@example.com MEMBER"
    )
    # A user holding some role, but not the one "User".role names (changed with the trigger
    # that assigns it disabled): a row for the user is not enough, it must be that role's.
    _sql(
        seeded_settings,
        """INSERT INTO "User" (email, username, password)
           VALUES ('moved@example.com', 'moved', '$2b$12$abcdefghijklmnopqrstuv')""",
        """ALTER TABLE "User" DISABLE TRIGGER "User_primary_role" """,
        """UPDATE "User" SET role = 'DEVELOPER' WHERE email = 'moved@example.com'""",
    )
    both = run(seeded_settings, "users_without_primary_role")
    assert both.metric == 2
    assert [(d["email"], d["primary_role"]) for d in both.details] == [
        ("moved@example.com", "DEVELOPER"),
        ("plain@example.com", "MEMBER"),
    ]
    _sql(
        seeded_settings,
        """INSERT INTO "UserRole" ("userId", "roleId") SELECT u.id, r.id FROM "User" u
           JOIN "Role" r ON r.name = u.role ON CONFLICT DO NOTHING""",
    )
    assert run(seeded_settings, "users_without_primary_role").state is State.OK


def test_a_hanging_check_times_out_alone(
    seeded_settings: Settings, other: psycopg.Connection[Any]
) -> None:
    other.execute("BEGIN")
    other.execute('LOCK TABLE "User" IN ACCESS EXCLUSIVE MODE')
    try:
        started = time.monotonic()
        results = {r.name: r for r in health.run(seeded_settings, config=HealthConfig(1.0))}
        elapsed = time.monotonic() - started
    finally:
        other.execute("ROLLBACK")
    assert results["users_without_primary_role"].state is State.TIMEOUT
    assert "timeout" in (results["users_without_primary_role"].reason or "")
    for name in ("connections", "sequences", "wraparound", "blocking_locks", "cache_hit_ratio"):
        assert results[name].state is State.OK, results[name]
    assert elapsed < 1.0 + 2.5
    assert health.worst(results.values()).exit_code == 1


def test_cli_exit_status_is_the_worst_verdict(seeded_settings: Settings, cli_env: Any) -> None:
    cli_env(seeded_settings)
    ok = runner.invoke(app, ["db", "health"])
    assert ok.exit_code == 0, ok.output
    assert "users_without_primary_role" in ok.output and "OK" in ok.output
    _sql(seeded_settings, "CREATE SEQUENCE s MAXVALUE 100", "SELECT setval('s', 95)")
    crit = runner.invoke(app, ["db", "health", "--json", "--check", "sequences"])
    assert crit.exit_code == 2, crit.output
    data = json.loads(crit.output)
    assert data["next_cursor"] is None
    (item,) = data["items"]
    assert (item["check"], item["state"], item["metric"]) == ("sequences", "CRIT", 95.0)
    assert item["recommendation"] == 'ALTER SEQUENCE "public"."s" AS bigint NO MAXVALUE;'
    assert item["details"][0]["sequence"] == "s"
    _sql(seeded_settings, """INSERT INTO "Role" (name) VALUES ('EMPTY')""")
    warn = runner.invoke(app, ["db", "health", "--check", "roles_without_permissions"])
    assert warn.exit_code == 1, warn.output
    assert "smartstart rbac grant EMPTY PERMISSION" in warn.output
    assert "EMPTY" in warn.output  # --check shows the rows behind the verdict


def test_cli_thresholds_from_health_toml(
    seeded_settings: Settings, cli_env: Any, pg_cluster: Any
) -> None:
    cli_env(seeded_settings)
    config = pg_cluster.home / "health.toml"
    config.write_text("timeout = 1.5\n[wraparound]\nwarn = 1\n")
    try:
        result = runner.invoke(app, ["db", "health", "--json", "--check", "wraparound"])
        assert result.exit_code == 1, result.output
        assert json.loads(result.output)["items"][0]["warn"] == 1.0
        config.write_text("[nonsense]\nwarn = 1\n")
        bad = runner.invoke(app, ["db", "health"])
        assert bad.exit_code == 1
        assert "unknown check 'nonsense'" in bad.output
    finally:
        config.unlink()


def test_cli_refuses_an_unknown_check(seeded_settings: Settings, cli_env: Any) -> None:
    cli_env(seeded_settings)
    result = runner.invoke(app, ["db", "health", "--check", "nope"])
    assert result.exit_code == 1
    assert "no check named 'nope'" in result.output
    assert result.output.count("\n") <= 2


def test_cli_on_an_unreachable_database_says_so_in_one_line(
    db_settings: Settings, cli_env: Any
) -> None:
    cli_env(db_settings.model_copy(update={"db_name": "no_such_database"}))
    result = runner.invoke(app, ["db", "health"])
    assert result.exit_code == 1
    assert "no_such_database" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") <= 3


def test_heavy_sequential_scans(seeded_settings: Settings) -> None:
    _sql(
        seeded_settings,
        "CREATE TABLE big (a int)",
        "INSERT INTO big SELECT generate_series(1, 20000)",
        "ANALYZE big",
        *["SELECT count(*) FROM big WHERE a = 5"] * 3,
    )
    result = once_reported(seeded_settings, "sequential_scans")
    assert result.state is State.CRIT  # every read of a 20,000-row table was sequential
    assert result.details[0]["table"] == "big"
    assert '"public"."big"' in (result.recommendation or "")


def test_an_inactive_replication_slot(seeded_settings: Settings, pg_cluster: Any) -> None:
    assert run(seeded_settings, "replication").state is State.OK
    with pg_cluster.connect() as su:
        su.execute("SELECT pg_create_physical_replication_slot('health_test', true)")
    try:
        result = run(seeded_settings, "replication")
        assert result.state is State.WARN
        assert result.details[0]["slot"] == "health_test"
        assert result.recommendation == (
            "SELECT pg_drop_replication_slot('health_test'); -- if nothing will read it again"
        )
    finally:
        with pg_cluster.connect() as su:
            su.execute("SELECT pg_drop_replication_slot('health_test')")
