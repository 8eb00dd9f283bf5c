"""Scheduled backups: made with `db backup`'s code, audited, kept N, shown with their outcome."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.pg.backup import list_backups
from smartstart.services import jobs
from smartstart.services.scheduler import Scheduler

SLOT = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
runner = CliRunner()


@pytest.fixture
def home(
    db_settings: Settings, tmp_path: Path, cli_env: Any, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """db_settings with backups under a home of this test's own; the CLI pointed at it."""
    settings = db_settings.model_copy(
        update={"home": tmp_path, "backup_keep": 1, "schedule_grace_minutes": 10_000_000}
    )
    cli_env(db_settings)
    monkeypatch.setenv("SMARTSTART_HOME", str(tmp_path))
    return settings


def tick(settings: Settings, when: datetime) -> list[Any]:
    s = Scheduler(settings, jobs.jobs(settings)[:1], clock=lambda: when)
    try:
        return s.tick()
    finally:
        s.close()


def test_scheduled_backups_are_made_audited_and_pruned(home: Settings) -> None:
    settings = home
    manual = runner.invoke(app, ["db", "backup", "--note", "by hand"])
    assert manual.exit_code == 0, manual.output
    [first] = tick(settings, SLOT + timedelta(minutes=1))
    assert first["outcome"] == "ok", first["error"]
    [second] = tick(settings, SLOT + timedelta(days=1, minutes=1))
    assert second["outcome"] == "ok" and second["details"]["pruned"] == [first["details"]["file"]]
    notes = sorted(str(b.manifest.note) for b in list_backups(settings.home_dir / "backups"))
    assert notes == ["by hand", "scheduled"]  # one scheduled kept, the manual one untouched
    assert not Path(str(first["details"]["file"])).exists()
    with psycopg.connect(settings.url_for()) as conn:
        audited = conn.execute(
            "SELECT actor, details->>'outcome' FROM audit_log"
            " WHERE action = 'db.backup.scheduled' ORDER BY id"
        ).fetchall()
    assert audited == [("brain:scheduler", "ok"), ("brain:scheduler", "ok")]
    listed = json.loads(runner.invoke(app, ["db", "backups", "--json"]).stdout)
    assert [i["note"] for i in listed["items"]] == ["scheduled", "by hand"]
    text = runner.invoke(app, ["db", "backups"]).output
    assert "Scheduled backups" in text and Path(str(second["details"]["file"])).name in text
    assert text.count(" ok ") >= 2


def test_a_failed_scheduled_backup_is_retried_audited_and_reported(
    home: Settings, tmp_path: Path, cli_env: Any, db_settings: Settings
) -> None:
    empty = tmp_path / "no-binaries"
    empty.mkdir()
    settings = home.model_copy(update={"pg_bin": empty})
    [first] = tick(settings, SLOT)
    [second] = tick(settings, SLOT + timedelta(seconds=30))
    assert (first["outcome"], second["outcome"], second["attempt"]) == ("failed", "failed", 2)
    assert "does not hold pg_dump" in str(second["error"])
    with psycopg.connect(settings.url_for()) as conn:
        audited = conn.execute(
            "SELECT details->>'outcome' FROM audit_log WHERE action = 'db.backup.scheduled'"
        ).fetchall()
    assert audited == [("failed",), ("failed",)]
    [job] = [j for j in jobs.status(settings) or [] if j["job"] == "backup"]
    assert job["failed"] and job["attempt"] == 2
    text = runner.invoke(app, ["db", "backups"]).output
    assert "Scheduled backups" in text and "does not hold" in text
    cli_env(db_settings)  # `status` looks at the cluster of its home
    status = runner.invoke(app, ["status"])
    assert "backup: the run due" in status.output and "does not hold pg_dump" in status.output
