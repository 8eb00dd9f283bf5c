"""`db queries`, `db cancel`/`terminate` (refusals, audit), `db top --once`, `db explain`."""

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

from smartstart.cli.main import app
from smartstart.cli.queries import pg_activity_command
from smartstart.config import Settings
from smartstart.pg import activity, explain

runner = CliRunner()


@contextlib.contextmanager
def sleeping(settings: Settings, seconds: float = 30, dbname: str | None = None) -> Iterator[int]:
    """A session running pg_sleep in another thread; its pid."""
    pids: list[int] = []
    errors: list[BaseException] = []

    def go() -> None:
        with psycopg.connect(
            settings.url_for(dbname), autocommit=True, application_name="sleeper"
        ) as c:
            pids.append(c.info.backend_pid)
            try:
                c.execute("SELECT pg_sleep(%s)", [seconds])
            except psycopg.Error as e:  # cancelled or terminated by the test
                errors.append(e)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not pids:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with psycopg.connect(settings.url_for(), autocommit=True) as c:
        while (
            c.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pids[0]]).fetchone()
            or ("",)
        )[0] != "active":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    try:
        yield pids[0]
    finally:
        with psycopg.connect(settings.url_for(), autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(%s)", [pids[0]])
        thread.join(5)


def test_queries_lists_a_running_query_and_who_blocks_it(
    seeded_settings: Settings, cli_env: Any, seeded_conn: psycopg.Connection[Any]
) -> None:
    cli_env(seeded_settings)
    seeded_conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    seeded_conn.execute("INSERT INTO t VALUES (1)")
    seeded_conn.execute("BEGIN")
    seeded_conn.execute("UPDATE t SET id = 1 WHERE id = 1")
    holder = seeded_conn.info.backend_pid
    waiter: list[int] = []

    def wait_on_lock() -> None:
        with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
            waiter.append(c.info.backend_pid)
            with contextlib.suppress(psycopg.Error):
                c.execute("UPDATE t SET id = 1 WHERE id = 1")

    thread = threading.Thread(target=wait_on_lock, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            result = runner.invoke(app, ["db", "queries", "--json"])
            assert result.exit_code == 0, result.output
            items = {q["pid"]: q for q in json.loads(result.output)["items"]}
            if waiter and waiter[0] in items and items[waiter[0]]["blocked_by"]:
                break
            assert time.monotonic() < deadline, items
            time.sleep(0.1)
        blocked = items[waiter[0]]
        assert blocked["blocked_by"] == [holder]
        assert (blocked["state"], blocked["wait_event_type"]) == ("active", "Lock")
        assert blocked["query"].startswith("UPDATE t")
        assert isinstance(blocked["seconds"], float)
        assert items[holder]["state"] == "idle in transaction"
        text = runner.invoke(app, ["db", "queries"])
        assert text.exit_code == 0 and str(waiter[0]) in text.output and "Lock:" in text.output
    finally:
        seeded_conn.execute("ROLLBACK")
        thread.join(5)


def test_no_running_query_is_one_line_not_an_empty_table(
    seeded_settings: Settings, cli_env: Any
) -> None:
    cli_env(seeded_settings)
    result = runner.invoke(app, ["db", "queries"])
    assert result.exit_code == 0, result.output
    assert result.output == "No other session is running a query on this database.\n"
    as_json = runner.invoke(app, ["db", "queries", "--json"])
    assert json.loads(as_json.output)["items"] == []


def test_cancel_asks_audits_and_cancels(seeded_settings: Settings, cli_env: Any) -> None:
    cli_env(seeded_settings)
    with sleeping(seeded_settings) as pid:
        dry = runner.invoke(app, ["db", "cancel", str(pid), "--dry-run"])
        assert dry.exit_code == 0 and "would cancel" in dry.output and "pg_sleep" in dry.output
        no = runner.invoke(app, ["db", "cancel", str(pid)], input="n\n")
        assert no.exit_code == 1 and "nothing was changed" in no.output
        with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
            state = c.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
            assert state == ("active",)
        done = runner.invoke(app, ["db", "cancel", str(pid)], input="y\n")
        assert done.exit_code == 0, done.output
        with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
            deadline = time.monotonic() + 5
            while c.execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]
            ).fetchone() == ("active",):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            entry = c.execute(
                'SELECT actor, resource, "resourceId", details FROM audit_log '
                "WHERE action = 'db.cancel'"
            ).fetchall()
    assert len(entry) == 1
    actor, resource, resource_id, details = entry[0]
    assert (resource, resource_id) == ("backend", str(pid))
    assert actor.startswith("cli:")
    assert "pg_sleep" in details["before"]["query"]
    assert details["before"]["application"] == "sleeper"


def test_terminate_ends_the_session(seeded_settings: Settings, cli_env: Any) -> None:
    cli_env(seeded_settings)
    with sleeping(seeded_settings) as pid:
        done = runner.invoke(app, ["db", "terminate", str(pid), "--yes", "--json"])
        assert done.exit_code == 0, done.output
        assert json.loads(done.output)["session"]["pid"] == pid
        with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
            deadline = time.monotonic() + 5
            while c.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            (n,) = c.execute(
                "SELECT count(*) FROM audit_log WHERE action = 'db.terminate'"
            ).fetchone() or (0,)
            assert n == 1


def test_refuses_its_own_backend_other_databases_and_bad_pids(
    seeded_settings: Settings, cli_env: Any, pg_cluster: Any
) -> None:
    cli_env(seeded_settings)
    with (
        psycopg.connect(seeded_settings.url_for(), autocommit=True) as c,
        pytest.raises(activity.Refused, match="own session"),
    ):
        activity.signal(c, c.info.backend_pid, "terminate")
    # Another database's session (the cluster's maintenance database).
    with sleeping(seeded_settings, dbname="postgres") as pid:
        result = runner.invoke(app, ["db", "terminate", str(pid), "--yes"])
        assert result.exit_code == 1
        assert "another database's session" in result.output
        with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
            assert c.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    for bad in ("0", "-5", str(2**31), "99999999999999999999", "abc"):
        result = runner.invoke(app, ["db", "cancel", bad, "--yes"])
        assert result.exit_code != 0, bad
        assert "Traceback" not in result.output
    gone = runner.invoke(app, ["db", "cancel", "2147483000", "--yes"])
    assert gone.exit_code == 1 and "no client session with pid 2147483000" in gone.output
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM audit_log WHERE action LIKE 'db.%'").fetchone() == (
            0,
        )


def test_a_role_may_not_signal_a_superusers_session(
    seeded_settings: Settings, pg_cluster: Any
) -> None:
    pids: list[int] = []
    stop = threading.Event()

    def superuser_sleeps() -> None:
        with pg_cluster.connect(seeded_settings.db_name) as su:
            pids.append(su.info.backend_pid)
            with contextlib.suppress(psycopg.Error):
                su.execute("SELECT pg_sleep(30)")
            stop.set()

    thread = threading.Thread(target=superuser_sleeps, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not pids:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with (
            psycopg.connect(seeded_settings.url_for(), autocommit=True) as c,
            pytest.raises(activity.Refused, match="pg_signal_backend"),
        ):
            activity.signal(c, pids[0], "cancel")
    finally:
        with pg_cluster.connect() as su:
            su.execute("SELECT pg_terminate_backend(%s)", [pids[0]])
        thread.join(5)


def test_top_once_shows_the_sessions_and_pg_activity_gets_the_connection(
    seeded_settings: Settings, cli_env: Any
) -> None:
    cli_env(seeded_settings)
    with sleeping(seeded_settings) as pid:
        result = runner.invoke(app, ["db", "top", "--once"])
        assert result.exit_code == 0, result.output
        assert str(pid) in result.output and "sleeper" in result.output
    launch = pg_activity_command(seeded_settings)
    assert launch is not None  # a dependency: installed with smartstart
    args, password = launch
    assert args[0].endswith("pg_activity")
    assert f"dbname={seeded_settings.db_name}" in args[-1]
    assert f"port={seeded_settings.pg_port}" in args[-1]
    assert "password" not in " ".join(args)  # the process list shows arguments
    assert password == "smartstart_password"


def test_explain_and_analyze(seeded_settings: Settings, cli_env: Any) -> None:
    cli_env(seeded_settings)
    plain = runner.invoke(app, ["db", "explain", "SELECT * FROM \"User\" WHERE email = 'x'"])
    assert plain.exit_code == 0, plain.output
    assert "User" in plain.output and "cost=" in plain.output and "actual" not in plain.output
    analysed = runner.invoke(
        app, ["db", "explain", "--analyze", "--json", 'SELECT count(*) FROM "User"']
    )
    assert analysed.exit_code == 0, analysed.output
    data = json.loads(analysed.output)
    assert data["analyzed"] is True and data["execution_ms"] > 0
    assert data["plan"]["Plan"]["Actual Rows"] == 1


def test_analyze_of_a_write_is_rolled_back(seeded_settings: Settings, cli_env: Any) -> None:
    cli_env(seeded_settings)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
        (before,) = c.execute('SELECT count(*) FROM "Role"').fetchone() or (0,)
        result = runner.invoke(
            app,
            ["db", "explain", "--analyze", """INSERT INTO "Role" (name) VALUES ('EXPLAINED')"""],
        )
        assert result.exit_code == 0, result.output
        assert "Insert on" in result.output and "rolled back" in result.output
        deleted = runner.invoke(app, ["db", "explain", "--analyze", 'DELETE FROM "audit_log"'])
        assert deleted.exit_code == 0, deleted.output
        assert c.execute('SELECT count(*) FROM "Role"').fetchone() == (before,)
        assert c.execute("SELECT 1 FROM \"Role\" WHERE name = 'EXPLAINED'").fetchone() is None


def test_explain_refuses_bad_input_with_one_line(seeded_settings: Settings, cli_env: Any) -> None:
    cli_env(seeded_settings)
    for bad, says in (
        ("", "no SQL statement"),
        ('SELECT 1; DROP TABLE "Role"', "multiple commands"),
        ("SELECT 1; COMMIT; DELETE FROM audit_log", "multiple commands"),
        ("SELEC nonsense", "syntax error"),
        ("SELECT '\x00'", "NUL"),
        ("SELECT " + "1" * 200_000, "at most 100,000"),
        ("COMMIT", "cannot explain"),
    ):
        result = runner.invoke(app, ["db", "explain", "--analyze", bad])
        assert result.exit_code == 1, (bad[:40], result.output)
        assert says in result.output, (bad[:40], result.output)
        assert len(result.output) < 1000
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
        assert c.execute("SELECT to_regclass('\"Role\"')").fetchone() != (None,)


def test_explain_keeps_the_callers_connection_mode(seeded_conn: psycopg.Connection[Any]) -> None:
    found = explain.explain(seeded_conn, "SELECT 1", analyze=True)
    assert found.text[0].startswith("Result")
    assert seeded_conn.autocommit is True
    with pytest.raises(explain.SmartStartError, match="timeout"):
        explain.explain(seeded_conn, "SELECT pg_sleep(5)", analyze=True, timeout_ms=100)
