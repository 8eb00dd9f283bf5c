"""`smartstart logs`: both logs parsed into entries, filtered by time, level and text."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from smartstart.cli.main import app

runner = CliRunner()
NOW = datetime.now(UTC)


def pg_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:23] + " UTC"


def brain_line(when: datetime, level: str, message: str, **fields: Any) -> str:
    return json.dumps(
        {
            "time": when.isoformat(timespec="milliseconds"),
            "level": level,
            "logger": "x",
            "message": message,
            **fields,
        }
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir()
    old, recent = NOW - timedelta(hours=3), NOW - timedelta(minutes=5)
    (logs / "postgres.log").write_text(
        "\n".join(
            [
                f"{pg_time(old)} [101] LOG:  database system is ready to accept connections",
                f'{pg_time(recent)} [202] smartstart_user@smartstart_db ERROR:  relation "nope" '
                "does not exist at character 15",
                f"{pg_time(recent)} [202] smartstart_user@smartstart_db STATEMENT:  "
                "SELECT * FROM nope;",
                f"{pg_time(recent)} [303] LOG:  checkpoint starting: time",
            ]
        )
        + "\n"
    )
    (logs / "brain.log").write_text(
        "\n".join(
            [
                brain_line(old, "info", "Application startup complete."),
                "supervisor [77]: worker 1 started (pid 78)",
                brain_line(
                    recent,
                    "info",
                    '127.0.0.1:5 - "GET /api/users/u1 HTTP/1.1" 200',
                    request_id="r-1",
                    route="/api/users/{user_id}",
                    status=200,
                    duration_ms=1.25,
                    actor="admin-id",
                ),
                brain_line(
                    recent,
                    "error",
                    "Exception in ASGI application",
                    exc="Traceback (most recent call last):\nValueError: boom",
                ),
            ]
        )
        + "\n"
    )
    monkeypatch.setenv("SMARTSTART_HOME", str(tmp_path))
    return tmp_path


def entries(*args: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["logs", *args, "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_both_logs_in_time_order_with_their_continuations(home: Path) -> None:
    found = entries()
    # Equal times keep each log's order, PostgreSQL's first.
    assert [e["source"] for e in found] == [
        "postgres",
        "brain",
        "brain",
        "postgres",
        "postgres",
        "brain",
        "brain",
    ]
    [error] = [e for e in found if e["source"] == "postgres" and e["level"] == "error"]
    assert error["message"].endswith("STATEMENT:  SELECT * FROM nope;")
    assert error["user"] == "smartstart_user" and error["database"] == "smartstart_db"


def test_level_since_grep_and_count_filter(home: Path) -> None:
    errors = entries("--level", "error")
    assert [(e["source"], e["level"]) for e in errors] == [
        ("postgres", "error"),
        ("brain", "error"),
    ]
    assert "ValueError: boom" in errors[1]["message"]
    recent = entries("--since", "1h")
    assert len(recent) == 4 and all(e["time"] for e in recent)
    [access] = entries("brain", "--grep", "ADMIN-ID")
    assert access["route"] == "/api/users/{user_id}" and access["duration_ms"] == 1.25
    assert [e["message"] for e in entries("postgres", "-n", "1")] == ["checkpoint starting: time"]


def test_text_output_is_for_a_person(home: Path) -> None:
    result = runner.invoke(app, ["logs", "brain", "--grep", "GET /api"])
    assert result.exit_code == 0
    [line] = result.stdout.splitlines()
    assert "INFO" in line and '"GET /api/users/u1 HTTP/1.1" 200 1.25 ms actor=admin-id' in line
    assert "request_id=r-1" in line and not line.startswith("{")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last tuesday"], "not a time"),
        (["--level", "loud"], "loud"),
        (["--grep", "a\x00b"], "NUL"),
        (["--grep", "x" * 1_000_000], "longer than 10000"),
        (["-n", "-1"], "-1"),
    ],
)
def test_bad_input_is_one_clear_error(home: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["logs", *args])
    assert result.exit_code != 0 and message in result.output


def test_an_external_servers_log_is_not_ours(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTSTART_DATABASE_URL", "postgresql://u:p@db.example:5432/x")
    result = runner.invoke(app, ["logs", "postgres"])
    assert result.exit_code == 1 and "external" in result.output
    assert len(entries()) == 4  # the Brain's only


def test_follow_prints_new_entries_that_match(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSTART_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smartstart.cli.main",
            "logs",
            "brain",
            "-f",
            "-n",
            "0",
            "--level",
            "warning",
            "--json",
        ],
        env={**env, "SMARTSTART_HOME": str(home)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready: list[Any] = []
        deadline = time.monotonic() + 30
        # Appended until it shows: lines written before it started are history (-n 0).
        while not ready and time.monotonic() < deadline:
            with (home / "logs" / "brain.log").open("a") as f:
                f.write(brain_line(datetime.now(UTC), "info", "quiet") + "\n")
                f.write(brain_line(datetime.now(UTC), "warning", "loud", request_id="r-9") + "\n")
            ready, _, _ = select.select([proc.stdout], [], [], 1)
        assert ready, "nothing printed"
        line = proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()
    assert json.loads(line)["message"] == "loud"
