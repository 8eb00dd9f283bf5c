"""Backups against PostgreSQL's bare tools, side by side on the same data (issue 9's targets).

- `db backup` (custom) ≤ 1.15× `pg_dump -Fc`;
- `db backup --format plain --compress` ≤ 1.15× `pg_dump | gzip`;
- `db restore` (load, row comparison, db check, integrity, swap) ≤ 1.3× `pg_restore -j 2`
  into an empty database;
- the Brain's `GET /api/users/{id}` p99 ≤ 100 ms while a backup runs.

Each tool runs as operators run it (the `smartstart` CLI in a subprocess) and in process
(the same function without the CLI's start-up). `python -m bench backup`; a throwaway
cluster of BENCH_BACKUP_USERS (100000) demo users, or, with BENCH_BACKUP_DIR, a built
cluster directory (a copy of /work/cache/listings-1000000: never the cache itself).
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from bench.bench_api import (
    DB_NAME,
    DB_USER,
    Database,
    admin_token,
    brain_command,
    brain_env,
    free_port,
    get_json,
    running,
    sample_user_ids,
    throwaway_database,
)
from bench.cluster import server_cpu as _server_cpu
from smartstart.pg.cluster import Cluster

USERS = int(os.environ.get("BENCH_BACKUP_USERS", "100000"))
RUNS = int(os.environ.get("BENCH_BACKUP_RUNS", "5"))
DIR = os.environ.get("BENCH_BACKUP_DIR")
# BENCH_BACKUP_ONLY=compress,p99 (any of backup, compress, restore, p99) runs only those
# comparisons: a re-run of one that a busy moment spoiled.
PARTS = ("backup", "compress", "restore", "p99")
ONLY = {p.strip() for p in os.environ.get("BENCH_BACKUP_ONLY", ",".join(PARTS)).split(",")}
BACKUP_RATIO, COMPRESS_RATIO, RESTORE_RATIO, P99_MS = 1.15, 1.15, 1.3, 100.0
SMARTSTART = Path(sys.executable).with_name("smartstart")


@contextlib.contextmanager
def _database() -> Iterator[Database]:
    if DIR is None:
        with throwaway_database(demo_users=USERS) as db:
            yield db
        return
    os.environ["BENCH_LISTINGS_DIR"] = DIR
    from bench import bench_listings

    with bench_listings.database() as built:
        yield built.db


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Wall and CPU (this process, its children, the server) of each timed call, by name."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def _cpu(self) -> float:
        return time.process_time() + _children_cpu() + _server_cpu(self.cluster)

    def time(self, name: str, call: Callable[[], object]) -> None:
        cpu = self._cpu()
        started = time.perf_counter()
        call()
        self.wall.setdefault(name, []).append(time.perf_counter() - started)
        time.sleep(0.2)  # let the postmaster reap the backends
        self.cpu.setdefault(name, []).append(self._cpu() - cpu)

    def median(self, name: str) -> float:
        return statistics.median(self.wall[name])

    def row(self, name: str) -> str:
        w, c = self.wall[name], self.cpu[name]
        return (
            f"| {name} | {statistics.median(w):.2f} s | {min(w):.2f} s | {max(w):.2f} s "
            f"| {statistics.median(c):.2f} s |"
        )

    def ratio(self, name: str, base: str) -> str:
        wall = self.median(name) / self.median(base)
        cpu = statistics.median(self.cpu[name]) / statistics.median(self.cpu[base])
        return f"{wall:.2f}× wall, {cpu:.2f}× CPU"


def _run(args: list[str], env: dict[str, str]) -> Callable[[], object]:
    return lambda: subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)


def _pipe(first: list[str], second: list[str], out: Path, env: dict[str, str]) -> None:
    """`first | second > out`, both checked."""
    with out.open("wb") as sink:
        a = subprocess.Popen(first, stdout=subprocess.PIPE, env=env)
        b = subprocess.run(second, stdin=a.stdout, stdout=sink, check=True)
        assert a.stdout is not None
        a.stdout.close()
        if a.wait() != 0 or b.returncode != 0:
            raise RuntimeError(f"{first[0]} | {second[0]} failed")


def _admin(cluster: Cluster) -> psycopg.Connection[object]:
    return psycopg.connect(cluster.superuser_conninfo(), autocommit=True)


def _drop_set_aside(cluster: Cluster) -> None:
    with _admin(cluster) as conn:
        for (name,) in conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [DB_NAME + "_"]
        ).fetchall():
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _empty_database(cluster: Cluster, name: str) -> None:
    with _admin(cluster) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(DB_USER)
            )
        )


def _p(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _latencies(base: str, token: str, ids: list[str], until: Callable[[], bool]) -> list[float]:
    """GET /api/users/{id} one after another until `until()`; each one's seconds."""
    times: list[float] = []
    n = 0
    while not until():
        started = time.perf_counter()
        status, _ = get_json(f"{base}/api/users/{ids[n % len(ids)]}", token)
        times.append(time.perf_counter() - started)
        assert status == 200, status
        n += 1
    return times


def _p99_while_backing_up(db: Database, cli_env: dict[str, str], out: Path) -> list[str]:
    """p50/p99 of GET /api/users/{id}: idle, then while `db backup` runs (twice)."""
    token, ids = admin_token(db), sample_user_ids(db, 200)
    lines = []
    with running("brain", brain_command(free_port(), 1), brain_env(db), out) as server:
        base = server.base
        _latencies(base, token, ids, _deadline(3.0))  # warm-up
        idle = _latencies(base, token, ids, _deadline(10.0))
        busy: list[float] = []
        for i in range(2):
            done = threading.Event()
            path = out / f"p99-{i}.dump"
            worker = threading.Thread(target=_backup_then, args=(path, cli_env, done))
            worker.start()
            busy += _latencies(base, token, ids, done.is_set)
            worker.join()
    for name, times in (("idle", idle), ("during db backup", busy)):
        lines.append(
            f"| GET /api/users/{{id}} {name} | {len(times)} | {_p(times, 0.5):.1f} ms "
            f"| {_p(times, 0.99):.1f} ms |"
        )
    return lines + [f"p99 during backup {_p(busy, 0.99):.1f} ms"]


def _backup_then(path: Path, env: dict[str, str], done: threading.Event) -> None:
    """`smartstart db backup -o path`, then done is set."""
    try:
        subprocess.run(
            [str(SMARTSTART), "db", "backup", "-o", str(path)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    finally:
        done.set()


def _deadline(seconds: float) -> Callable[[], bool]:
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


def main() -> int:
    """All four comparisons on one database; 0 when every target was met."""
    from smartstart.db import backups
    from smartstart.pg import backup as pgb

    load_before = os.getloadavg()
    with _database() as db:
        s = db.settings
        cluster = Cluster(db.home, port=s.pg_port)
        # As `smartstart db start` does (a cache built before it, too): the extension
        # without the comment only its owner could restore.
        cluster.bootstrap(
            db_name=DB_NAME, db_user=DB_USER, db_password=s.db_password.get_secret_value()
        )
        with psycopg.connect(s.url_for(), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            users = conn.execute('SELECT count(*) FROM "User"').fetchone()
            audit = conn.execute("SELECT count(*) FROM audit_log").fetchone()
        out = db.home / "bench-out"
        out.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTSTART_", "PG"))}
        cli_env = brain_env(db)
        tools = pgb.client_tools(cluster.bin_dir)
        pg_dump = [str(cluster.bin_dir / "pg_dump"), "-d", s.url_for()]
        clock = Clock(cluster)
        for i in range(RUNS):
            if "backup" in ONLY or ("restore" in ONLY and i == 0):
                dump_cmd = [*pg_dump, "-Fc", "-f", str(out / f"b{i}.dump")]
                clock.time("pg_dump -Fc", _run(dump_cmd, env))
                cmd = [str(SMARTSTART), "db", "backup", "-o", str(out / f"c{i}.dump")]
                clock.time("smartstart db backup", _run(cmd, cli_env))
            if "backup" in ONLY:
                clock.time(
                    "pg.backup.backup() in process",
                    lambda i=i: pgb.backup(s.url_for(), out / f"f{i}.dump", tools, who="bench"),
                )
            if "compress" not in ONLY:
                continue
            clock.time(
                "pg_dump | gzip",
                lambda i=i: _pipe(pg_dump, ["gzip"], out / f"b{i}.sql.gz", env),
            )
            cmd = [str(SMARTSTART), "db", "backup", "--format", "plain", "--compress"]
            clock.time(
                "smartstart db backup --format plain --compress",
                _run([*cmd, "-o", str(out / f"c{i}.sql.gz")], cli_env),
            )
            clock.time(
                "plain --compress in process",
                lambda i=i: pgb.backup(
                    s.url_for(),
                    out / f"f{i}.sql.gz",
                    tools,
                    fmt="plain",
                    compress=True,
                    who="bench",
                ),
            )
        dump = out / "c0.dump"
        restore_cmd = [str(SMARTSTART), "db", "restore", str(dump), "--yes"]
        for _ in range(RUNS if "restore" in ONLY else 0):
            target = f"{DB_NAME}_bare"
            _empty_database(cluster, target)
            bare = [str(cluster.bin_dir / "pg_restore"), "-j", "2", "--no-owner"]
            clock.time(
                "pg_restore -j 2 into an empty database",
                _run([*bare, "-d", s.url_for(target), str(dump)], env),
            )
            _drop_set_aside(cluster)
            clock.time("smartstart db restore", _run(restore_cmd, cli_env))
            _drop_set_aside(cluster)
            clock.time(
                "db.backups.restore() in process",
                lambda: backups.restore(s, backups.plan_restore(s, dump)),
            )
            _drop_set_aside(cluster)
        size = {
            p.name: p.stat().st_size for p in (out / "b0.dump", out / "c0.sql.gz") if p.exists()
        }
        p99 = _p99_while_backing_up(db, cli_env, out) if "p99" in ONLY else []
    load_after = os.getloadavg()
    checks = [
        ("smartstart db backup", "pg_dump -Fc", BACKUP_RATIO),
        ("smartstart db backup --format plain --compress", "pg_dump | gzip", COMPRESS_RATIO),
        ("smartstart db restore", "pg_restore -j 2 into an empty database", RESTORE_RATIO),
    ]
    checks = [c for c in checks if c[0] in clock.wall and c[1] in clock.wall]
    ok = True
    sizes = ", ".join(f"{name} {n / 2**20:.1f} MiB" for name, n in size.items())
    print(
        f"\n{users[0] if users else '?':,} users, {audit[0] if audit else '?':,} audit rows; "
        f"dumps: {sizes}; N={RUNS} each, alternated ({', '.join(sorted(ONLY))})\n"
    )
    print("| | median | min | max | CPU (median) |\n|---|---|---|---|---|")
    for name in clock.wall:
        print(clock.row(name))
    print()
    for name, base, limit in checks:
        met = clock.median(name) / clock.median(base) <= limit
        ok &= met
        print(
            f"- {name} / {base}: {clock.ratio(name, base)} (target ≤ {limit}: "
            f"{'met' if met else 'MISSED'})"
        )
    inproc = [
        ("pg.backup.backup() in process", "pg_dump -Fc"),
        ("plain --compress in process", "pg_dump | gzip"),
        ("db.backups.restore() in process", "pg_restore -j 2 into an empty database"),
    ]
    for name, base in inproc:
        if name in clock.wall and base in clock.wall:
            print(f"- {name} / {base}: {clock.ratio(name, base)}")
    if not p99:
        print(
            f"- load average {load_before[0]:.1f}/{load_before[1]:.1f} before, "
            f"{load_after[0]:.1f}/{load_after[1]:.1f} after ({os.cpu_count()} cores)"
        )
        return 0 if ok else 1
    print("\n| request | n | p50 | p99 |\n|---|---|---|---|")
    print("\n".join(p99[:-1]))
    busy_p99 = float(p99[-1].split()[-2])
    ok &= busy_p99 <= P99_MS
    print(
        f"\n- p99 during a backup {busy_p99:.1f} ms (target ≤ {P99_MS:.0f} ms: "
        f"{'met' if busy_p99 <= P99_MS else 'MISSED'})"
    )
    print(
        f"- load average {load_before[0]:.1f}/{load_before[1]:.1f} before, "
        f"{load_after[0]:.1f}/{load_after[1]:.1f} after ({os.cpu_count()} cores)"
    )
    return 0 if ok else 1
