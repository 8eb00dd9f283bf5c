"""demo_users(100_000) on a throwaway embedded cluster with durable (default) server settings."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import psycopg

from smartstart.config import Settings
from smartstart.db import demo, migrate, seed
from smartstart.pg.cluster import Cluster, read_pid_file

USERS = int(os.environ.get("BENCH_SEED_USERS", "100000"))
TARGET_SECONDS = 30.0
DB_USER = "smartstart_user"
DB_PASSWORD = "smartstart_password"
DB_NAME = "smartstart_bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_cpu(cluster: Cluster) -> float:
    """CPU seconds used so far by the server: the postmaster, its live and its exited children."""
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
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    """Time demo_users(USERS) after seed; 0 when it met the target."""
    # mkdtemp is 0700; the server's unprivileged OS user must be able to enter it.
    home = Path(tempfile.mkdtemp(prefix="smartstart-bench-"))
    home.chmod(0o711)
    # No server_conf override: fsync and synchronous_commit stay on, as in production.
    cluster = Cluster(home, port=_free_port())
    try:
        cluster.init()
        cluster.start()
        cluster.bootstrap(db_name=DB_NAME, db_user=DB_USER, db_password=DB_PASSWORD)
        settings = Settings(
            _env_file=None,
            home=home,
            pg_port=cluster.port,
            db_name=DB_NAME,
            db_user=DB_USER,
            db_password=DB_PASSWORD,
            admin_password="bench admin password",
            env="test",
        )
        migrate.upgrade(settings.sqlalchemy_url())
        load_before = os.getloadavg()[0]
        with psycopg.connect(settings.url_for(), autocommit=True) as conn:
            seed.seed(conn, settings)
            cpu_before, client_before = _server_cpu(cluster), time.process_time()
            started = time.perf_counter()
            created = demo.demo_users(conn, USERS, seed=1)
            elapsed = time.perf_counter() - started
            client_cpu = time.process_time() - client_before
            users, states = conn.execute(
                'SELECT (SELECT count(*) FROM "User"), (SELECT count(*) FROM "UserJourneyState")'
            ).fetchone() or (0, 0)
        time.sleep(0.2)  # let the postmaster reap the companion backend
        server_cpu = _server_cpu(cluster) - cpu_before
        load_after = os.getloadavg()[0]
    finally:
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)
    ok = elapsed <= TARGET_SECONDS
    print(
        f"demo.demo_users({USERS}): {created} users, {states} journey states in "
        f"{elapsed:.1f} s ({created / elapsed:,.0f} users/s; {users} users in total) — "
        f"target <= {TARGET_SECONDS:.0f} s: {'met' if ok else 'MISSED'}\n"
        f"  CPU: server {server_cpu:.1f} s, client {client_cpu:.1f} s; "
        f"load average {load_before:.1f} before, {load_after:.1f} after ({os.cpu_count()} cores)"
    )
    return 0 if ok else 1
