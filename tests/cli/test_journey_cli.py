"""`smartstart journey …` through Typer's CliRunner against a fresh seeded database."""

from __future__ import annotations

import getpass
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
    """Tables as wide as a real terminal, so cells are not wrapped mid-word."""
    monkeypatch.setattr(common.console, "width", 200)


ADMIN = "admin@alicesolutionsgroup.com"
DEV = "developer@alicesolutionsgroup.com"


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, ["journey", *args], input=input)


@pytest.fixture
def db(cli_env: Any, seeded_settings: Settings) -> Any:
    cli_env(seeded_settings)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        yield conn


def one(db: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def audits(db: psycopg.Connection[Any], action: str) -> list[tuple[Any, ...]]:
    return db.execute(
        'SELECT actor, "resourceId", details FROM audit_log WHERE action = %s ORDER BY id',
        [action],
    ).fetchall()


def test_stages_table_and_json(db: Any) -> None:
    table = run("stages")
    assert table.exit_code == 0, table.output
    assert "Welcome" in table.output and "Mentorship" in table.output
    rows = json.loads(run("stages", "--json").output)["items"]
    assert [r["order"] for r in rows] == list(range(1, 9))
    assert rows[0]["name"] == "Welcome" and rows[0]["xpReward"] == 10


def test_stages_all_includes_inactive(db: Any) -> None:
    assert run("stage-deactivate", "Mentorship").exit_code == 0
    active = [r["name"] for r in json.loads(run("stages", "--json").output)["items"]]
    every = [r["name"] for r in json.loads(run("stages", "--json", "--all").output)["items"]]
    assert "Mentorship" not in active and "Mentorship" in every
    assert len(audits(db, "journey_stage.deactivate")) == 1


def test_show_by_email_username_or_id(db: Any) -> None:
    dev_id = one(db, 'SELECT id FROM "User" WHERE email = %s', [DEV])
    for ref in (DEV, "developer", dev_id):
        result = run("show", ref, "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["user"]["id"] == dev_id
        assert data["completed"] == 4 and data["total"] == 8
    table = run("show", "developer")
    assert "4/8 completed" in table.output and "First Project" in table.output


def test_start_complete_skip_by_stage_name_or_id(db: Any) -> None:
    admin_id = one(db, 'SELECT id FROM "User" WHERE email = %s', [ADMIN])
    xp = one(db, 'SELECT xp FROM "User" WHERE id = %s', [admin_id])
    done = run("complete", ADMIN, "Profile Setup", "--json")
    assert done.exit_code == 0, done.output
    body = json.loads(done.output)
    assert (body["status"], body["xpAwarded"], body["xp"]) == ("COMPLETED", 50, xp + 50)

    again = run("complete", "admin", "profile setup")
    assert again.exit_code == 0 and "nothing changed" in again.output
    assert one(db, 'SELECT xp FROM "User" WHERE id = %s', [admin_id]) == xp + 50

    stage_id = one(db, "SELECT id FROM \"JourneyStage\" WHERE name = 'Skills Assessment'")
    started = run("start", ADMIN, stage_id)
    assert started.exit_code == 0 and "IN_PROGRESS" in started.output
    skipped = run("skip", ADMIN, "First Project")
    assert skipped.exit_code == 0 and "SKIPPED" in skipped.output

    rows = audits(db, "journey.complete")
    assert len(rows) == 1
    assert rows[0][0] == f"cli:{getpass.getuser()}" and rows[0][1] == admin_id
    assert len(audits(db, "journey.start")) == 1 and len(audits(db, "journey.skip")) == 1


def test_completion_rule_and_unknowns_are_clear_errors(db: Any) -> None:
    refused = run("complete", ADMIN, "Mentorship")
    assert refused.exit_code == 1
    assert "cannot be completed yet" in refused.output
    missing_user = run("start", "nobody@example.com", "Welcome")
    assert missing_user.exit_code == 1 and "no user" in missing_user.output
    missing_stage = run("start", ADMIN, "No Such Stage")
    assert missing_stage.exit_code == 1 and "no journey stage" in missing_stage.output
    assert audits(db, "journey.start") == [] and audits(db, "journey.complete") == []


def test_stage_create_update_and_conflicts(db: Any) -> None:
    created = run("stage-create", "Graduation", "--xp", "400", "--description", "Done", "--json")
    assert created.exit_code == 0, created.output
    row = json.loads(created.output)
    assert (row["order"], row["xpReward"], row["description"]) == (9, 400, "Done")

    dup = run("stage-create", "Welcome")
    assert dup.exit_code == 1 and "already exists" in dup.output
    bad = run("stage-create", "Negative", "--xp", "-1")
    assert bad.exit_code == 2

    updated = run("stage-update", "Graduation", "--name", "Graduation Day", "--xp", "450")
    assert updated.exit_code == 0, updated.output
    assert one(db, 'SELECT "xpReward" FROM "JourneyStage" WHERE name = \'Graduation Day\'') == 450
    taken = run("stage-update", "Graduation Day", "--order", "1")
    assert taken.exit_code == 1 and "order" in taken.output
    nothing = run("stage-update", "Graduation Day")
    assert nothing.exit_code == 2
    assert len(audits(db, "journey_stage.create")) == 1
    assert len(audits(db, "journey_stage.update")) == 1


def test_stage_delete_asks_dry_runs_and_refuses_stages_with_history(db: Any) -> None:
    run("stage-create", "Temporary")
    dry = run("stage-delete", "Temporary", "--dry-run")
    assert dry.exit_code == 0 and "would delete" in dry.output
    no = run("stage-delete", "Temporary", input="n\n")
    assert no.exit_code == 1
    assert one(db, "SELECT count(*) FROM \"JourneyStage\" WHERE name = 'Temporary'") == 1
    yes = run("stage-delete", "Temporary", "--yes")
    assert yes.exit_code == 0, yes.output
    assert one(db, "SELECT count(*) FROM \"JourneyStage\" WHERE name = 'Temporary'") == 0
    used = run("stage-delete", "Welcome", "--yes")
    assert used.exit_code == 1 and "deactivate" in used.output
    assert "cannot delete" in run("stage-delete", "Welcome", "--dry-run").output
    assert len(audits(db, "journey_stage.delete")) == 1


def test_reorder_swaps_two_stages(db: Any) -> None:
    names = [r["name"] for r in json.loads(run("stages", "--json").output)["items"]]
    names[0], names[1] = names[1], names[0]
    result = run("reorder", *names, "--json")
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.output)] == names
    order = one(db, 'SELECT "order" FROM "JourneyStage" WHERE name = \'Welcome\'')
    assert order == 2
    partial = run("reorder", "Welcome")
    assert partial.exit_code == 1 and "every active stage" in partial.output
    assert len(audits(db, "journey_stage.reorder")) == 1
