"""`smartstart up/status/logs/down/restart` end to end, as a user runs them: real processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_ADMIN_PASSWORD, TEST_BCRYPT_ROUNDS, free_port, make_home

SMARTSTART = [sys.executable, "-m", "smartstart.cli.main"]


@pytest.fixture
def stack_env() -> Iterator[dict[str, str]]:
    """Environment for a complete SmartStart in a fresh home on free ports; torn down after."""
    home = make_home("smartstart-stack-")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SMARTSTART_")},
        "SMARTSTART_HOME": str(home),
        "SMARTSTART_PG_PORT": str(free_port()),
        "SMARTSTART_API_PORT": str(free_port()),
        "SMARTSTART_ADMIN_PASSWORD": TEST_ADMIN_PASSWORD,
        "SMARTSTART_BCRYPT_ROUNDS": str(TEST_BCRYPT_ROUNDS),
    }
    yield env
    subprocess.run([*SMARTSTART, "down"], env=env, capture_output=True, timeout=60)
    shutil.rmtree(home, ignore_errors=True)


def sh(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SMARTSTART, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_up_detach_status_logs_down(stack_env: dict[str, str]) -> None:
    up = sh(stack_env, "up", "--detach")
    assert up.returncode == 0, up.stderr + up.stdout
    api = f"http://127.0.0.1:{stack_env['SMARTSTART_API_PORT']}"
    assert get(api + "/readyz")[0] == 200

    status = json.loads(sh(stack_env, "status", "--json").stdout)
    assert status["next_cursor"] is None
    by_name = {row["service"]: row for row in status["items"]}
    assert by_name["postgres"]["state"] == "running"
    assert by_name["brain"]["state"] == "running" and by_name["brain"]["pid"]
    assert by_name["brain"]["url"] == api

    logs = sh(stack_env, "logs", "postgres", "-n", "200")
    assert "database system is ready to accept connections" in logs.stdout
    assert "GET /readyz" in sh(stack_env, "logs", "brain").stdout

    # The guide's own connection string works against the embedded cluster.
    guide_url = (
        "postgresql://smartstart_user:smartstart_password@localhost:"
        f"{stack_env['SMARTSTART_PG_PORT']}/smartstart_db"
    )
    psql = subprocess.run(
        ["psql", guide_url, "-Atc", 'SELECT email FROM "User" ORDER BY email'],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert psql.stdout.split() == [
        "admin@alicesolutionsgroup.com",
        "developer@alicesolutionsgroup.com",
    ]

    down = sh(stack_env, "down")
    assert down.returncode == 0
    assert "stopped the Brain" in down.stdout and "stopped PostgreSQL" in down.stdout
    after = {
        r["service"]: r["state"]
        for r in json.loads(sh(stack_env, "status", "--json").stdout)["items"]
    }
    assert after == {"postgres": "stopped", "brain": "stopped"}

    # From a stopped cluster: up again, data kept, no re-seed.
    again = sh(stack_env, "up", "--detach")
    assert again.returncode == 0 and "seeded" not in again.stdout
    assert get(api + "/readyz")[0] == 200
    restart = sh(stack_env, "restart")
    assert restart.returncode == 0, restart.stderr
    assert get(api + "/readyz")[0] == 200


def test_generated_credentials_are_printed_once_and_saved(stack_env: dict[str, str]) -> None:
    del stack_env["SMARTSTART_ADMIN_PASSWORD"]
    up = sh(stack_env, "up", "--detach")
    assert up.returncode == 0, up.stderr
    creds = Path(stack_env["SMARTSTART_HOME"]) / "initial-credentials"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert "admin@alicesolutionsgroup.com" in up.stdout
    assert "shown once" in up.stdout
    sh(stack_env, "down")
    assert "admin@alicesolutionsgroup.com" not in sh(stack_env, "up", "--detach").stdout


def test_api_port_taken_fails_before_touching_anything(stack_env: dict[str, str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(stack_env["SMARTSTART_API_PORT"])))
        blocker.listen()
        up = sh(stack_env, "up", "--detach")
    assert up.returncode == 1
    assert "SMARTSTART_API_PORT" in up.stderr and "Traceback" not in up.stderr
    assert not (Path(stack_env["SMARTSTART_HOME"]) / "pgdata").exists()


def test_pg_port_taken_is_one_readable_line(stack_env: dict[str, str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(stack_env["SMARTSTART_PG_PORT"])))
        blocker.listen()
        start = sh(stack_env, "db", "start")
    assert start.returncode == 1
    assert "SMARTSTART_PG_PORT" in start.stderr and "Traceback" not in start.stderr


def test_up_in_the_foreground_stops_on_ctrl_c(stack_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [*SMARTSTART, "up"],
        env=stack_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    api = f"http://127.0.0.1:{stack_env['SMARTSTART_API_PORT']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get(api + "/readyz")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    assert get(api + "/readyz")[0] == 200
    proc.send_signal(2)  # SIGINT, as Ctrl-C
    assert proc.wait(timeout=20) == 0
    rows = {
        r["service"]: r["state"]
        for r in json.loads(sh(stack_env, "status", "--json").stdout)["items"]
    }
    assert rows == {"postgres": "running", "brain": "stopped"}  # Ctrl-C stops only the Brain


def test_failed_up_leaves_no_brain_behind(stack_env: dict[str, str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(stack_env["SMARTSTART_PG_PORT"])))
        blocker.listen()
        up = sh(stack_env, "up", "--detach")
    assert up.returncode == 1 and "SMARTSTART_PG_PORT" in up.stderr
    rows = {
        r["service"]: r["state"]
        for r in json.loads(sh(stack_env, "status", "--json").stdout)["items"]
    }
    assert rows["brain"] == "stopped"
    with socket.socket() as probe:  # the API port was released
        probe.bind(("127.0.0.1", int(stack_env["SMARTSTART_API_PORT"])))


def test_up_with_an_external_database_migrates_seeds_and_serves(
    stack_env: dict[str, str], db_settings: Any
) -> None:
    # An empty, unmigrated database on a server SmartStart must not manage.
    from smartstart.db import migrate

    migrate.downgrade(db_settings.sqlalchemy_url(), "base")
    env = {**stack_env, "SMARTSTART_DATABASE_URL": db_settings.url_for()}
    up = sh(env, "up", "--detach")
    assert up.returncode == 0, up.stderr
    assert "migrated the schema" in up.stdout and "seeded" in up.stdout
    assert "started PostgreSQL" not in up.stdout
    assert not (Path(env["SMARTSTART_HOME"]) / "pgdata").exists()
    api = f"http://127.0.0.1:{env['SMARTSTART_API_PORT']}"
    assert get(api + "/readyz")[0] == 200
    down = sh(env, "down")
    assert "left running" in down.stdout
    assert migrate.current_revision(db_settings.sqlalchemy_url()) == migrate.head_revision()
