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


def _guide_env(cluster: Cluster) -> dict[str, str]:
    """Where the guide's `-U smartstart_user smartstart_db` reaches: host, port, password."""
    import os

    from tests.conftest import DB_PASSWORD

    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return env | {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGPASSWORD": DB_PASSWORD}


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "Z9"])
def test_the_guides_dump_and_restore_exit_0_with_on_error_stop(
    pg_cluster: Cluster,
    seeded_settings: Settings,
    cli_env: object,
    tmp_path: Path,
    compressed: bool,
) -> None:
    """Issue 8 item 8: the guide's exact commands, as smartstart_user, ON_ERROR_STOP=1,
    into the empty database `smartstart db reset --empty` makes."""
    from typer.testing import CliRunner

    from smartstart.cli.main import app

    name, env = seeded_settings.db_name, _guide_env(pg_cluster)
    before = users(seeded_settings.url_for())
    bin_dir = pg_cluster.bin_dir
    dump = tmp_path / ("backup.sql.gz" if compressed else "backup.sql")
    with dump.open("wb") as out:
        z = ["-Z", "9"] if compressed else []
        subprocess.run(
            [str(bin_dir / "pg_dump"), "-U", DB_USER, *z, name], stdout=out, env=env, check=True
        )
    cli_env(seeded_settings)  # type: ignore[operator]
    reset = CliRunner().invoke(app, ["db", "reset", "--empty", "--yes", "--no-backup"])
    assert reset.exit_code == 0, reset.output
    psql = [str(bin_dir / "psql"), "-v", "ON_ERROR_STOP=1", "-U", DB_USER, name]
    if compressed:  # gunzip -c backup.sql.gz | psql …
        gunzip = subprocess.Popen(["gunzip", "-c", str(dump)], stdout=subprocess.PIPE)
        proc = subprocess.run(psql, stdin=gunzip.stdout, env=env, capture_output=True, text=True)
        assert gunzip.wait() == 0
    else:  # psql … < backup.sql
        with dump.open() as src:
            proc = subprocess.run(psql, stdin=src, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" not in proc.stderr, proc.stderr
    assert users(seeded_settings.url_for()) == before
    with psycopg.connect(seeded_settings.url_for()) as c:
        assert c.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
        ).fetchone()


def test_pg_restore_of_a_custom_dump_as_the_owner_exits_0(
    pg_cluster: Cluster, seeded_settings: Settings, tmp_path: Path
) -> None:
    """pg_dump -Fc, then pg_restore as smartstart_user into a new database it owns."""
    env, bin_dir = _guide_env(pg_cluster), pg_cluster.bin_dir
    dump = tmp_path / "backup.dump"
    subprocess.run(
        [str(bin_dir / "pg_dump"), "-U", DB_USER, "-Fc", "-f", str(dump), seeded_settings.db_name],
        env=env,
        check=True,
    )
    target = f"{seeded_settings.db_name}_copy"
    with pg_cluster.connect() as c:
        c.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(target), sql.Identifier(DB_USER)
            )
        )
    try:
        proc = subprocess.run(
            [
                str(bin_dir / "pg_restore"),
                "--exit-on-error",
                "-U",
                DB_USER,
                "-d",
                target,
                str(dump),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        assert users(settings_for(pg_cluster, target).url_for()) == users(seeded_settings.url_for())
    finally:
        drop_db(pg_cluster, target)
