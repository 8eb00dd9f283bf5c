"""`smartstart audit list` through Typer's CliRunner."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from smartstart.cli import common
from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.domain import audit

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as a real terminal, so cells are not wrapped mid-word."""
    monkeypatch.setattr(common.console, "width", 200)


def run(*args: str) -> Any:
    return runner.invoke(app, ["audit", "list", *args])


@pytest.fixture
def db(cli_env: Any, seeded_settings: Settings) -> Any:
    cli_env(seeded_settings)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def entries(db: psycopg.Connection[Any]) -> None:
    alice = audit.Actor.user("user-alice", ip="10.0.0.1")
    for i in range(3):
        audit.record(db, alice, "journey.start", resource="journey", resource_id=f"u{i}")
    audit.record(db, audit.Actor.operator(), "journey_stage.create", resource="journey_stage")
    audit.record(db, alice, "users.update", resource="user", resource_id="u1", password="pw")
    # One old entry, to filter by time.
    db.execute(
        "INSERT INTO audit_log (actor, action, \"createdAt\") VALUES ('old', 'users.create', %s)",
        [datetime(2020, 1, 1, tzinfo=UTC)],
    )


def items(*args: str) -> list[dict[str, Any]]:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return list(json.loads(result.output)["items"])


def test_table_by_default(entries: None) -> None:
    result = run()
    assert result.exit_code == 0, result.output
    assert "journey.start" in result.output and "user-alice" in result.output


def test_filters(entries: None) -> None:
    assert len(items("--actor", "user-alice")) == 4
    assert {e["action"] for e in items("--action", "journey*")} == {
        "journey.start",
        "journey_stage.create",
    }
    assert len(items("--action", "journey.start")) == 3
    assert [e["resourceId"] for e in items("--resource", "journey", "--resource-id", "u1")] == [
        "u1"
    ]
    assert [e["actor"] for e in items("--until", "2021-01-01")] == ["old"]
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert "old" not in {e["actor"] for e in items("--since", since)}
    # Relative times and day names, as an operator types them.
    for since in ("7d", "12h", "yesterday", "today"):
        recent = {e["actor"] for e in items("--since", since)}
        assert "user-alice" in recent and "old" not in recent, since
    assert [e["actor"] for e in items("--until", "2w")] == ["old"]
    # Secrets never reach the log.
    assert items("--action", "users.update")[0]["details"]["password"] == "***"


def test_pages_with_cursor(entries: None) -> None:
    first = json.loads(run("--action", "journey.start", "--limit", "2", "--json").output)
    assert [e["resourceId"] for e in first["items"]] == ["u2", "u1"]
    assert first["next_cursor"]
    rest = json.loads(
        run(
            "--action", "journey.start", "--limit", "2", "--cursor", first["next_cursor"], "--json"
        ).output
    )
    assert [e["resourceId"] for e in rest["items"]] == ["u0"]
    assert rest["next_cursor"] is None
    table = run("--action", "journey.start", "--limit", "2")
    assert f"--cursor {first['next_cursor']}" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "someday"), "not a time"),
        (("--since", "7y"), "not a time"),
        (("--since", "9999999w"), "too far back"),
        (("--until", "2025-13-01"), "not a time"),
        (("--since", "2025-02-01", "--until", "2025-01-01"), "before --until"),
    ],
)
def test_bad_input_is_a_clear_usage_error(
    db: psycopg.Connection[Any], args: tuple[str, ...], message: str
) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
