"""demo_users(N) on a throwaway embedded cluster with durable (default) server settings.

`python -m bench seed` (BENCH_SEED_USERS, default 100000; the issue's figure is 1000000;
BENCH_SEED_AUDIT audit entries per user, default the CLI's; BENCH_SEED_ARCHIVE=1 archives
the WAL as `smartstart up` does; BENCH_SEED_DROP_INDEXES=a,b times it without those
indexes). SMARTSTART_DEMO_TIMING=1 prints each step of the bulk path.
"""

from __future__ import annotations

import os
import time

import psycopg
from psycopg import sql

from bench.cluster import DB_NAME, archiver_cpu, server_cpu, throwaway_cluster
from smartstart.db import demo, seed
from smartstart.pg import pitr

USERS = int(os.environ.get("BENCH_SEED_USERS", "100000"))
AUDIT_PER_USER = int(os.environ.get("BENCH_SEED_AUDIT", str(demo.DEMO_AUDIT_PER_USER)))
ARCHIVE = os.environ.get("BENCH_SEED_ARCHIVE", "") not in ("", "0")
# Indexes dropped before the timing (comma-separated names): what the seed costs without
# building them, for the record of where its time goes. The result is no longer the schema.
DROP_INDEXES = [n for n in os.environ.get("BENCH_SEED_DROP_INDEXES", "").split(",") if n]
# Issue 8: a million users in 60 s; smaller runs are held to the same rate.
TARGET_SECONDS = max(60.0 * USERS / 1_000_000, 30.0)


def main() -> int:
    """Time demo_users(USERS) after seed; 0 when it met the target."""
    with throwaway_cluster(archive=ARCHIVE) as db:
        # The triggers' own time (pg_stat_user_functions): the statement-level ones that
        # keep the analytics summaries and role holders run during the bulk inserts too.
        with db.cluster.connect() as su:
            su.execute(f"ALTER DATABASE {DB_NAME} SET track_functions = 'pl'")
        if DROP_INDEXES:
            with psycopg.connect(db.settings.url_for(), autocommit=True) as conn:
                for name in DROP_INDEXES:
                    conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
            print(f"  without the indexes {', '.join(DROP_INDEXES)} (not the schema)")
        load_before = os.getloadavg()[0]
        with psycopg.connect(db.settings.url_for(), autocommit=True) as conn:
            seed.seed(conn, db.settings)
            wal_before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
            cpu_before, client_before = server_cpu(db.cluster), time.process_time()
            archiver_before = archiver_cpu(db.cluster)
            started = time.perf_counter()
            created = demo.demo_users(conn, USERS, seed=1, audit_per_user=AUDIT_PER_USER)
            elapsed = time.perf_counter() - started
            client_cpu = time.process_time() - client_before
            time.sleep(0.3)  # the postmaster reaps the companion backend
            # The seed's own CPU and WAL, before the counts below read every page (their
            # first read after commit sets hint bits: full-page images with data checksums).
            used = server_cpu(db.cluster) - cpu_before
            row = conn.execute(
                "SELECT pg_size_pretty(pg_current_wal_lsn() - %s::pg_lsn)",
                [wal_before[0] if wal_before else "0/0"],
            ).fetchone()
            wal = row[0] if row else "?"
            users, states, audit, dead = conn.execute(
                'SELECT (SELECT count(*) FROM "User"), (SELECT count(*) FROM "UserJourneyState"),'
                " (SELECT count(*) FROM audit_log),"
                " (SELECT sum(n_dead_tup) FROM pg_stat_user_tables)"
            ).fetchone() or (0, 0, 0, 0)
        if ARCHIVE:  # the segments still waiting for the archiver are the seed's cost too
            caught_up = time.perf_counter()
            pitr.flush_archive(db.cluster, timeout=1800)
            caught_up = time.perf_counter() - caught_up
            with db.cluster.connect() as su:
                via = su.execute("SHOW archive_library").fetchone() or ("",)
            print(
                f"  archive ({via[0] or 'archive_command'}) caught up {caught_up:.1f} s after;"
                f" the archiver's CPU {archiver_cpu(db.cluster) - archiver_before:.1f} s"
                " (not in the server CPU below)"
            )
        time.sleep(1.2)  # stats flushed
        with psycopg.connect(db.settings.url_for(), autocommit=True) as conn:
            functions = conn.execute(
                "SELECT funcname, calls, round(self_time / 1000) FROM pg_stat_user_functions"
                " ORDER BY self_time DESC LIMIT 6"
            ).fetchall()
        load_after = os.getloadavg()[0]
    ok = elapsed <= TARGET_SECONDS
    print(
        f"demo.demo_users({USERS}, audit_per_user={AUDIT_PER_USER}): {created} users, {states}"
        f" journey states, {audit} audit rows in {elapsed:.1f} s ({created / elapsed:,.0f}"
        f" users/s; {users} users in all; {dead} dead rows; {wal} of WAL; archiving"
        f" {'on' if ARCHIVE else 'off'})\n"
        f"  CPU: server {used:.1f} s, client {client_cpu:.1f} s; "
        f"load average {load_before:.1f} before, {load_after:.1f} after ({os.cpu_count()} cores)"
        + "\n  PL functions' own time (calls, s): "
        + ", ".join(f"{name} ({calls}, {secs} s)" for name, calls, secs in functions)
        + f"\nseed {USERS:,} users: {elapsed:.1f} s wall, {used:.1f} s server CPU — target"
        f" <= {TARGET_SECONDS:.0f} s: {'MET' if ok else 'MISSED'}"
    )
    return 0 if ok else 1
