"""`smartstart analytics …` through Typer's CliRunner: tables, charts, JSON, CSV, bad input."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from rich.console import Console
from typer.testing import CliRunner

from smartstart.cli import analytics as analytics_cli
from smartstart.cli import common
from smartstart.cli.main import app
from smartstart.config import Settings

runner = CliRunner()
PW = "$2b$12$" + "a" * 53
LONG_ROLE = "R" * 150  # longer than any terminal line: piped output keeps it whole


@pytest.fixture
def db(cli_env: Any, seeded_settings: Settings) -> Any:
    cli_env(seeded_settings)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        conn.execute('INSERT INTO "Role" (name) VALUES (%s)', [LONG_ROLE])
        for n, created in enumerate(
            ["2020-03-02 08:00+00", "2020-03-02 23:00+00", "2020-03-04 00:00+00"]
        ):
            conn.execute(
                'INSERT INTO "User" (email, username, password, role, xp, "createdAt")'
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [f"c{n}@example.com", f"c{n}", PW, LONG_ROLE if n == 0 else "MEMBER", 150, created],
            )
        yield conn


def run(*args: str) -> Any:
    return runner.invoke(app, ["analytics", *args])


def test_registrations_as_csv(db: psycopg.Connection[Any]) -> None:
    result = run("registrations", "--since", "2020-03-01", "--until", "2020-03-05", "--csv")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "start,end,users,cumulative",
        "2020-03-01,2020-03-01,0,0",
        "2020-03-02,2020-03-02,2,2",
        "2020-03-03,2020-03-03,0,2",
        "2020-03-04,2020-03-04,1,3",
        "2020-03-05,2020-03-05,0,3",
    ]


def test_every_analysis_as_json(db: psycopg.Connection[Any]) -> None:
    week = json.loads(
        run("registrations", "--since", "2020-03-01", "--until", "2020-03-05", "-p", "week",
            "--json").output
    )  # fmt: skip
    assert week["since"] == "2020-02-24" and week["total"] == 3
    cohort = ("--since", "2020-03-01", "--until", "2020-03-31", "--json")
    roles = json.loads(run("roles", *cohort).output)
    assert roles["total"] == 3
    assert {r["name"]: r["users"] for r in roles["primary"]}[LONG_ROLE] == 1
    xp = json.loads(run("xp", *cohort).output)
    assert [b["users"] for b in xp["bands"]] == [0, 3, 0, 0]
    status = json.loads(run("status", *cohort).output)
    assert status["statuses"][0] == {"name": "ACTIVE", "users": 3, "share": 100.0}
    journey = json.loads(run("journey", "--json").output)
    assert [s["order"] for s in journey["stages"]] == sorted(s["order"] for s in journey["stages"])
    activity = json.loads(run("activity", "--json").output)
    assert len(activity["buckets"]) == 30


def test_piped_tables_are_never_cut(db: psycopg.Connection[Any]) -> None:
    for command in ("registrations", "activity", "roles", "xp", "journey", "status"):
        result = run(command)
        assert result.exit_code == 0, (command, result.output)
        assert "█" not in result.output  # no drawing into a pipe
    assert LONG_ROLE in run("roles").output


def test_a_terminal_gets_the_charts(
    db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = Console(force_terminal=True, width=100, color_system=None)
    monkeypatch.setattr(common, "console", terminal)
    monkeypatch.setattr(analytics_cli, "console", terminal)
    series = run("registrations", "--since", "2020-03-01", "--until", "2020-03-05")
    assert series.exit_code == 0, series.output
    assert "▁█▁▄▁" in series.output  # the sparkline: 0, 2, 0, 1, 0
    assert "Registrations per day, 2020-03-01 to 2020-03-05 (UTC): 3" in series.output
    xp = run("xp", "--since", "2020-03-01", "--until", "2020-03-31")
    assert "█" * analytics_cli.BAR_WIDTH in xp.output  # 100-499 holds them all


def test_bars_and_sparklines() -> None:
    assert analytics_cli.bar(0, 10) == ""
    assert analytics_cli.bar(10, 10, 4) == "████"
    assert analytics_cli.bar(1, 16, 4) == "▎"  # a quarter of a block
    assert analytics_cli.sparkline([0, 0], 10) == "▁▁"
    assert analytics_cli.sparkline([1, 2, 3, 4] * 50, 50) == "█" * 50  # averaged down, 4 a point
    assert analytics_cli.sparkline([0, 4, 8], 3) == "▁▄█"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("registrations", "--since", "2025-02-01", "--until", "2025-01-01"), "is after until"),
        (("roles", "--since", "2025-02-01", "--until", "2025-01-01"), "is after until"),
        (("registrations", "--since", "someday"), "--since: 'someday' is not a time"),
        (("activity", "--until", "2025-13-01"), "--until: '2025-13-01' is not a time"),
        (("registrations", "--since", "9999999w"), "too far back"),
        (("registrations", "--since", "2000-01-01", "--until", "2025-01-01"), "at most 3660"),
        (("registrations", "--period", "fortnight"), "--period must be day, week or month"),
        (("status", "--json", "--csv"), "choose one"),
        (("xp", "--since", "2025-01-01\x00"), "NUL"),
        (("journey", "--since", "9" * 1_000_000), "not a time"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    db: psycopg.Connection[Any], args: tuple[str, ...], message: str
) -> None:
    result = run(*args)
    assert result.exit_code == 1, result.output[:500]
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output[:500]
    assert message in result.output
