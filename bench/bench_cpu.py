"""CPU per request of the hot routes: this tree against another revision, in one run.

Wall-clock throughput moves with whatever else the machine runs; the CPU time a Brain
worker spends per request under a fixed load moves much less. This benchmark starts two
one-worker Brains on the same throwaway database, one from this tree and one from
`BENCH_CPU_BASE` (a git revision, default `main`, exported to a temp dir), and runs the
same wrk load (-t1 -c8, random ids) against both at the same time, so that whatever else
the machine runs weighs on both alike, in several rounds per endpoint.
It prints the worker's CPU ms per request (user + system, from /proc) for every run.

    .venv/bin/python -m bench cpu
    BENCH_CPU_BASE=HEAD~3 BENCH_CPU_ROUNDS=4 BENCH_CPU_ACCESS_LOG=true .venv/bin/python -m bench cpu

`BENCH_CPU_ACCESS_LOG` (default false, as in `bench api`) turns the access log on in
both Brains (their output goes to a log file, as under a process manager).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.bench_api import (
    DRAIN,
    ROOT,
    Missing,
    admin_token,
    brain_env,
    cpu_seconds,
    free_port,
    require_tools,
    running,
    sample_user_ids,
    throwaway_database,
    write_lua,
    wrk_args,
)

BASE = os.environ.get("BENCH_CPU_BASE", "main")
USERS = int(os.environ.get("BENCH_CPU_USERS", "20000"))
DURATION = int(os.environ.get("BENCH_CPU_DURATION", "8"))
ROUNDS = int(os.environ.get("BENCH_CPU_ROUNDS", "3"))
ACCESS_LOG = os.environ.get("BENCH_CPU_ACCESS_LOG", "false")
CONNECTIONS = 8

# Starts the CLI of whichever tree is first on PYTHONPATH.
SERVE = "import sys; from smartstart.cli.main import main; sys.exit(main())"


def export(rev: str, into: Path) -> Path:
    """The source tree of `rev` (git archive), for PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def main() -> int:
    """Alternate the two trees; print CPU ms per request of each run and the medians."""
    try:
        require_tools(extras=False)
    except Missing as e:
        print(f"bench cpu: {e}")
        return 1
    endpoints = {"users": "GET /api/users/{id}", "check": "GET /api/authz/check"}
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="smartstart-bench-cpu-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        (work / "base").mkdir()
        trees = {BASE: export(BASE, work / "base"), "this tree": ROOT / "src"}
        db = stack.enter_context(throwaway_database(demo_users=USERS))
        token = admin_token(db)
        ids = sample_user_ids(db)
        scripts = {e: write_lua(work / f"{e}.lua", e, ids, token) for e in endpoints}
        servers = {}
        for name, src in trees.items():
            # A home of its own: one Brain per home (its pid file).
            home = work / f"home-{len(servers)}"
            home.mkdir(mode=0o711)
            env = brain_env(db) | {
                "PYTHONPATH": str(src),
                "SMARTSTART_API_ACCESS_LOG": ACCESS_LOG,
                "SMARTSTART_HOME": str(home),
            }
            command = [sys.executable, "-c", SERVE, "serve", "--port", str(free_port())]
            servers[name] = stack.enter_context(
                running(name.replace(" ", "-"), [*command, "--workers", "1"], env, work)
            )
        for server in servers.values():
            for script in scripts.values():
                run_wrk(server.base, script, 2)
        print(
            f"bench cpu: worker CPU ms/request, wrk -t1 -c{CONNECTIONS} -d{DURATION}s, "
            f"{USERS:,} users, access log {ACCESS_LOG}, load average {os.getloadavg()[0]:.1f}"
        )
        for endpoint, label in endpoints.items():
            figures: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(ROUNDS):
                time.sleep(DRAIN)
                # Both at once: whatever else runs on the machine weighs on both alike.
                before = {n: cpu_seconds(tree=s.process.pid) for n, s in servers.items()}
                with ThreadPoolExecutor(len(servers)) as pool:
                    futures = {
                        n: pool.submit(run_wrk, s.base, scripts[endpoint], DURATION)
                        for n, s in servers.items()
                    }
                    served = {n: f.result() for n, f in futures.items()}
                for name, server in servers.items():
                    cpu = cpu_seconds(tree=server.process.pid) - before[name]
                    ms = cpu * 1000 / max(served[name], 1)
                    figures[name].append(ms)
                    print(
                        f"  {label:<22} {name:<10} {served[name]:>7} requests  {ms:.3f} ms CPU/req"
                    )
            medians = {name: statistics.median(values) for name, values in figures.items()}
            for name, value in medians.items():
                print(f"  {label:<22} {name:<10} median {value:.3f} ms CPU/req")
            base, this = medians[BASE], medians["this tree"]
            print(f"  {label:<22} this tree / {BASE}: {this / base:.2f}")
        print(f"bench cpu: load average at the end {os.getloadavg()[0]:.1f}")
    return 0


def run_wrk(base: str, script: Path, seconds: int) -> int:
    """Requests served by one wrk run (all must be 2xx)."""
    out = subprocess.run(
        wrk_args(base, script, seconds, threads=1, connections=CONNECTIONS),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    result = json.loads(line.removeprefix("BENCH "))
    if result["non2xx"] or result["socket_errors"]:
        raise RuntimeError(f"wrk saw errors: {result}")
    return int(result["requests"])


if __name__ == "__main__":
    sys.exit(main())
