"""`smartstart db backup` against bare `pg_dump -Fc` on a database of 100,000 demo users."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.cluster import DB_NAME, throwaway_cluster
from bench.cluster import server_cpu as _server_cpu
from smartstart.db import demo, seed
from smartstart.pg import backup as pgb

USERS = int(os.environ.get("BENCH_BACKUP_USERS", "100000"))
RUNS = int(os.environ.get("BENCH_BACKUP_RUNS", "5"))
TARGET_RATIO = 1.15
SMARTSTART = Path(sys.executable).with_name("smartstart")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(args: list[str], env: dict[str, str], cluster: Any) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of the client(s) and the server together."""
    cpu = _children_cpu() + _server_cpu(cluster)
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    time.sleep(0.2)  # let the postmaster reap the backend
    return wall, _children_cpu() + _server_cpu(cluster) - cpu


def main() -> int:
    """Alternate the two, RUNS times each, on the same data; 0 when the target was met."""
    with throwaway_cluster() as db:
        home, cluster, settings = db.home, db.cluster, db.settings
        out = home / "out"
        out.mkdir()
        with psycopg.connect(settings.url_for(), autocommit=True) as conn:
            seed.seed(conn, settings)
            demo.demo_users(conn, USERS, seed=1)
            conn.execute("VACUUM ANALYZE")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTSTART_", "PG"))}
        cli_env = {
            **env,
            "SMARTSTART_HOME": str(home),
            "SMARTSTART_PG_PORT": str(cluster.port),
            "SMARTSTART_DB_NAME": DB_NAME,
            "SMARTSTART_ENV": "test",
        }
        bare = [str(cluster.bin_dir / "pg_dump"), "-Fc", "-d", settings.url_for()]
        tools = pgb.client_tools(cluster.bin_dir)
        load_before = os.getloadavg()
        cli, raw, inproc, startup = [], [], [], []
        cpu: dict[str, list[float]] = {"raw": [], "cli": [], "fn": []}
        empty = out / "empty"
        empty.mkdir()
        for i in range(RUNS):
            wall, used = _timed([*bare, "-f", str(out / f"bare{i}.dump")], env, cluster)
            raw.append(wall)
            cpu["raw"].append(used)
            cmd = [str(SMARTSTART), "db", "backup", "-o", str(out / f"cli{i}.dump")]
            wall, used = _timed(cmd, cli_env, cluster)
            cli.append(wall)
            cpu["cli"].append(used)
            # The CLI's fixed start-up: a command that does no database work.
            cmd = [str(SMARTSTART), "db", "backups", "--dir", str(empty)]
            startup.append(_timed(cmd, cli_env, cluster)[0])
            before = time.process_time() + _children_cpu() + _server_cpu(cluster)
            started = time.perf_counter()
            pgb.backup(settings.url_for(), out / f"fn{i}.dump", tools, who="bench")
            inproc.append(time.perf_counter() - started)
            time.sleep(0.2)
            cpu["fn"].append(time.process_time() + _children_cpu() + _server_cpu(cluster) - before)
        load_after = os.getloadavg()
        size_bare = (out / "bare0.dump").stat().st_size
        size_cli = (out / "cli0.dump").stat().st_size
    m_raw, m_cli, m_fn = (statistics.median(x) for x in (raw, cli, inproc))
    ratio = m_cli / m_raw
    ok = ratio <= TARGET_RATIO

    def span(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f})"

    def cpu_of(key: str) -> str:
        return f"CPU {statistics.median(cpu[key]):.2f} s"

    print(
        f"backup of {USERS} demo users, {RUNS} runs each, alternated:\n"
        f"  pg_dump -Fc              {span(raw)}  {cpu_of('raw')}  {size_bare / 2**20:.1f} MiB\n"
        f"  smartstart db backup     {span(cli)}  {cpu_of('cli')}  {size_cli / 2**20:.1f} MiB\n"
        f"  pg.backup.backup()       {span(inproc)}  {cpu_of('fn')}  (in process)\n"
        f"  CLI start-up (db backups --dir <empty>) {span(startup)}\n"
        f"  ratio db backup / pg_dump -Fc: {ratio:.2f} wall, "
        f"{statistics.median(cpu['cli']) / statistics.median(cpu['raw']):.2f} CPU; "
        f"in process {m_fn / m_raw:.2f} wall, "
        f"{statistics.median(cpu['fn']) / statistics.median(cpu['raw']):.2f} CPU — "
        f"target <= {TARGET_RATIO}: {'met' if ok else 'MISSED'}\n"
        f"  load average {load_before[0]:.1f}/{load_before[1]:.1f} before, "
        f"{load_after[0]:.1f}/{load_after[1]:.1f} after ({os.cpu_count()} cores)"
    )
    return 0 if ok else 1
