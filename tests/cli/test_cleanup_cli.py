"""`smartstart cleanup …` through Typer's CliRunner: dry run, confirmation, counts, bad input."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from smartstart.cli import common
from smartstart.cli.main import app
from smartstart.config import Settings

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", 200)


@pytest.fixture
def db(cli_env: Any, seeded_settings: Settings) -> Any:
    cli_env(seeded_settings)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        conn.execute("DELETE FROM audit_log")
        conn.execute(
            """INSERT INTO audit_log (action, "createdAt")
               SELECT 'old', now() - g * interval '1 day' FROM generate_series(1, 50) g"""
        )
        yield conn


def actions(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(conn.execute("SELECT action, count(*) FROM audit_log GROUP BY 1").fetchall())


def test_dry_run_counts_and_changes_nothing(db: psycopg.Connection[Any]) -> None:
    result = runner.invoke(app, ["cleanup", "audit-logs", "--older-than", "30d", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "audit-logs" in result.output and " 21 " in result.output
    as_json = runner.invoke(app, ["cleanup", "all", "--older-than", "2w", "--dry-run", "--json"])
    plan = json.loads(as_json.stdout)
    assert plan["dry_run"] is True
    assert [s["kind"] for s in plan["steps"]] == ["inactive-users", "sessions", "audit-logs"]
    assert plan["steps"][2]["planned"] == 37
    assert actions(db) == {"old": 50}


def test_cleanup_asks_first_and_stops_without_an_answer(db: psycopg.Connection[Any]) -> None:
    result = runner.invoke(app, ["cleanup", "audit-logs"], input="")
    assert result.exit_code == 1 and "not confirmed" in result.output
    assert actions(db) == {"old": 50}
    result = runner.invoke(app, ["cleanup", "audit-logs"], input="n\n")
    assert result.exit_code == 1 and "aborted" in result.output
    assert actions(db) == {"old": 50}


def test_cleanup_deletes_in_batches_and_audits_the_run(db: psycopg.Connection[Any]) -> None:
    result = runner.invoke(
        app,
        ["cleanup", "audit-logs", "--older-than", "10d", "--batch-size", "7", "--yes", "--json"],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["steps"][0]["done"] == 41 and out["batches"] == 6
    assert actions(db) == {"old": 9, "cleanup.run": 1}
    [(actor, details)] = db.execute(
        "SELECT actor, details FROM audit_log WHERE action = 'cleanup.run'"
    ).fetchall()
    assert actor.startswith("cli:") and details["steps"]["audit-logs"]["done"] == 41
    again = runner.invoke(app, ["cleanup", "audit-logs", "--older-than", "10d", "--yes"])
    assert again.exit_code == 0 and "nothing to clean up" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit-logs", "--older-than", "0d"], "more than 0"),
        (["audit-logs", "--older-than", "thirty days"], "not a duration"),
        (["audit-logs", "--older-than", "30d\x00"], "not a duration"),
        (["audit-logs", "--older-than", "9" * 1_000_000], "not a duration"),
        (["inactive-users", "--inactive-for", "-5d"], "not a duration"),
        (["all", "--batch-size", "0"], "batch-size"),
    ],
)
def test_bad_input_is_one_clear_error_and_changes_nothing(
    db: psycopg.Connection[Any], args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["cleanup", *args, "--yes"])
    assert result.exit_code != 0
    assert message in result.output
    assert len(result.output) < 2000
    assert actions(db) == {"old": 50}
