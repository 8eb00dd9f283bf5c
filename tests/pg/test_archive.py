"""How the embedded cluster archives its WAL: basic_archive when the server has it (PostgreSQL
15+), walcopy.py as the archive_command otherwise, and failures that never go unnoticed."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smartstart import health
from smartstart.health import HealthConfig
from smartstart.pg import archive
from smartstart.pg.cluster import REQUIRED_BINARIES, Cluster, find_bin_dir
from tests.conftest import FAST_CONF, free_port, make_home
from tests.pg.test_pitr import _until


@pytest.fixture
def home() -> Iterator[Path]:
    path = make_home("smartstart-archive-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _without_library(home: Path) -> Path:
    """A bin directory of the same server whose installation has no basic_archive: the three
    binaries linked, no pg_config, no lib/ beside it."""
    real = find_bin_dir()
    bin_dir = home / "pgbin" / "bin"
    bin_dir.mkdir(parents=True)
    for name in REQUIRED_BINARIES:
        (bin_dir / name).symlink_to(real / name)
    home.joinpath("pgbin").chmod(0o755)
    bin_dir.chmod(0o755)
    return bin_dir


def _switch(cluster: Cluster) -> str:
    """Write something, close the segment holding it: its name."""
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS w (a int)")
        conn.execute("INSERT INTO w SELECT generate_series(1, 100)")
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        return str(row[0])


def _archived(cluster: Cluster, segment: str) -> bool:
    with cluster.connect() as conn:
        row = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
        return bool(row and row[0] and row[0] >= segment)


def _show(cluster: Cluster, name: str) -> str:
    with cluster.connect() as conn:
        row = conn.execute(f"SHOW {name}").fetchone()
        assert row is not None
        return str(row[0])


def test_this_server_has_basic_archive() -> None:
    """The suite's PostgreSQL (15, with contrib): the library path is the one tested here."""
    found = archive.library_path(find_bin_dir())
    assert found is not None and found.name.startswith("basic_archive.")


def test_the_library_is_found_where_an_installation_keeps_it(tmp_path: Path) -> None:
    for lib in ("lib", "lib/postgresql"):
        install = tmp_path / lib.replace("/", "_")
        (install / "bin").mkdir(parents=True)
        (install / lib).mkdir(parents=True, exist_ok=True)
        assert archive.library_path(install / "bin") is None
        (install / lib / "basic_archive.so").write_bytes(b"")
        assert archive.library_path(install / "bin") == install / lib / "basic_archive.so"


def test_only_one_way_to_archive_is_ever_set(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    library = archive.library_settings(wal)
    assert library["archive_library"] == "'basic_archive'" and library["archive_command"] == "''"
    assert library["basic_archive.archive_directory"] == f"'{wal}'"
    command = archive.command_settings("/usr/bin/python3", tmp_path / "walcopy.py", wal, 15)
    assert command["archive_library"] == "''" and "walcopy.py" in command["archive_command"]
    # PostgreSQL 14 does not know archive_library: naming it would stop the server starting.
    assert "archive_library" not in archive.command_settings("python3", wal, wal, 14)
    assert archive.no_library(14) == {} and archive.no_library(16) == {"archive_library": "''"}


def test_an_old_server_or_an_overlong_directory_keeps_the_archive_command(home: Path) -> None:
    cluster = Cluster(home, port=free_port())
    cluster.data_dir.mkdir()
    version = cluster.data_dir / "PG_VERSION"
    version.write_text("15\n")
    assert archive.method(cluster, home / "wal") == archive.LIBRARY
    assert archive.method(cluster, home / ("w" * 1000)) == archive.COMMAND
    version.write_text("14\n")
    assert archive.method(cluster, home / "wal") == archive.COMMAND


def test_a_walcopy_cluster_switches_to_basic_archive_at_its_next_start(home: Path) -> None:
    wal = home / "wal"
    old = Cluster(
        home,
        port=free_port(),
        server_conf=FAST_CONF,
        bin_dir=_without_library(home),
        archive_dir=wal,
    )
    try:
        old.init()
        old.start()
        conf = (old.data_dir / archive.CONF_NAME).read_text()
        assert "walcopy.py" in conf and "archive_library = ''" in conf
        assert archive.status(old) == archive.Status("on", "archive_command")
        assert _show(old, "archive_library") == ""
        first = _switch(old)
        _until(lambda: _archived(old, first))
        assert (wal / first).stat().st_size == 16 * 1024 * 1024
        old.stop()
        # What a crash of basic_archive can leave: cleared before the server starts.
        stale = wal / f"archtemp.{first}.12345.1700000000000"
        stale.write_bytes(b"half")

        new = Cluster(home, port=old.port, server_conf=FAST_CONF, archive_dir=wal)
        assert archive.status(new) == archive.Status("on at the next start", "archive_command")
        new.start()
        conf = (new.data_dir / archive.CONF_NAME).read_text()
        assert "archive_library = 'basic_archive'" in conf and "walcopy" not in conf
        assert _show(new, "archive_library") == "basic_archive"
        assert _show(new, "archive_command") == ""  # only one of the two, ever
        assert _show(new, "basic_archive.archive_directory") == str(wal)
        assert archive.status(new) == archive.Status("on", "basic_archive")
        assert not stale.exists()
        second = _switch(new)
        _until(lambda: _archived(new, second))
        assert (wal / second).read_bytes() == (new.data_dir / "pg_wal" / second).read_bytes()
        assert not list(wal.glob("archtemp*"))
    finally:
        old.destroy()


def _failing(cluster: Cluster) -> Any:
    with cluster.connect() as conn:
        return archive.wal_archiving(conn)


def test_basic_archive_failures_are_loud_and_lose_nothing(home: Path) -> None:
    wal = home / "wal"
    cluster = Cluster(home, port=free_port(), server_conf=FAST_CONF, archive_dir=wal)
    check = health.select(["wal_archiving"])[0]
    try:
        cluster.init()
        cluster.start()
        assert archive.status(cluster).via == "basic_archive"
        assert _failing(cluster).metric == 0
        away = home / "wal.away"
        mode = wal.stat().st_mode & 0o777
        for break_it, mend in (
            (lambda: wal.rename(away), lambda: away.rename(wal)),  # the directory is gone
            (lambda: wal.chmod(0o500), lambda: wal.chmod(mode)),  # the server may not write
        ):
            break_it()
            try:
                segment = _switch(cluster)
                _until(lambda: bool(_failing(cluster).details[0]["failing"]))
                measured = _failing(cluster)
                state, advice = health.judge(check, measured, HealthConfig().for_check(check))
                assert state is health.State.WARN and measured.metric is not None
                assert measured.details[0]["failed_count"] > 0
                assert measured.details[0]["last_failed_wal"] == segment
                assert measured.details[0]["via"] == "basic_archive"
                assert f"WAL archiving failed for {segment}" in (advice or "")
                assert archive.status(cluster).state == "failing"
                # Nothing lost: the segment waits in pg_wal, marked ready, until archived.
                kept = (cluster.data_dir / "pg_wal" / segment).read_bytes()
                ready = cluster.data_dir / "pg_wal" / "archive_status" / f"{segment}.ready"
                assert ready.exists()
            finally:
                mend()
            later = _switch(cluster)  # a new segment wakes the archiver up at once
            _until(functools.partial(_archived, cluster, later))
            assert (wal / segment).read_bytes() == kept
            assert _failing(cluster).metric == 0 and archive.status(cluster).state == "on"
        assert not list(wal.glob("archtemp*"))
    finally:
        cluster.destroy()
