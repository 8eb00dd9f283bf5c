"""The guide's backup and restore (plain pg_dump, then psql < backup.sql) round-trips.

docs/guide-sql.md says what it needs: an EMPTY database (`smartstart db reset --empty`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from smartstart.config import Settings
from smartstart.pg.cluster import Cluster
from tests.conftest import DB_USER, drop_db, settings_for

GUIDE_SQL = Path(__file__).parents[2] / "docs" / "guide-sql.md"


def users(url: str) -> set[tuple[str, str, int]]:
    with psycopg.connect(url) as c:
        return set(c.execute('SELECT email, role, xp FROM "User"').fetchall())


@pytest.fixture
def backup(pg_cluster: Cluster, seeded_settings: Settings, tmp_path: Path) -> Path:
    """The guide's `pg_dump -U smartstart_user smartstart_db > backup.sql` of a seeded db."""
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
        c.execute(
            'UPDATE "UserJourneyState" SET status = \'COMPLETED\' WHERE "userId" ='
            ' (SELECT id FROM "User" ORDER BY email LIMIT 1)'
        )
    path = tmp_path / "backup.sql"
    with path.open("w") as out:
        subprocess.run(
            [str(pg_cluster.bin_dir / "pg_dump"), "-d", seeded_settings.url_for()],
            stdout=out,
            check=True,
            timeout=120,
        )
    return path


def restore(cluster: Cluster, url: str, backup: Path) -> subprocess.CompletedProcess[str]:
    with backup.open() as src:
        return subprocess.run(
            [str(cluster.bin_dir / "psql"), "-X", "-q", "-d", url],
            stdin=src,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.mark.parametrize("owner", ["superuser", "platform user"])
def test_plain_dump_restores_into_an_empty_database(
    pg_cluster: Cluster, seeded_settings: Settings, backup: Path, owner: str
) -> None:
    """(a) by a superuser; (b) as the guide does: psql as smartstart_user, from stdin,
    into an empty database it owns (what `smartstart db reset --empty` leaves)."""
    name = f"restored_{owner.split()[0]}"
    with pg_cluster.connect() as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        c.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(DB_USER)
            )
        )
    target = settings_for(pg_cluster, name)
    try:
        url = _superuser_url(pg_cluster, name) if owner == "superuser" else target.url_for()
        proc = restore(pg_cluster, url, backup)
        errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
        # Only the extension that the embedded server already created may complain.
        assert all("extension" in line for line in errors), proc.stderr
        assert users(target.url_for()) == users(seeded_settings.url_for())
        with psycopg.connect(target.url_for()) as c:
            # The invariants came back too, and the XP was not paid twice.
            assert c.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").fetchone()
            row = c.execute(
                "SELECT tgname FROM pg_trigger WHERE tgname = 'UserRole_keep_super_admin'"
            ).fetchone()
            assert row is not None
    finally:
        drop_db(pg_cluster, name)


def _superuser_url(cluster: Cluster, name: str) -> str:
    with cluster.connect(name) as c:
        info = c.info
        params = info.get_parameters()
        host = params.get("host", "")
        return f"host={host} port={info.port} dbname={name} user={info.user}"


def test_guide_sql_documents_the_restore(pg_cluster: Cluster) -> None:
    text = GUIDE_SQL.read_text()
    assert "smartstart db reset --empty" in text
    assert "psql" in text and "< backup" in text
