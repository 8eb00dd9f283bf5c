"""What the benchmarks share: a throwaway embedded cluster on PostgreSQL's durable defaults,
the Settings that reach it, a free port, and the CPU its server has used."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_USER = "smartstart_user"
DB_PASSWORD = "smartstart_password"  # noqa: S105 - the guide's default, throwaway cluster
DB_NAME = "smartstart_bench"
ADMIN_PASSWORD = "bench admin password"  # noqa: S105 - throwaway cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_settings(home: Path, port: int) -> Any:
    """Settings (smartstart.config.Settings) for the benchmark database of the cluster at home."""
    from smartstart.config import Settings

    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=home,
        pg_port=port,
        db_name=DB_NAME,
        db_user=DB_USER,
        db_password=DB_PASSWORD,
        admin_password=ADMIN_PASSWORD,
        env="test",
    )


def new_home(prefix: str) -> Path:
    """A temp directory the server's unprivileged OS user can enter (mkdtemp makes 0700)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    home.chmod(0o711)
    return home


@dataclass
class Throwaway:
    home: Path
    cluster: Any  # smartstart.pg.cluster.Cluster
    settings: Any  # smartstart.config.Settings


@contextmanager
def throwaway_cluster(
    prefix: str = "smartstart-bench-", *, archive: bool = False
) -> Iterator[Throwaway]:
    """A started cluster with the benchmark database migrated to head; deleted on exit.

    No server_conf override: fsync and synchronous_commit stay on, as in production.
    archive: WAL archiving into home/wal, as `smartstart up` sets it (off: initdb's default).
    """
    from smartstart.db import migrate
    from smartstart.pg.cluster import Cluster

    home = new_home(prefix)
    cluster = Cluster(home, port=free_port(), archive_dir=home / "wal" if archive else None)
    try:
        cluster.init()
        cluster.start()
        cluster.bootstrap(db_name=DB_NAME, db_user=DB_USER, db_password=DB_PASSWORD)
        settings = bench_settings(home, cluster.port)
        migrate.upgrade(settings.sqlalchemy_url())
        yield Throwaway(home, cluster, settings)
    finally:
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)


def server_cpu(cluster: Any) -> float:
    """CPU seconds used so far by the server: the postmaster, its live and its exited children."""
    from smartstart.pg.cluster import read_pid_file

    pidfile = read_pid_file(cluster.data_dir)
    if pidfile is None or not Path("/proc").is_dir():
        return 0.0
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        if pid == pidfile.pid:
            ticks += sum(int(f) for f in fields[11:15])  # own + reaped children
        elif int(fields[1]) == pidfile.pid:
            # and what its own reaped children used (the archiver's archive_command runs)
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def archiver_cpu(cluster: Any) -> float:
    """CPU seconds used so far by the server's archiver and what it ran (archive_command)."""
    from smartstart.pg.cluster import read_pid_file

    pidfile = read_pid_file(cluster.data_dir)
    if pidfile is None or not Path("/proc").is_dir():
        return 0.0
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or not (entry / "cmdline").read_bytes().startswith(
                b"postgres: archiver"
            ):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pidfile.pid:
            return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return 0.0
