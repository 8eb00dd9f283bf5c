"""What every command shares: tables, the time option, --version and -h."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from smartstart import __version__
from smartstart.cli import common
from smartstart.cli.main import app
from smartstart.config import Settings

EMAIL = "a.very.long.address.of.somebody.in.operations@alicesolutionsgroup.example.com"
ID = "cm0f3k2x90000abcdefghijklmnopqrstuv"
ROW = {"id": ID, "email": EMAIL, "name": "Ada " * 12, "note": "x" * 90}


def table(monkeypatch: pytest.MonkeyPatch, terminal: bool, width: int = 160) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=width, color_system=None)
    monkeypatch.setattr(common, "console", console)
    common.print_table([ROW, {**ROW, "id": "short"}])
    return out.getvalue()


@pytest.mark.parametrize("width", [160, 100, 60])
def test_a_terminal_table_never_cuts_ids_or_emails(
    monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    text = table(monkeypatch, terminal=True, width=width)
    assert EMAIL in text and ID in text
    assert "…" not in text


def test_a_table_into_a_pipe_is_never_cut_or_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    text = table(monkeypatch, terminal=False, width=80)
    assert EMAIL in text and ID in text and "x" * 90 in text and ("Ada " * 12).strip() in text


def test_times_relative_named_and_iso() -> None:
    now = datetime.now(UTC)
    for text, delta in (("30m", timedelta(minutes=30)), ("12h", timedelta(hours=12))):
        assert abs(common.parse_when(text) - (now - delta)) < timedelta(seconds=5)
    assert abs(common.parse_when("7d") - (now - timedelta(days=7))) < timedelta(seconds=5)
    assert abs(common.parse_when(" 2W ") - (now - timedelta(weeks=2))) < timedelta(seconds=5)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    assert common.parse_when("today") == midnight
    assert common.parse_when("yesterday") == midnight - timedelta(days=1)
    assert common.parse_when("2025-01-31") == datetime(2025, 1, 31, tzinfo=UTC)
    assert common.parse_when("2025-01-31T14:00:00+01:00") == datetime(2025, 1, 31, 13, tzinfo=UTC)
    for bad in ("someday", "7y", "-3d", "", "a\x00b"):
        with pytest.raises(typer.BadParameter):
            common.parse_when(bad)


def test_version_and_short_help() -> None:
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"smartstart {__version__}"
    for args in (["-h"], ["db", "-h"], ["db", "shell", "-h"], ["audit", "list", "-h"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, args
        assert "Usage:" in result.output, args


# -- NUL in any string input: one error line, exit 1, nothing changed ------------------


@pytest.mark.parametrize(
    "args",
    [
        ["journey", "show", "a\x00b"],
        ["journey", "stage-create", "Wel\x00come"],
        ["auth", "unlock", "--ip", "10.0.0.1\x00"],
        ["audit", "list", "--actor", "a\x00b"],
        ["users", "show", "admin\x00"],
        ["journey", "reorder", "Welcome", "x\x00y"],
    ],
)
def test_a_nul_in_an_argument_is_one_error_line(
    cli_env: Any, seeded_settings: Settings, args: list[str]
) -> None:
    cli_env(seeded_settings)
    before = _audit_count(seeded_settings)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error:") and "NUL" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert _audit_count(seeded_settings) == before


def test_a_nul_read_from_stdin_is_one_error_line(cli_env: Any, seeded_settings: Settings) -> None:
    cli_env(seeded_settings)
    with psycopg.connect(seeded_settings.url_for()) as conn:
        (hashed,) = conn.execute(
            "SELECT password FROM \"User\" WHERE username = 'admin'"
        ).fetchone() or (None,)
    result = CliRunner().invoke(
        app,
        ["users", "passwd", "admin", "--password-stdin"],
        input="a perfectly\x00 fine passphrase\n",
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error:") and "stdin" in result.output
    with psycopg.connect(seeded_settings.url_for()) as conn:
        row = conn.execute("SELECT password FROM \"User\" WHERE username = 'admin'").fetchone()
    assert row is not None and row[0] == hashed


def _audit_count(settings: Settings) -> int:
    with psycopg.connect(settings.url_for()) as conn:
        row = conn.execute("SELECT count(*) FROM audit_log").fetchone()
    return int(row[0]) if row else 0
