"""`smartstart users create/update` normalise emails (issue 7, item 11)."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from smartstart.cli.main import app
from smartstart.config import Settings

runner = CliRunner()
PW = "a perfectly fine passphrase"


@pytest.fixture
def db(cli_env: Any, seeded_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SMARTSTART_BCRYPT_ROUNDS", "4")
    cli_env(seeded_settings)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        yield conn


def create(email: str, username: str) -> Any:
    return runner.invoke(
        app,
        ["users", "create", "--email", email, "--username", username, "--password", PW, "--json"],
    )


def test_the_cli_stores_nfc_and_refuses_invisible_characters(db: psycopg.Connection[Any]) -> None:
    nfd = unicodedata.normalize("NFD", "zoë@example.com")
    made = create(nfd, "zoe")
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["email"] == unicodedata.normalize("NFC", nfd)
    assert create(unicodedata.normalize("NFC", nfd), "zoe2").exit_code != 0
    hidden = create("zo\u200be@example.com", "zoe3")
    assert hidden.exit_code != 0
    assert "invisible" in hidden.output and len(hidden.output.strip().splitlines()) == 1
    renamed = runner.invoke(app, ["users", "update", "zoe", "--email", "zoe\u200c@example.com"])
    assert renamed.exit_code != 0
    count = db.execute("""SELECT count(*) FROM "User" WHERE username LIKE 'zoe%'""").fetchone()
    assert count == (1,)
