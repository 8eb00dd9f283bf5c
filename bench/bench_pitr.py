"""`smartstart db restore --to-time` against the bare work it cannot avoid: copying the base
backup and replaying the WAL to the same target (PostgreSQL alone, on a side port).

The database: demo users (BENCH_PITR_USERS, 100,000 by default) in a cluster that archives
its WAL, a base backup, then a day's writes (every user's XP raised, a fifth of them twice,
audit rows), the target time, and a write after it. With BENCH_PITR_DIR, a built cluster
directory instead (a copy of /work/cache/listings-1000000: never the cache itself), started
with archiving on; its base backup, WAL archive and kept data directories are removed after.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench.cluster import free_port as _free_port
from smartstart.config import Settings
from smartstart.db import demo
from smartstart.pg import archive, pitr
from smartstart.pg.basebackup import base_backup
from smartstart.pg.cluster import Cluster
from smartstart.services.database import ensure_database

USERS = int(os.environ.get("BENCH_PITR_USERS", "100000"))
RUNS = int(os.environ.get("BENCH_PITR_RUNS", "3"))
DIR = os.environ.get("BENCH_PITR_DIR")
# 1: every user written after the base backup; 10: every tenth (the 1M run: a tenth of the
# users is ~1.5 GB of WAL, all of them ~16 GB).
WRITES = int(os.environ.get("BENCH_PITR_WRITES", "1"))
TARGET_RATIO = 1.3
DB_NAME = "smartstart_bench"
SMARTSTART = Path(sys.executable).with_name("smartstart")


def _workload(settings: Settings, users: int) -> datetime:
    """WAL to replay after the base backup; returns the target (after it, before one more).

    Every WRITES-th user's XP raised, a fifth of those twice, as many audit rows."""
    with psycopg.connect(settings.url_for(), autocommit=True) as conn:
        # The analytics trigger's EXISTS over the statement's transition tables is planned
        # for its first row: a nested loop over two tuplestores, quadratic in the rows one
        # statement updates (a 1M-row UPDATE did not finish in 20 min). Replay runs no
        # trigger, so this changes nothing measured: it only lets the workload finish.
        conn.execute("SET enable_nestloop = off")
        conn.execute('UPDATE "User" SET xp = xp + 10 WHERE hashtext(id) %% %s = 0', [WRITES])
        conn.execute('UPDATE "User" SET xp = xp + 5 WHERE hashtext(id) %% %s = 0', [WRITES * 5])
        conn.execute(
            "INSERT INTO audit_log (action, resource, details)"
            " SELECT 'bench.pitr', 'user:' || g, '{}'::jsonb FROM generate_series(1, %s) g",
            [users // WRITES],
        )
        time.sleep(0.5)
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        target: datetime = row[0].astimezone(UTC)
        time.sleep(0.5)
        conn.execute('UPDATE "User" SET xp = 0 WHERE hashtext(id) % 2 = 0')  # the mistake undone
    return target


def _bare(cluster: Cluster, base: Path, target: datetime, work: Path) -> float:
    """cp -a of the base backup + PostgreSQL replaying to target and promoting: the floor."""
    data = work / "bare"
    home_wal = cluster.home / "wal"
    started = time.perf_counter()
    subprocess.run(["cp", "-a", str(base), str(data)], check=True)
    (data / "backup_manifest").unlink(missing_ok=True)
    with (data / "postgresql.auto.conf").open("a") as f:
        restore = archive.restore_command(home_wal)
        f.write(f"restore_command = {archive.conf_string(restore)}\n")
        f.write(f"recovery_target_time = '{target.isoformat(sep=' ')}'\n")
        f.write("recovery_target_action = 'promote'\narchive_command = ''\n")
        # The base backup's timeline: the ones earlier runs' restores branched off are not
        # the history this target is on.
        f.write("recovery_target_timeline = 'current'\n")
    (data / "recovery.signal").touch()
    side = Cluster(cluster.home, port=_free_port(), bin_dir=cluster.bin_dir)
    side.data_dir, side.log_file = data, cluster.log_dir / "bench-bare.log"
    if side.run_as is not None:
        owner = side._owner()
        for p in (data / "recovery.signal", data / "postgresql.auto.conf"):
            os.chown(p, owner.pw_uid, owner.pw_gid)
    side.start(timeout=3600)
    with side.connect() as conn:
        while conn.execute("SELECT pg_is_in_recovery()").fetchone() != (False,):
            time.sleep(0.05)
    elapsed = time.perf_counter() - started
    side.stop(mode="immediate")
    shutil.rmtree(data)
    return elapsed


def _settle() -> None:
    """Write back what the previous side left dirty (a 6 GB copy, a removed data directory)
    before the next is timed: otherwise whichever runs second pays the other's writeback."""
    os.sync()
    time.sleep(2)


def _ours(settings: Settings, target: datetime) -> tuple[float, dict[str, float]]:
    """What `smartstart db restore --to-time` does after parsing its arguments, in process."""
    from smartstart.cli.pitr import _platform_check, archive_dir, base_dir

    cluster = Cluster.from_settings(settings)
    started = time.perf_counter()
    until = pitr.flush_archive(cluster)
    plan = pitr.plan_restore(cluster, base_dir(settings), archive_dir(settings), target, until)
    planned = time.perf_counter() - started
    done = pitr.restore(cluster, plan, archive_dir(settings), _platform_check(settings))
    return time.perf_counter() - started, {"flush+plan": planned, **done.phases}


def _cli(cli_env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [str(SMARTSTART), *args], env=cli_env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:  # said, and the in-process results still printed
        print(f"smartstart {' '.join(args)} failed: {proc.stderr.strip()}", flush=True)
        return float("nan")
    return time.perf_counter() - started


def _xp_sum(settings: Settings) -> int:
    with psycopg.connect(settings.url_for()) as conn:
        row = conn.execute('SELECT sum(xp) FROM "User"').fetchone()
        return int(row[0]) if row and row[0] is not None else 0


def main() -> int:
    """Alternate the two, RUNS times each, to the same target; 0 when the target was met."""
    if DIR is None:
        home = Path(tempfile.mkdtemp(prefix="smartstart-bench-pitr-"))
        home.chmod(0o711)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            home=home,
            pg_port=_free_port(),
            db_name=DB_NAME,
            admin_password="bench admin password",
            env="test",
        )
    else:
        from bench.cluster import bench_settings

        home = Path(DIR)
        settings = bench_settings(home, _free_port())
        # What an earlier run recorded (its port): this run's settings are recorded instead,
        # so that the command run below agrees with them.
        (home / "cluster.json").unlink(missing_ok=True)
    # Durable defaults, as in production, and archiving as `smartstart up` configures it.
    cluster = Cluster.from_settings(settings)
    try:
        ensure_database(settings)  # initialised, started (archiving), migrated, seeded
        with psycopg.connect(settings.url_for(), autocommit=True) as conn:
            if DIR is None:
                demo.demo_users(conn, USERS, seed=1)
            row = conn.execute('SELECT count(*) FROM "User"').fetchone()
            users = int(row[0]) if row else 0
            conn.execute("VACUUM ANALYZE")
        print(f"{users:,} users; base backup, load {os.getloadavg()[0]:.1f} ...", flush=True)
        base = base_backup(cluster, home / "basebackups", who="bench")
        wal_before = len(archive.segments(home / "wal"))
        target = _workload(settings, users)
        mistaken = _xp_sum(settings)  # with the write after the target
        pitr.flush_archive(cluster)
        wal = len(archive.segments(home / "wal")) - wal_before
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTSTART_", "PG"))}
        cli_env = {
            **env,
            "SMARTSTART_HOME": str(home),
            "SMARTSTART_PG_PORT": str(cluster.port),
            "SMARTSTART_DB_NAME": settings.db_name,
            "SMARTSTART_DB_USER": settings.db_user,
            "SMARTSTART_DB_PASSWORD": settings.db_password.get_secret_value(),
            "SMARTSTART_ENV": "test",
        }
        load_before = os.getloadavg()
        bare, ours = [], []
        phases: list[dict[str, float]] = []
        work = home / "work"
        work.mkdir()
        sums = set()
        for i in range(RUNS):
            print(f"run {i + 1}/{RUNS}, load {os.getloadavg()[0]:.1f} ...", flush=True)
            _settle()
            bare.append(_bare(cluster, base.path, target, work))
            _settle()
            wall, report = _ours(settings, target)
            ours.append(wall)
            phases.append(report)
            sums.add(_xp_sum(settings))
            for kept in home.glob(f"{pitr.KEPT_PREFIX}*"):
                shutil.rmtree(kept)
        # The command itself, once: the same work plus the CLI's start-up.
        _settle()
        cli_wall = _cli(cli_env, "db", "restore", "--to-time", target.isoformat(), "--yes")
        startup = _cli(cli_env, "--version")
        sums.add(_xp_sum(settings))
        load_after = os.getloadavg()
    finally:
        if DIR is None:
            cluster.destroy()
            shutil.rmtree(home, ignore_errors=True)
        else:  # the copy stays, restored; what this run added goes
            cluster.stop()
            for added in (home / "basebackups", home / "wal", home / "work"):
                shutil.rmtree(added, ignore_errors=True)
            for kept in home.glob(f"{pitr.KEPT_PREFIX}*"):
                shutil.rmtree(kept, ignore_errors=True)
    # Each restore ends in the same state, and not the one with the write after the target.
    assert len(sums) == 1 and mistaken not in sums, (sums, mistaken)
    m_bare, m_ours = statistics.median(bare), statistics.median(ours)
    ratio = m_ours / m_bare
    ok = ratio <= TARGET_RATIO

    def span(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f})"

    print(
        f"PITR restore of {users:,} users (1 in {WRITES} written), "
        f"base backup {base.manifest.size / 2**20:.0f} MiB + "
        f"{wal} WAL segments to replay, {RUNS} runs each, alternated:\n"
        f"  cp -a base + replay to the target (bare PostgreSQL)  {span(bare)}\n"
        f"  db restore --to-time in process (flush, plan, copy, replay, check, swap, start)  "
        f"{span(ours)}\n"
        f"  smartstart db restore --to-time (the command, once) {cli_wall:.2f} s, of which the "
        f"CLI start-up (smartstart --version) {startup:.2f} s\n"
        f"  phases (median): "
        + ", ".join(f"{k} {statistics.median(p[k] for p in phases):.2f}" for k in phases[0])
        + "\n"
        f"  ratio: {ratio:.2f} — target <= {TARGET_RATIO}: {'met' if ok else 'MISSED'}\n"
        f"  load average {load_before[0]:.1f}/{load_before[1]:.1f} before, "
        f"{load_after[0]:.1f}/{load_after[1]:.1f} after ({os.cpu_count()} cores)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
