"""`smartstart doctor` on each real fault of a real cluster of its own, and `--fix` repairing it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from smartstart import doctor
from smartstart.cli.main import app
from smartstart.config import Settings, get_settings
from smartstart.db import migrate
from smartstart.health import State
from smartstart.pg.cluster import Cluster
from smartstart.services import brain, database, process
from tests.conftest import FAST_CONF, free_port, make_home

runner = CliRunner()


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    path = make_home("smartstart-doctor-")
    yield path
    Cluster(path).destroy()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture
def healthy(home: Path, port: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """This module's cluster running, its database migrated (no seed), and the CLI on it."""
    monkeypatch.setenv("SMARTSTART_HOME", str(home))
    monkeypatch.setenv("SMARTSTART_PG_PORT", str(port))
    monkeypatch.setenv("SMARTSTART_ENV", "test")
    # The Brain's port: a free one, so that nothing of the machine's is reported.
    monkeypatch.setenv("SMARTSTART_API_PORT", str(free_port()))
    get_settings.cache_clear()
    settings = get_settings()
    cluster = Cluster.from_settings(settings)
    if not cluster.initialized:
        cluster.extra_conf = FAST_CONF
    database.ensure_database(settings, seed_if_empty=False)
    yield settings
    get_settings.cache_clear()


def run(*args: str) -> Any:
    return runner.invoke(app, ["doctor", *args])


def findings(result: Any) -> dict[str, dict[str, Any]]:
    assert result.output.strip(), result
    return {f["check"]: f for f in json.loads(result.output)["items"]}


def test_a_healthy_setup_has_nothing_to_fix(healthy: Settings) -> None:
    result = run("--json")
    assert result.exit_code == 0, result.output
    items = findings(result)
    assert {"disk", "server", "connection", "schema", "pg_stat_statements"} <= set(items)
    assert all(f["state"] == "OK" for f in items.values()), items


def test_stopped_server_is_found_and_started(healthy: Settings) -> None:
    Cluster.from_settings(healthy).stop()
    result = run("--json")
    assert result.exit_code == 2
    server = findings(result)["server"]
    assert server["state"] == "CRIT" and "not running" in server["problem"]
    assert server["fix"] == "smartstart db start" and server["fixable"]
    fixed = run("--fix")
    assert fixed.exit_code == 0, fixed.output
    assert "fixed: started PostgreSQL" in fixed.output
    assert Cluster.from_settings(healthy).status().running


def test_wrong_password_is_reset_through_the_local_superuser(healthy: Settings) -> None:
    cluster = Cluster.from_settings(healthy)
    with cluster.connect() as conn:
        conn.execute("ALTER ROLE smartstart_user PASSWORD 'not the configured one at all'")
    result = run("--json")
    assert result.exit_code == 2
    auth = findings(result)["authentication"]
    assert auth["state"] == "CRIT" and "password authentication failed" in auth["evidence"]
    fixed = run("--fix")
    assert fixed.exit_code == 0, fixed.output
    with psycopg.connect(healthy.url_for()) as conn:
        conn.execute("SELECT 1")


def test_dropped_database_is_created_and_migrated(healthy: Settings) -> None:
    with Cluster.from_settings(healthy).connect() as conn:
        conn.execute("DROP DATABASE smartstart_db WITH (FORCE)")
    result = run("--json")
    assert result.exit_code == 2
    assert findings(result)["database"]["state"] == "CRIT"
    fixed = run("--fix", "--json")
    assert fixed.exit_code == 0, fixed.output
    done = json.loads(fixed.output)["fixed"]
    assert any("migrated the schema base" in line for line in done), done
    assert migrate.current_revision(healthy.sqlalchemy_url()) == migrate.head_revision()


def test_schema_behind_is_migrated(healthy: Settings) -> None:
    migrate.downgrade(healthy.sqlalchemy_url(), "-1")
    result = run()
    assert result.exit_code == 2
    assert "the schema is behind" in result.output and "fix: smartstart db migrate" in result.output
    fixed = run("--fix")
    assert fixed.exit_code == 0, fixed.output
    assert "fixed: migrated the schema" in fixed.output
    assert migrate.current_revision(healthy.sqlalchemy_url()) == migrate.head_revision()


def test_drift_is_shown_and_not_touched(healthy: Settings) -> None:
    with psycopg.connect(healthy.url_for(), autocommit=True) as conn:
        conn.execute('ALTER TABLE "User" ADD COLUMN "newField" VARCHAR(255)')
    try:
        result = run("--fix", "--json")
        assert result.exit_code == 1
        schema = findings(result)["schema"]
        assert schema["state"] == "WARN" and "User.newField" in schema["evidence"]
        assert not schema["fixable"]
    finally:
        with psycopg.connect(healthy.url_for(), autocommit=True) as conn:
            conn.execute('ALTER TABLE "User" DROP COLUMN "newField"')


def test_missing_pg_stat_statements_is_created(healthy: Settings) -> None:
    with Cluster.from_settings(healthy).connect(healthy.db_name) as conn:
        conn.execute("DROP EXTENSION pg_stat_statements")
    result = run("--json")
    assert result.exit_code == 1
    assert findings(result)["pg_stat_statements"]["fixable"]
    assert run("--fix").exit_code == 0
    with psycopg.connect(healthy.url_for()) as conn:
        assert conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
        ).fetchone()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])  # noqa: S607
    proc.wait()
    return proc.pid


def test_stale_pid_files_are_found_and_removed(healthy: Settings) -> None:
    cluster = Cluster.from_settings(healthy)
    killed = cluster.status().pid
    cluster.kill()  # SIGKILL: postmaster.pid stays behind
    # The signal is not the death: until the postmaster is gone its pid file is not stale.
    deadline = time.monotonic() + 10
    while killed is not None and process.alive(killed) and time.monotonic() < deadline:
        time.sleep(0.02)
    brain.pid_file(healthy).write_text(f"{_dead_pid()} 127.0.0.1 {healthy.api_port}\n")
    result = run("--json")
    assert result.exit_code == 2
    stale = [f for f in json.loads(result.output)["items"] if f["check"] == "stale_pid"]
    assert {("postmaster.pid" in f["evidence"], "brain.pid" in f["evidence"]) for f in stale} == {
        (True, False),
        (False, True),
    }
    fixed = run("--fix")
    assert fixed.exit_code == 0, fixed.output
    assert "removed the stale" in fixed.output and "started PostgreSQL" in fixed.output
    assert not brain.pid_file(healthy).exists()
    assert cluster.status().running


def test_taken_port_is_named_and_not_fixed(healthy: Settings) -> None:
    cluster = Cluster.from_settings(healthy)
    cluster.stop()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        squatter.bind(("127.0.0.1", healthy.pg_port))
        squatter.listen()
        result = run("--fix", "--json")
        assert result.exit_code == 2
        port = findings(result)["port"]
        assert port["state"] == "CRIT" and f"pid {os.getpid()}" in port["evidence"]
        assert not port["fixable"] and not json.loads(result.output)["fixed"]
        assert not cluster.status().running
    finally:
        squatter.close()
    assert run("--fix").exit_code == 0
    assert cluster.status().running


def test_disk_and_client_judgements() -> None:
    home = Path("/srv/home")
    assert doctor.disk_finding(home, 100 * 2**30, 50 * 2**30).state is State.OK
    assert doctor.disk_finding(home, 100 * 2**30, 8 * 2**30).state is State.WARN
    nearly = doctor.disk_finding(home, 100 * 2**30, 2**30)
    assert nearly.state is State.CRIT and "1.0 GiB free" in nearly.evidence
    versions = {"/usr/bin/pg_dump": "pg_dump (PostgreSQL) 13.4", "/usr/bin/psql": "psql 15.2"}
    old = doctor.client_finding(versions, 150004)
    assert old.state is State.WARN and "/usr/bin/pg_dump" in old.evidence
    assert "/usr/bin/psql" not in old.evidence
    assert doctor.client_finding(versions, 130009).state is State.OK


def test_external_server_checks_host_and_port_separately(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "SMARTSTART_DATABASE_URL", "postgresql://u:p@no-such-host.invalid:5432/smartstart_db"
    )
    result = run("--json")
    assert result.exit_code == 2
    assert findings(result)["dns"]["state"] == "CRIT"
    monkeypatch.setenv(
        "SMARTSTART_DATABASE_URL", f"postgresql://u:p@127.0.0.1:{free_port()}/smartstart_db"
    )
    get_settings.cache_clear()
    refused = findings(run("--json"))
    assert refused["dns"]["state"] == "OK" and refused["server"]["state"] == "CRIT"


def test_bad_option_is_one_clear_line() -> None:
    result = run("--cure")
    assert result.exit_code == 2 and "--cure" in result.output
