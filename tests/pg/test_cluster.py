"""The embedded cluster's lifecycle, against real PostgreSQL binaries."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from smartstart.errors import ClusterError
from smartstart.pg.cluster import Cluster, find_bin_dir, read_pid_file
from tests.conftest import FAST_CONF, free_port, make_home


@pytest.fixture(scope="module")
def _lifecycle_cluster() -> Iterator[Cluster]:
    home = make_home()
    cluster = Cluster(home, port=free_port(), server_conf=FAST_CONF)
    assert cluster.init() is True
    yield cluster
    cluster.destroy()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def stopped_cluster(_lifecycle_cluster: Cluster) -> Cluster:
    """An initialised cluster of this module's own, stopped at the start of the test."""
    _lifecycle_cluster.stop(mode="immediate")
    return _lifecycle_cluster


def test_init_creates_a_checksummed_cluster_and_is_idempotent(stopped_cluster: Cluster) -> None:
    assert stopped_cluster.initialized
    assert stopped_cluster.init() is False
    owner = pwd.getpwuid(stopped_cluster.data_dir.stat().st_uid).pw_name
    if os.geteuid() == 0:
        assert owner == "postgres"
    assert stopped_cluster.data_dir.stat().st_mode & 0o777 == 0o700
    conf = (stopped_cluster.data_dir / "postgresql.conf").read_text()
    assert "shared_preload_libraries = 'pg_stat_statements'" in conf
    assert "scram-sha-256" in (stopped_cluster.data_dir / "pg_hba.conf").read_text()


def test_start_status_stop_are_idempotent(stopped_cluster: Cluster) -> None:
    assert stopped_cluster.status().state == "stopped"
    assert stopped_cluster.start() is True
    assert stopped_cluster.start() is False
    st = stopped_cluster.status()
    assert st.running and st.pid and st.port == stopped_cluster.port
    assert st.version and st.version.startswith(("13", "14", "15", "16", "17", "18"))
    assert st.uptime_seconds is not None and st.uptime_seconds < 60
    with stopped_cluster.connect() as conn:
        assert conn.execute("SHOW data_checksums").fetchone() == ("on",)
        assert conn.execute("SHOW listen_addresses").fetchone() == (stopped_cluster.host,)
    assert stopped_cluster.stop() is True
    assert stopped_cluster.stop() is False
    assert stopped_cluster.status().state == "stopped"


def test_stop_of_a_server_exiting_by_itself_is_no_error(
    stopped_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failed PITR replay: the side server exits on its own just as it is stopped, and
    # pg_ctl's "Is server running?" replaced the real error (seen under load).
    from smartstart.pg import cluster as cluster_module

    stopped_cluster.start()
    pid_file = stopped_cluster.data_dir / "postmaster.pid"
    saved = pid_file.read_bytes()
    stopped_cluster.stop(mode="immediate")
    pid_file.write_bytes(saved)  # as if read just before the server exited
    answers = iter([True])  # alive at stop()'s check, gone when pg_ctl looks
    monkeypatch.setattr(cluster_module, "_is_postgres_process", lambda pid: next(answers, False))
    try:
        assert stopped_cluster.stop() is True
    finally:
        pid_file.unlink(missing_ok=True)
    assert stopped_cluster.status().state == "stopped"


def test_restart_changes_the_server_process(stopped_cluster: Cluster) -> None:
    stopped_cluster.start()
    first = stopped_cluster.status().pid
    stopped_cluster.restart()
    st = stopped_cluster.status()
    assert st.running and st.pid != first


def test_start_recovers_from_a_killed_postmaster(stopped_cluster: Cluster) -> None:
    stopped_cluster.start()
    pid = stopped_cluster.status().pid
    stopped_cluster.kill()
    deadline = time.monotonic() + 5
    while stopped_cluster.status().running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stopped_cluster.status().state == "stopped"
    assert read_pid_file(stopped_cluster.data_dir) is not None  # the stale pid file is still there
    assert stopped_cluster.start() is True
    st = stopped_cluster.status()
    assert st.running and st.pid != pid
    with stopped_cluster.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_port_taken_by_another_program_names_port_and_setting(stopped_cluster: Cluster) -> None:
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((stopped_cluster.host, stopped_cluster.port))
        blocker.listen()
        with pytest.raises(ClusterError) as exc:
            stopped_cluster.start()
    message = str(exc.value)
    assert str(stopped_cluster.port) in message and "SMARTSTART_PG_PORT" in message
    assert stopped_cluster.status().state == "stopped"


def test_bootstrap_creates_role_and_database_with_password(stopped_cluster: Cluster) -> None:
    stopped_cluster.start()
    stopped_cluster.bootstrap(db_name="app_db", db_user="app_user", db_password="s3cret pass'word")
    stopped_cluster.bootstrap(db_name="app_db", db_user="app_user", db_password="s3cret pass'word")
    url = f"postgresql://app_user:s3cret%20pass%27word@127.0.0.1:{stopped_cluster.port}/app_db"
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT rolsuper, current_database() FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert row == (False, "app_db")
        exts = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
        assert "pg_stat_statements" in exts
        # Byte order for text (faster sorts and index builds), C.UTF-8's letters (the
        # search key's separator letters are letters to pg_trgm; "É" lower-cases).
        locale = conn.execute(
            "SELECT datcollate, datctype, lower('ÉÞ'), 'b' < 'É' FROM pg_database"
            " WHERE datname = current_database()"
        ).fetchone()
        assert locale == ("C", "C.UTF-8", "éþ", True)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.replace("s3cret", "wrong")).close()


def test_missing_binaries_give_an_install_hint(tmp_path: Path) -> None:
    with pytest.raises(ClusterError) as exc:
        find_bin_dir(tmp_path)
    assert "SMARTSTART_PG_BIN" in str(exc.value) and "initdb" in str(exc.value)


def test_missing_binaries_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("smartstart.pg.cluster.Path.glob", lambda self, pattern: iter(()))
    with pytest.raises(ClusterError) as exc:
        find_bin_dir(None)
    assert "apt-get install postgresql" in str(exc.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root to chown")
def test_data_directory_owned_by_someone_else_is_refused(stopped_cluster: Cluster) -> None:
    os.chown(stopped_cluster.data_dir, 0, 0)
    try:
        with pytest.raises(ClusterError, match="owned by 'root'"):
            stopped_cluster.start()
    finally:
        pg = pwd.getpwnam("postgres")
        os.chown(stopped_cluster.data_dir, pg.pw_uid, pg.pw_gid)
    assert stopped_cluster.status().state == "stopped"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the data directory to another user")
def test_unreachable_home_is_explained(tmp_path: Path) -> None:
    # pytest's tmp_path is 0700 root: the postgres user cannot enter it.
    cluster = Cluster(tmp_path / "home", port=free_port())
    with pytest.raises(ClusterError, match="cannot enter"):
        cluster.init()
    assert not (tmp_path / "home" / "pgdata" / "PG_VERSION").exists()


def test_start_opens_the_socket_to_the_platform_user_on_an_older_cluster(
    stopped_cluster: Cluster,
) -> None:
    from smartstart.pg.cluster import _HBA_BEFORE_SOCKET, HBA

    hba = stopped_cluster.data_dir / "pg_hba.conf"
    mode, owner = hba.stat().st_mode, hba.stat().st_uid
    hba.write_text(_HBA_BEFORE_SOCKET)
    stopped_cluster.start()
    assert hba.read_text() == HBA
    assert (hba.stat().st_mode, hba.stat().st_uid) == (mode, owner)
    # An operator's own rules are left alone.
    stopped_cluster.stop()
    edited = HBA + "host all all 10.0.0.0/8 scram-sha-256\n"
    hba.write_text(edited)
    stopped_cluster.start()
    assert hba.read_text() == edited
