"""`smartstart db inspect` and `db diff` against a real database."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from typer.testing import CliRunner

from smartstart.cli.main import app
from smartstart.config import Settings
from smartstart.db import migrate

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def execute(settings: Settings, *statements: str) -> None:
    with psycopg.connect(settings.url_for(), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_inspect_prints_the_live_schema(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    result = run("db", "inspect", "--json")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    tables = {t["name"]: t for t in schema["tables"]}
    assert {"User", "Role", "UserRole", "audit_log", "alembic_version"} <= set(tables)
    email = next(c for c in tables["User"]["columns"] if c["name"] == "email")
    assert email["nullable"] is False and email["type"] == "text"
    indexes = {i["name"]: i for i in schema["indexes"]}
    assert indexes["User_email_lower_key"]["unique"]
    constraints = {(k["table"], k["name"]): k for k in schema["constraints"]}
    assert constraints[("User", "User_password_bcrypt_check")]["type"] == "check"
    assert any(k["type"] == "foreign key" for k in schema["constraints"])
    triggers = {t["name"]: t for t in schema["triggers"]}
    assert (
        triggers["User_derive"]["enabled"]
        and "BEFORE INSERT" in triggers["User_derive"]["definition"]
    )
    functions = {f["name"]: f for f in schema["functions"]}
    assert functions["smartstart_user_derive()"]["search_path"]
    # pg_trgm's own functions are the extension's, listed once as it.
    assert not any(name.startswith("similarity") for name in functions)
    assert {"pg_trgm", "pg_stat_statements"} <= {e["name"] for e in schema["extensions"]}

    text = run("db", "inspect")
    assert text.exit_code == 0
    assert "table User" in text.output and "trigger User_derive" in text.output
    assert "smartstart_user_derive() returns trigger" in text.output


def test_diff_is_clean_at_head(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    result = run("db", "diff", "--sql")
    assert result.exit_code == 0, result.output
    assert "ALTER" not in result.output and "DROP" not in result.output
    assert run("db", "diff").output.strip() == "no differences between the database and the models"


def test_diff_marks_each_side_and_its_sql_makes_the_database_match(
    cli_env: Any, db_settings: Settings
) -> None:
    cli_env(db_settings)
    execute(
        db_settings,
        # The guide's Data Migration statements: only in the database.
        'ALTER TABLE "User" ADD COLUMN "newField" VARCHAR(255)',
        'CREATE INDEX idx_user_email ON "User"(email)',
        # Gone from the database: only in the models.
        'DROP INDEX "User_email_idx"',
        'ALTER TABLE "User" DROP CONSTRAINT "User_xp_check"',
        # Different on both sides.
        'ALTER TABLE "User" ALTER COLUMN reputation TYPE bigint',
        'ALTER TABLE "User" DISABLE TRIGGER "User_derive"',
    )
    listed = run("db", "diff")
    assert listed.exit_code == 1
    lines = listed.output.splitlines()
    assert "only in the database: column User.newField" in lines
    assert "only in the database: index idx_user_email on User" in lines
    assert "only in the models: index User_email_idx on User" in lines
    assert "only in the models: check constraint User_xp_check on User" in lines
    assert any(line.startswith("differs: column User.reputation type") for line in lines)
    assert any(line.startswith("disabled trigger: User_derive on User") for line in lines)

    as_json = json.loads(run("db", "diff", "--json").output)
    sides = {d["description"]: d["side"] for d in as_json["differences"]}
    assert sides["only in the database: column User.newField"] == "database"
    assert sides["only in the models: index User_email_idx on User"] == "models"

    script = run("db", "diff", "--sql")
    assert script.exit_code == 1
    assert 'ALTER TABLE "User" DROP COLUMN "newField";' in script.output
    assert 'CREATE INDEX "User_email_idx" ON "User" (email);' in script.output
    execute(db_settings, script.output)
    after = run("db", "check")
    assert after.exit_code == 0, after.output


def test_diff_names_a_missing_trigger_without_inventing_its_sql(
    cli_env: Any, db_settings: Settings
) -> None:
    cli_env(db_settings)
    execute(db_settings, 'DROP TRIGGER "User_derive" ON "User"')
    result = run("db", "diff", "--sql")
    assert result.exit_code == 1
    assert "-- only in the models: trigger User_derive on User" in result.output
    assert "its definition is in the migrations" in result.output


def test_diff_behind_head_says_migrate(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    migrate.downgrade(db_settings.sqlalchemy_url(), "-1")
    result = run("db", "diff")
    assert result.exit_code == 1
    assert "smartstart db migrate" in result.output


def test_diff_and_inspect_refuse_bad_options(cli_env: Any, db_settings: Settings) -> None:
    cli_env(db_settings)
    assert run("db", "diff", "--sqll").exit_code == 2
    assert run("db", "inspect", "--table", "x" * 1_000_000).exit_code == 2
