"""Plain `alembic`, run from the repository against a real database, reads our settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from smartstart.config import Settings
from smartstart.db import migrate
from tests.conftest import process_env

ROOT = Path(__file__).resolve().parents[1]


def alembic(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("alembic")), *args],
        cwd=ROOT,
        env=process_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_alembic_current_check_and_offline_upgrade(db_settings: Settings) -> None:
    head = migrate.head_revision()
    assert head

    current = alembic(db_settings, "current")
    assert current.returncode == 0, current.stderr
    assert f"{head} (head)" in current.stdout

    check = alembic(db_settings, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr

    offline = alembic(db_settings, "upgrade", "head", "--sql")
    assert offline.returncode == 0, offline.stderr
    assert 'CREATE TABLE "User"' in offline.stdout
    assert f"'{head}'" in offline.stdout  # the alembic_version row it would write


def test_alembic_reaches_the_database_the_settings_name(
    db_settings: Settings, tmp_path: Path
) -> None:
    # A port nothing listens on: alembic fails to connect, so it did use our settings.
    # (A home of its own: the test cluster's home records its real port, and a conflicting
    # SMARTSTART_PG_PORT there is refused before any connection is tried.)
    wrong = db_settings.model_copy(update={"pg_port": 1, "home": tmp_path})
    result = alembic(wrong, "current")
    assert result.returncode != 0
    assert "port 1" in result.stderr
