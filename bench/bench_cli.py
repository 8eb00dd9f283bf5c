"""CLI start-up: `smartstart --help` and listings, as a shell runs them (issue 8: ≤ 300 ms).

Runs the installed `smartstart` in fresh processes against a throwaway seeded cluster (1,000
demo users: start-up, not the query, is measured), each command RUNS times, and prints the
median wall time and CPU time (user + system of the child). Two floors show what no CLI can
beat on this machine: a bare interpreter, and one importing the PostgreSQL driver.

    .venv/bin/python -m bench cli
    BENCH_CLI_RUNS=15 .venv/bin/python -m bench cli
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.bench_api import ADMIN_EMAIL, brain_env, throwaway_database

RUNS = int(os.environ.get("BENCH_CLI_RUNS", "9"))
TARGET_MS = 300.0
SMARTSTART = str(Path(sys.executable).with_name("smartstart"))

COMMANDS: list[tuple[str, list[str], bool]] = [  # (label, argv, judged against the target)
    ("python -c pass (floor)", [sys.executable, "-c", "pass"], False),
    ("python -c 'import psycopg' (floor)", [sys.executable, "-c", "import psycopg"], False),
    ("smartstart --help", [SMARTSTART, "--help"], True),
    ("smartstart users --help", [SMARTSTART, "users", "--help"], True),
    ("smartstart users list --limit 20", [SMARTSTART, "users", "list", "--limit", "20"], True),
    ("smartstart users list --json", [SMARTSTART, "users", "list", "--json"], True),
    ("smartstart rbac roles --json", [SMARTSTART, "rbac", "roles", "--json"], True),
    ("smartstart journey stages", [SMARTSTART, "journey", "stages"], True),
    ("smartstart audit list --limit 20", [SMARTSTART, "audit", "list", "--limit", "20"], True),
    ("smartstart auth sessions admin", [SMARTSTART, "auth", "sessions", ADMIN_EMAIL], True),
]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one run; fails loudly when the command fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)  # noqa: S603
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed ({done.returncode}): {done.stderr.decode()[-400:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    print(f"load average {os.getloadavg()}; {RUNS} runs of each", flush=True)
    with throwaway_database(demo_users=1000) as db:
        env = brain_env(db) | {"COLUMNS": "120"}
        missed = []
        print(f"{'command':40} {'wall p50':>9} {'cpu p50':>9} {'wall min':>9}")
        for label, argv, judged in COMMANDS:
            timed(argv, env)  # warm the page cache
            runs = [timed(argv, env) for _ in range(RUNS)]
            wall = statistics.median(r[0] for r in runs) * 1000
            cpu = statistics.median(r[1] for r in runs) * 1000
            low = min(r[0] for r in runs) * 1000
            verdict = ""
            if judged:
                verdict = "ok" if wall <= TARGET_MS else f"MISSED (target {TARGET_MS:.0f} ms)"
                if wall > TARGET_MS:
                    missed.append(label)
            print(f"{label:40} {wall:8.0f}ms {cpu:8.0f}ms {low:8.0f}ms  {verdict}", flush=True)
    print(f"load average {os.getloadavg()}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
