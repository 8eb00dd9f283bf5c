"""A fresh per-test database cloned from a migrated (and seeded) template: target <= 50 ms.

Two throwaway embedded clusters: one configured like the test suite's (tests/conftest.py
FAST_CONF: fsync, synchronous_commit and full_page_writes off) and one with PostgreSQL's
durable defaults. In each, a template migrated with Alembic (`migrate.upgrade`) and a copy
of it seeded (`seed.seed`); then, interleaved, `CREATE DATABASE ... TEMPLATE ... STRATEGY
FILE_COPY` vs `STRATEGY WAL_LOG` (PostgreSQL 15+) and `DROP DATABASE`, plus the whole cycle
the `db_settings`/`seeded_settings` fixtures pay (connect, DROP IF EXISTS, CREATE; connect,
DROP).

    .venv/bin/python -m bench testdb           # or: .venv/bin/python -m bench.bench_testdb
    BENCH_TESTDB_RUNS=50 .venv/bin/python -m bench testdb
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from smartstart.config import Settings
from smartstart.db import migrate, seed
from smartstart.pg.cluster import Cluster

RUNS = int(os.environ.get("BENCH_TESTDB_RUNS", "30"))
TARGET_MS = 50.0
DB_USER = "smartstart_user"
DB_PASSWORD = "smartstart_password"  # noqa: S105 - the guide's development default
MIGRATED = "bench_migrated_template"
SEEDED = "bench_seeded_template"
# Same as tests/conftest.py FAST_CONF (not imported: bench must not depend on tests/).
FAST_CONF = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
STRATEGIES = ("FILE_COPY", "WAL_LOG")
TESTS = "test settings (FAST_CONF)"
BUDGET_S = 20.0  # per measured cell, so that a slow disk cannot make the bench unbounded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_home(parent: str | None = None) -> Path:
    """mkdtemp is 0700; the server's unprivileged OS user must be able to enter it."""
    home = Path(tempfile.mkdtemp(prefix="smartstart-bench-testdb-", dir=parent))
    home.chmod(0o711)
    return home


def file_creation_probe(parent: str | None = None, files: int = 300) -> float:
    """ms to create (and fsync nothing) `files` empty files: a template clone creates ~300."""
    probe = Path(tempfile.mkdtemp(prefix="smartstart-bench-probe-", dir=parent))
    try:
        started = time.perf_counter()
        for i in range(files):
            (probe / str(i)).touch()
        return ms(started)
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def settings_for(cluster: Cluster, db_name: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=cluster.home,
        pg_port=cluster.port,
        db_name=db_name,
        db_user=DB_USER,
        db_password=DB_PASSWORD,
        admin_password="bench admin password",
        env="test",
    )


def ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def create_stmt(name: str, template: str, strategy: str) -> sql.Composed:
    return sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {} STRATEGY {}").format(
        ident(name), ident(DB_USER), ident(template), sql.SQL(strategy)
    )


def drop_stmt(name: str, if_exists: bool = False) -> sql.Composed:
    return sql.SQL("DROP DATABASE {}{} WITH (FORCE)").format(
        sql.SQL("IF EXISTS " if if_exists else ""), ident(name)
    )


def prepare_templates(cluster: Cluster) -> dict[str, float]:
    """A migrated template and a seeded copy of it; their sizes in MB."""
    with cluster.connect() as conn:
        for name in (SEEDED, MIGRATED):
            conn.execute(drop_stmt(name, if_exists=True))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(ident(MIGRATED), ident(DB_USER)))
    migrate.upgrade(settings_for(cluster, MIGRATED).sqlalchemy_url())
    with cluster.connect() as conn:
        conn.execute(create_stmt(SEEDED, MIGRATED, "FILE_COPY"))
    settings = settings_for(cluster, SEEDED)
    with psycopg.connect(settings.url_for()) as conn:
        seed.seed(conn, settings)
    with cluster.connect() as conn:
        conn.execute("CHECKPOINT")
        return {
            name: int(
                conn.execute("SELECT pg_database_size(%s)", [name]).fetchone()[0]  # type: ignore[index]
            )
            / 2**20
            for name in (MIGRATED, SEEDED)
        }


def ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def measure(
    cluster: Cluster, template: str, *, fixture_cycle: bool = True
) -> dict[str, list[float]]:
    """Up to RUNS interleaved rounds (fewer when BUDGET_S runs out): per strategy, CREATE and
    DROP alone, then (fixture_cycle) what a test fixture pays for one database."""
    samples: dict[str, list[float]] = {}
    deadline = time.monotonic() + BUDGET_S

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    with cluster.connect() as conn:
        for i in range(RUNS):
            if time.monotonic() > deadline:
                break
            for strategy in STRATEGIES:
                name = f"bench_t_{strategy.lower()}_{i}"
                started = time.perf_counter()
                conn.execute(create_stmt(name, template, strategy))
                add(f"CREATE {strategy}", ms(started))
                started = time.perf_counter()
                conn.execute(drop_stmt(name))
                add(f"DROP ({strategy} copy)", ms(started))
    for i in range(RUNS if fixture_cycle else 0):
        if time.monotonic() > deadline:
            break
        for strategy in STRATEGIES:
            name = f"bench_f_{strategy.lower()}_{i}"
            # What tests/conftest.py _fresh() does: a new superuser connection for
            # DROP IF EXISTS + CREATE, and another one for the DROP afterwards.
            started = time.perf_counter()
            with cluster.connect() as conn:
                conn.execute(drop_stmt(name, if_exists=True))
                conn.execute(create_stmt(name, template, strategy))
            created = ms(started)
            started = time.perf_counter()
            with cluster.connect() as conn:
                conn.execute(drop_stmt(name, if_exists=True))
            add(f"fixture cycle {strategy}", created + ms(started))
        started = time.perf_counter()
        with cluster.connect():
            pass
        add("superuser connect + close (Unix socket)", ms(started))
    return samples


def describe(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "median": statistics.median(values),
        "p95": p95,
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(values),
    }


def with_cluster(
    conf: dict[str, str], body: Callable[[Cluster], Any], parent: str | None = None
) -> Any:
    home = make_home(parent)
    cluster = Cluster(home, port=free_port(), server_conf=conf)
    try:
        cluster.init()
        cluster.start()
        cluster.bootstrap(db_name="smartstart_db", db_user=DB_USER, db_password=DB_PASSWORD)
        return body(cluster)
    finally:
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)


def load_after() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def configurations() -> list[tuple[str, dict[str, str], str | None, bool]]:
    """(label, server settings, parent directory of the cluster, also the migrated template)."""
    configs: list[tuple[str, dict[str, str], str | None, bool]] = [
        (TESTS, FAST_CONF, None, True),
        ("durable defaults", {}, None, False),  # CREATEs take 0.2-1 s: seeded template only
    ]
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        configs.append(("test settings, cluster on tmpfs (/dev/shm)", FAST_CONF, "/dev/shm", False))
    return configs


def main() -> int:
    """Print median/p95/min/max per operation; 0 when a test's fresh database (the fixture's
    connect + CREATE ... FILE_COPY from the seeded template + connect + DROP, test settings)
    costs <= TARGET_MS at the median."""
    results: dict[str, dict[str, Any]] = {}
    sizes: dict[str, dict[str, float]] = {}
    probes: dict[str, float] = {}
    load_before = load_after()
    started = time.perf_counter()
    for label, conf, parent, migrated_too in configurations():
        probes[parent or tempfile.gettempdir()] = file_creation_probe(parent)

        def body(
            cluster: Cluster, label: str = label, fast: bool = bool(conf), both: bool = migrated_too
        ) -> None:
            sizes[label] = prepare_templates(cluster)
            results[label] = {SEEDED: measure(cluster, SEEDED, fixture_cycle=fast)}
            if both:
                results[label][MIGRATED] = measure(cluster, MIGRATED, fixture_cycle=False)

        with_cluster(conf, body, parent)
    elapsed = time.perf_counter() - started

    print(f"Fresh database per test: up to N={RUNS} per cell, 2-core machine, PostgreSQL 15, ms")
    print(f"load average before/after: {load_before} / {load_after()}")
    print(
        f"{'settings / template / operation':58} {'median':>7} {'p95':>7} {'min':>7} "
        f"{'max':>7} {'N':>3}"
    )
    for label, per_template in results.items():
        for template, samples in per_template.items():
            size = sizes[label][template]
            print(f"{label} / {template} ({size:.1f} MB)")
            for op, values in samples.items():
                d = describe(values)
                print(
                    f"    {op:54} {d['median']:7.1f} {d['p95']:7.1f} {d['min']:7.1f} "
                    f"{d['max']:7.1f} {d['n']:3.0f}"
                )
    for where, took in probes.items():
        print(f"file-creation probe: 300 empty files in {where}: {took:.0f} ms")
    create = describe(results[TESTS][SEEDED]["CREATE FILE_COPY"])
    cycle = describe(results[TESTS][SEEDED]["fixture cycle FILE_COPY"])
    ok = cycle["median"] <= TARGET_MS
    print(
        f"\nFresh test database (tests/conftest.py's way: FILE_COPY from the seeded template, "
        f"test settings): CREATE alone median {create['median']:.1f} ms (p95 {create['p95']:.1f}); "
        f"whole fixture cycle median {cycle['median']:.1f} ms (p95 {cycle['p95']:.1f}) — "
        f"target <= {TARGET_MS:.0f} ms: {'met' if ok else 'MISSED'} ({elapsed:.0f} s in all)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
