"""The embedded cluster remembers the settings it was created with (real clusters, CliRunner)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smartstart.cli.main import app
from smartstart.config import get_settings
from smartstart.pg.cluster import Cluster
from tests.conftest import free_port, make_home


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty SMARTSTART_HOME, the cluster in it destroyed after; cwd without a .env."""
    home = make_home("smartstart-recorded-")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMARTSTART_HOME", str(home))
    monkeypatch.setenv("SMARTSTART_ENV", "test")
    yield home
    Cluster(home).destroy()
    shutil.rmtree(home, ignore_errors=True)


def run(monkeypatch: pytest.MonkeyPatch, *args: str, **env: str | None) -> tuple[int, str]:
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_a_new_shell_finds_the_cluster_on_the_port_it_was_made_with(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    port = str(free_port())
    code, out = run(
        monkeypatch, "db", "start", SMARTSTART_PG_PORT=port, SMARTSTART_DB_NAME="other_db"
    )
    assert code == 0, out
    assert json.loads((home / "cluster.json").read_text())["pg_port"] == int(port)

    # A new shell: neither variable set.
    code, out = run(monkeypatch, "db", "url", SMARTSTART_PG_PORT=None, SMARTSTART_DB_NAME=None)
    assert code == 0, out
    assert out.strip().endswith(f"@127.0.0.1:{port}/other_db")
    code, out = run(monkeypatch, "status", "--json")
    postgres = json.loads(out)["items"][0]
    assert postgres["port"] == int(port) and f":{port}/other_db" in postgres["url"]
    assert run(monkeypatch, "db", "shell", "-c", "SELECT 1")[0] == 0

    # An explicit conflicting setting is refused, naming both values.
    code, out = run(monkeypatch, "db", "url", SMARTSTART_PG_PORT="5432")
    assert code == 1
    assert "SMARTSTART_PG_PORT=5432" in out and f"SMARTSTART_PG_PORT={port}" in out
    monkeypatch.delenv("SMARTSTART_PG_PORT")
    Path(".env").write_text("SMARTSTART_DB_NAME=smartstart_db\n")
    code, out = run(monkeypatch, "status")
    assert code == 1 and "smartstart_db" in out and "other_db" in out
    Path(".env").unlink()

    # A cluster made before settings were recorded is recorded on its next start.
    (home / "cluster.json").unlink()
    code, out = run(monkeypatch, "db", "start", SMARTSTART_PG_PORT=port)
    assert code == 0, out
    assert json.loads((home / "cluster.json").read_text())["pg_port"] == int(port)


def test_a_new_shell_finds_the_brain_on_the_port_it_was_started_with(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    from smartstart.services import brain

    api_port = free_port()
    monkeypatch.setenv("SMARTSTART_API_PORT", str(api_port))
    get_settings.cache_clear()
    started = get_settings()
    # This process stands in for a running Brain: its pid is alive.
    brain.write_pid(started, os.getpid())

    monkeypatch.delenv("SMARTSTART_API_PORT")
    code, out = run(monkeypatch, "status", "--json")
    assert code == 0, out
    row = json.loads(out)["items"][1]
    assert row["service"] == "brain" and row["state"] == "running"
    assert row["port"] == api_port and row["url"] == f"http://127.0.0.1:{api_port}"
    brain.clear_pid(started, os.getpid())
    assert not brain.pid_file(started).exists()
