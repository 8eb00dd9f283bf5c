"""The Brain's hot read paths against the guide's Flask + psycopg2 app, with wrk, in one run.

Targets (issue 7; issue 3 asked 2x and 50 ms): authorized `GET /api/users/{id}` and
`GET /api/authz/check` at >= 3x the requests/s of bench/reference/app.py (gunicorn, 2
workers, the guide's five-table permission JOIN on every request) on the same database,
and a SmartStart p99 <= 30 ms.

A throwaway embedded cluster (durable settings) is migrated, seeded, given 100,000 demo
users and a session for the admin; both apps are started on loopback and warmed up; then
wrk (-t2 -c32 --latency, random ids among ~1000 sampled demo users) runs against each
endpoint of each app, alternating SmartStart, reference, SmartStart, reference.

    .venv/bin/python -m bench api          # or: .venv/bin/python -m bench.bench_api
    BENCH_API_DURATION=5 BENCH_API_USERS=10000 .venv/bin/python -m bench api   # a quick look

Needs wrk (`apt-get install -y wrk`) and the bench extras (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.cluster import (
    ADMIN_PASSWORD as ADMIN_PASSWORD,
)
from bench.cluster import (
    DB_NAME as DB_NAME,
)
from bench.cluster import (
    DB_PASSWORD as DB_PASSWORD,
)
from bench.cluster import (
    DB_USER as DB_USER,
)
from bench.cluster import (
    free_port as free_port,
)
from bench.cluster import throwaway_cluster

ROOT = Path(__file__).resolve().parents[1]
USERS = int(os.environ.get("BENCH_API_USERS", "100000"))
DURATION = int(os.environ.get("BENCH_API_DURATION", "15"))  # seconds per wrk run
WARMUP = int(os.environ.get("BENCH_API_WARMUP", "3"))  # seconds per app and endpoint
ROUNDS = 2  # A,B,A,B
THREADS, CONNECTIONS = 2, 32
SAMPLE = 1000
DRAIN = 2.0  # seconds of quiet before each measured run
# The reference's gunicorn worker class: "sync" (the guide's default) or "gthread".
REF_WORKER_CLASS = os.environ.get("BENCH_API_REF_WORKER_CLASS", "sync")
TARGET_RATIO = 3.0  # issue 7
TARGET_P99_MS = 30.0
ADMIN_EMAIL = "admin@alicesolutionsgroup.com"
# Checked permissions: held by some demo users and not by others.
CHECK_PERMISSIONS = ("users:read", "journey:read", "journey:manage", "audit:read", "db:backup")
INSTALL_HINT = {
    "wrk": "apt-get install -y wrk",
    "extras": ".venv/bin/pip install -e '.[bench]'",
}


class Missing(Exception):
    """A tool the benchmark needs is not installed."""


def require_tools(*, wrk: bool = True, extras: bool = True) -> None:
    """Fail early, naming the install command, when wrk or the bench extras are missing."""
    missing = []
    if wrk and shutil.which("wrk") is None:
        missing.append(f"wrk is not installed: {INSTALL_HINT['wrk']}")
    if extras:
        absent = [
            m for m in ("flask", "psycopg2", "gunicorn") if importlib.util.find_spec(m) is None
        ]
        if absent:
            missing.append(
                f"the bench extras are not installed ({', '.join(absent)}): "
                + INSTALL_HINT["extras"]
            )
    if shutil.which("smartstart", path=str(Path(sys.executable).parent)) is None:
        missing.append(f"smartstart is not next to {sys.executable}: .venv/bin/pip install -e .")
    if missing:
        raise Missing("; ".join(missing))


# -- the database -----------------------------------------------------------------------


@dataclass
class Database:
    home: Path
    settings: Any  # smartstart.config.Settings
    postmaster: int  # its backends are the children of this pid

    @property
    def dsn(self) -> str:
        return str(self.settings.url_for())


@contextlib.contextmanager
def throwaway_database(*, demo_users: int) -> Iterator[Database]:
    """A migrated, seeded cluster with `demo_users` demo users; destroyed on exit."""
    import psycopg

    from smartstart.db import demo, seed
    from smartstart.pg.cluster import read_pid_file

    with throwaway_cluster("smartstart-bench-api-") as db:
        with psycopg.connect(db.settings.url_for(), autocommit=True) as conn:
            seed.seed(conn, db.settings)
            if demo_users:
                demo.demo_users(conn, demo_users, seed=1)
            conn.execute("ANALYZE")
        pid_file = read_pid_file(db.cluster.data_dir)
        assert pid_file is not None, "the cluster runs without a postmaster.pid"
        yield Database(db.home, db.settings, pid_file.pid)


def admin_token(db: Database) -> str:
    """A fresh session token for the seeded admin (committed)."""
    import psycopg

    from smartstart.domain import sessions

    with psycopg.connect(db.dsn) as conn:
        row = conn.execute('SELECT id FROM "User" WHERE email = %s', [ADMIN_EMAIL]).fetchone()
        assert row is not None, "the seed made no admin"
        token, _ = sessions.create(conn, row[0], lifetime=timedelta(hours=2))
        conn.commit()
    return token


def sample_user_ids(db: Database, k: int = SAMPLE) -> list[str]:
    import psycopg

    with psycopg.connect(db.dsn) as conn:
        ids = [r[0] for r in conn.execute('SELECT id FROM "User" ORDER BY id')]
    return random.Random(1).sample(ids, min(k, len(ids)))  # noqa: S311 - a benchmark sample


# -- the servers ------------------------------------------------------------------------


def brain_env(db: Database) -> dict[str, str]:
    """The environment of a Brain pointed at the cluster (like tests' `cli_env`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTSTART_", "PG"))}
    env.update(
        SMARTSTART_HOME=str(db.home),
        SMARTSTART_PG_PORT=str(db.settings.pg_port),
        SMARTSTART_DB_NAME=DB_NAME,
        SMARTSTART_DB_USER=DB_USER,
        SMARTSTART_DB_PASSWORD=DB_PASSWORD,
        SMARTSTART_ENV="test",
        # The reference's gunicorn writes no access log either (its default).
        SMARTSTART_API_ACCESS_LOG="false",
    )
    return env


def brain_command(port: int, workers: int) -> list[str]:
    """The Brain as operators run it: `smartstart serve`."""
    return [
        str(Path(sys.executable).with_name("smartstart")),
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def reference_command(port: int) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        "2",
        "--worker-class",
        REF_WORKER_CLASS,
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "--chdir",
        str(ROOT),
    ]
    if REF_WORKER_CLASS == "gthread":
        command += ["--threads", "8"]
    return [*command, "bench.reference.app:app"]


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def running(name: str, command: list[str], env: dict[str, str], log_dir: Path) -> Iterator[Server]:
    """A server started from `command` (whose --port/--bind is `port`), stopped on exit."""
    port = int(command[command.index("--port") + 1]) if "--port" in command else 0
    if "--bind" in command:
        port = int(command[command.index("--bind") + 1].rpartition(":")[2])
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        # Own session: stop_server() signals the whole group (the server and its workers).
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(name, port, process, log)
    try:
        wait_healthy(server)
        if "serve" in command and "--workers" in command:  # ours: one socket per worker
            wait_listening(server, int(command[command.index("--workers") + 1]))
        yield server
    finally:
        stop_server(server)


def wait_healthy(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited: {server.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.base}/healthz", timeout=1) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not answer /healthz in {timeout:.0f} s")


def wait_listening(server: Server, sockets: int, timeout: float = 30.0) -> None:
    """Until `sockets` sockets listen on the port: each worker listens once it is loaded,
    and a load that keeps its connections alive would otherwise pin them all to the first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
        found = sum(
            r.split()[3] == "0A" and int(r.split()[1].split(":")[1], 16) == server.port
            for r in rows
        )
        if found >= sockets:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{server.name}: {sockets} workers did not all listen in {timeout:.0f} s")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=5)


def get_json(url: str, token: str) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read() or b"null")


# -- CPU accounting ---------------------------------------------------------------------
# The machine may be shared: requests/s move with other load, but the CPU time the app
# and its database backends spend per request does not (much). Both are reported.

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(*, tree: int | None = None, ppid: int | None = None) -> float:
    """User + system CPU of process `tree` and its descendants, or of the children of `ppid`."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime
    if ppid is not None:
        chosen = {pid for pid, parent in parents.items() if parent == ppid}
    else:
        # The Brain's supervisor and its workers (each in a process group of its own).
        chosen = {tree} if tree in parents else set()
        grew = True
        while grew:
            more = {pid for pid, parent in parents.items() if parent in chosen} - chosen
            chosen |= more
            grew = bool(more)
    return sum(ticks[pid] for pid in chosen) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have used (every core), from /proc/stat."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
            int(x) for x in f.readline().split()[1:9]
        )
    # Interrupt time is left out: the kernel's network work for our own loopback traffic
    # lands there (more of it for the reference, which opens a connection per request).
    return (user + nice + system + steal) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    """CPU of this process's waited-for children (the wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- wrk --------------------------------------------------------------------------------

LUA = """
local ids = {%(ids)s}
local permissions = {%(permissions)s}
local endpoint = "%(endpoint)s"
local headers = {["Authorization"] = "Bearer %(token)s"}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(seed * 7919 + os.time())
end

function request()
  local id = ids[math.random(#ids)]
  local path
  if endpoint == "users" then
    path = "/api/users/" .. id
  else
    path = "/api/authz/check?user=" .. id .. "&permission="
      .. permissions[math.random(#permissions)]
  end
  return wrk.format("GET", path, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d,'
      .. ' "max_us": %%d, "non2xx": %%d, "socket_errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def write_lua(path: Path, endpoint: str, ids: list[str], token: str) -> Path:
    quoted = ", ".join(json.dumps(i) for i in ids)
    perms = ", ".join(json.dumps(p) for p in CHECK_PERMISSIONS)
    path.write_text(
        LUA % {"ids": quoted, "permissions": perms, "endpoint": endpoint, "token": token}
    )
    return path


@dataclass
class Run:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    app_cpu_ms: float = 0.0  # per request, in the app's processes
    db_cpu_ms: float = 0.0  # per request, in PostgreSQL's backends
    others: float = 0.0  # cores other processes of the machine used during the run


def measured(server: Server, db: Database, script: Path, seconds: int) -> Run:
    """A wrk run against `server`, with the CPU it and the database spent per request."""
    # Requests wrk abandoned at the end of the previous run finish first: they would
    # otherwise add to this run's concurrency.
    time.sleep(DRAIN)
    app0 = cpu_seconds(tree=server.process.pid)
    db0 = cpu_seconds(ppid=db.postmaster)
    wrk0, busy0, start = children_cpu_seconds(), machine_busy_seconds(), time.monotonic()
    run = wrk(server.base, script, seconds)
    requests = max(run.requests, 1)
    app = cpu_seconds(tree=server.process.pid) - app0
    dbcpu = cpu_seconds(ppid=db.postmaster) - db0
    ours = app + dbcpu + children_cpu_seconds() - wrk0
    run.app_cpu_ms = app * 1000 / requests
    run.db_cpu_ms = dbcpu * 1000 / requests
    # Cores the rest of the machine kept busy meanwhile: what this run competed with.
    run.others = max(0.0, (machine_busy_seconds() - busy0 - ours) / (time.monotonic() - start))
    return run


def wrk_args(
    base: str, script: Path, seconds: int, *, threads: int = THREADS, connections: int = CONNECTIONS
) -> list[str]:
    """The wrk command line of one run."""
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        base,
    ]


def wrk(base: str, script: Path, seconds: int) -> Run:
    """One wrk run; its figures from the script's done() line."""
    out = subprocess.run(
        wrk_args(base, script, seconds),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    r = json.loads(line.removeprefix("BENCH "))
    return Run(
        rps=r["requests"] / (r["duration_us"] / 1e6),
        requests=r["requests"],
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        non2xx=r["non2xx"],
        socket_errors=r["socket_errors"],
    )


# -- the benchmark ----------------------------------------------------------------------


@dataclass
class Result:
    endpoint: str
    brain: list[Run]
    reference: list[Run]

    @staticmethod
    def rps(runs: list[Run]) -> float:
        return sum(r.rps for r in runs) / len(runs)

    @staticmethod
    def p99(runs: list[Run]) -> float:
        return max(r.p99_ms for r in runs)  # the worse round: a target is a bound

    @staticmethod
    def cpu(runs: list[Run]) -> float:
        """App + database CPU ms per request."""
        return sum(r.app_cpu_ms + r.db_cpu_ms for r in runs) / len(runs)

    @property
    def ratio(self) -> float:
        return self.rps(self.brain) / self.rps(self.reference)

    @property
    def errors(self) -> int:
        return sum(r.non2xx + r.socket_errors for r in self.brain + self.reference)

    @property
    def met(self) -> bool:
        brain_errors = sum(r.non2xx for r in self.brain)
        return (
            self.ratio >= TARGET_RATIO
            and self.p99(self.brain) <= TARGET_P99_MS
            and not brain_errors
        )


def sanity_check(brain: Server, reference: Server, token: str, ids: list[str]) -> None:
    """Both apps answer the same user and the same check, authorized, before timing them."""
    for server in (brain, reference):
        status, body = get_json(f"{server.base}/api/users/{ids[0]}", token)
        if status != 200 or body.get("id") != ids[0] or "password" in body:
            raise RuntimeError(f"{server.name} GET /api/users/{{id}}: {status} {body}")
        status, body = get_json(
            f"{server.base}/api/authz/check?user={ids[0]}&permission=users:read", token
        )
        if status != 200 or "allowed" not in body:
            raise RuntimeError(f"{server.name} GET /api/authz/check: {status} {body}")


def print_table(results: list[Result]) -> None:
    print(
        f"\n{'endpoint':<22} {'SmartStart req/s':>16} {'p99 ms':>7} {'CPU ms/req':>10} "
        f"{'reference req/s':>16} {'p99 ms':>7} {'CPU ms/req':>10} {'ratio':>6}  target"
    )
    for r in results:
        print(
            f"{r.endpoint:<22} {r.rps(r.brain):>16,.0f} {r.p99(r.brain):>7.1f} "
            f"{r.cpu(r.brain):>10.2f} {r.rps(r.reference):>16,.0f} {r.p99(r.reference):>7.1f} "
            f"{r.cpu(r.reference):>10.2f} {r.ratio:>5.2f}x  {'met' if r.met else 'MISSED'}"
        )
    others = [run.others for r in results for run in r.brain + r.reference]
    print(
        f"(mean req/s and worst p99 over {ROUNDS} alternating rounds of {DURATION} s; wrk "
        f"-t{THREADS} -c{CONNECTIONS}; CPU ms/req = app + PostgreSQL backends; targets: ratio "
        f">= {TARGET_RATIO:.0f}x, SmartStart p99 <= {TARGET_P99_MS:.0f} ms; reference: "
        f"gunicorn -w 2 -k {REF_WORKER_CLASS}; {os.cpu_count()} CPUs, of which other "
        f"processes kept {sum(others) / len(others):.2f} busy on average, "
        f"{max(others):.2f} at most)"
    )
    if max(others) > 0.25:
        print(
            "WARNING: other processes competed for the CPUs: req/s and p99 are understated "
            "and noisy; the CPU ms/req columns are the steadier comparison."
        )


def main() -> int:
    """Run the comparison; 0 when both endpoints met their targets."""
    try:
        require_tools()
    except Missing as e:
        print(f"bench api: {e}")
        return 1
    started = time.monotonic()
    endpoints = {"users": "GET /api/users/{id}", "check": "GET /api/authz/check"}
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="smartstart-bench-api-work-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        # Exits run in reverse: servers stop before the cluster is destroyed.
        db = stack.enter_context(throwaway_database(demo_users=USERS))
        print(
            f"bench api: database ready with {USERS:,} demo users in "
            f"{time.monotonic() - started:.0f} s"
        )
        token = admin_token(db)
        ids = sample_user_ids(db)
        scripts = {e: write_lua(work / f"{e}.lua", e, ids, token) for e in endpoints}
        brain = stack.enter_context(
            running("smartstart", brain_command(free_port(), workers=2), brain_env(db), work)
        )
        ref_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        ref_env["REFERENCE_DSN"] = db.dsn
        reference = stack.enter_context(
            running("reference", reference_command(free_port()), ref_env, work)
        )
        sanity_check(brain, reference, token, ids)
        for script in scripts.values():
            for server in (brain, reference):
                wrk(server.base, script, WARMUP)
        for endpoint, label in endpoints.items():
            result = Result(label, [], [])
            for _ in range(ROUNDS):
                for server, runs in ((brain, result.brain), (reference, result.reference)):
                    run = measured(server, db, scripts[endpoint], DURATION)
                    runs.append(run)
                    print(
                        f"  {label:<22} {server.name:<10} {run.rps:>7,.0f} req/s  "
                        f"p50 {run.p50_ms:5.1f} ms  p99 {run.p99_ms:5.1f} ms  "
                        f"CPU/req app {run.app_cpu_ms:.2f} ms db {run.db_cpu_ms:.2f} ms  "
                        f"non-2xx {run.non2xx}  socket errors {run.socket_errors}  "
                        f"(other processes: {run.others:.2f} cores)"
                    )
            results.append(result)
    print_table(results)
    print(f"bench api: {time.monotonic() - started:.0f} s in total")
    return 0 if all(r.met for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
