"""`smartstart up --detach` to the first `/readyz` 200: from nothing, and from a stopped cluster.

Runs the real command in a subprocess against a fresh SMARTSTART_HOME on free ports, polls
`GET /readyz` from process start, then `smartstart down` and the same again from the stopped
cluster. Afterwards a breakdown in a fresh interpreter times each phase of `up` (imports,
initdb, pg start, bootstrap, migrate, seed, Brain) to show where the time goes, replays the
stopped-cluster start with the Brain spawned before the database work (what-ifs, src/ as is),
and times fresh interpreters importing what the CLI and the Brain need (wall and CPU).

    .venv/bin/python -m bench startup          # or: .venv/bin/python -m bench.bench_startup
    BENCH_STARTUP_RUNS=5 .venv/bin/python -m bench startup
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SMARTSTART = Path(sys.executable).with_name("smartstart")
RUNS = int(os.environ.get("BENCH_STARTUP_RUNS", "4"))
MIN_RUNS = 3
# Bounded runtime on a busy machine: after MIN_RUNS no new repetition starts once RUNS_BUDGET
# seconds are spent, and the breakdown and import timings repeat less once BUDGET is spent.
RUNS_BUDGET = 45.0
BUDGET = 70.0
TARGET_COLD = 5.0  # no data directory -> /readyz 200
TARGET_WARM = 1.5  # stopped cluster -> /readyz 200
UP_TIMEOUT = 60.0
POLL = 0.01
ADMIN_PASSWORD = "bench admin password"  # noqa: S105 - throwaway cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_home() -> Path:
    """mkdtemp is 0700; the server's unprivileged OS user must be able to enter it."""
    home = Path(tempfile.mkdtemp(prefix="smartstart-bench-startup-"))
    home.chmod(0o711)
    return home


def bench_env(home: Path, pg_port: int, api_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTSTART_", "PG"))}
    env.update(
        SMARTSTART_HOME=str(home),
        SMARTSTART_PG_PORT=str(pg_port),
        SMARTSTART_API_PORT=str(api_port),
        SMARTSTART_ADMIN_PASSWORD=ADMIN_PASSWORD,
        SMARTSTART_ENV="test",
    )
    return env


def readyz(api_port: int, timeout: float = 1.0) -> int | None:
    """HTTP status of /readyz, or None when nothing answers."""
    url = f"http://127.0.0.1:{api_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own URL
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return None


def timed_up(home: Path, env: dict[str, str], api_port: int) -> tuple[float, float, float]:
    """Run `smartstart up --detach`: seconds to the first /readyz 200, seconds until it exited,
    CPU seconds it and the children it waited for (initdb, pg_ctl; not the Brain or the
    server, which outlive it) used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(SMARTSTART), "up", "--detach"],
        cwd=home,  # no stray .env from the working directory
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready_at = exited_at = None
    try:
        while ready_at is None:
            if exited_at is None and proc.poll() is not None:
                exited_at = time.perf_counter()
                if proc.returncode != 0:
                    out = proc.stdout.read() if proc.stdout else ""
                    raise RuntimeError(
                        f"smartstart up failed ({proc.returncode}):\n{out}{log_tail(home)}"
                    )
            if time.perf_counter() - started > UP_TIMEOUT:
                raise RuntimeError(f"/readyz not 200 within {UP_TIMEOUT:.0f} s")
            if readyz(api_port) == 200:
                ready_at = time.perf_counter()
                break
            time.sleep(POLL)
        proc.wait(timeout=UP_TIMEOUT)
        exited_at = exited_at or time.perf_counter()
        if proc.returncode != 0:
            raise RuntimeError(f"smartstart up exited with {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return ready_at - started, exited_at - started, cpu


def log_tail(home: Path, lines: int = 15) -> str:
    """The end of the Brain's log (the home is deleted afterwards)."""
    try:
        text = (home / "logs" / "brain.log").read_text(errors="replace")
    except OSError:
        return ""
    return "brain.log:\n" + "\n".join(text.splitlines()[-lines:])


def down(home: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(SMARTSTART), "down"], cwd=home, env=env, capture_output=True, timeout=60, check=True
    )
    return time.perf_counter() - started


def force_cleanup(home: Path, env: dict[str, str]) -> None:
    """Stop whatever is left (Brain, postgres) even when `smartstart down` fails, then rm -rf."""
    with contextlib.suppress(Exception):
        down(home, env)
    with contextlib.suppress(OSError, ValueError):
        pid = int((home / "brain.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
    if (home / "pgdata" / "PG_VERSION").exists():
        from smartstart.pg.cluster import Cluster

        with contextlib.suppress(Exception):
            Cluster(home).stop(mode="immediate")
    shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def throwaway_home() -> Iterator[tuple[Path, dict[str, str], int]]:
    home = make_home()
    api_port = free_port()
    env = bench_env(home, free_port(), api_port)
    try:
        yield home, env, api_port
    finally:
        force_cleanup(home, env)


def load_after() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def fmt(s: dict[str, float]) -> str:
    return f"median {s['median']:.2f} s (min {s['min']:.2f}, max {s['max']:.2f}, N={s['n']:.0f})"


# -- where the time goes ---------------------------------------------------------------


def interpreter_cost(code: str, runs: int) -> tuple[float, float]:
    """Median (wall, CPU user+sys) seconds of a fresh interpreter running code.

    CPU time hardly depends on what else the machine is doing; wall time does.
    """
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


IMPORTS = {
    "python -c pass": "pass",
    "CLI start: import smartstart.cli.main": "import smartstart.cli.main",
    "Brain start today (`smartstart serve`): cli.main + uvicorn + api.app": (
        "import smartstart.cli.main, uvicorn, smartstart.api.app"
    ),
    "Brain without the CLI: uvicorn + smartstart.api.app": "import uvicorn, smartstart.api.app",
    "what `up` needs at least: config, psycopg, typer, rich": (
        "import smartstart.config, psycopg, typer, rich.console"
    ),
    "alembic.command (only `upgrade` needs it)": "import alembic.command",
}


def import_costs(runs: int) -> dict[str, tuple[float, float]]:
    """Wall and CPU time of fresh interpreters importing what the CLI and the Brain need."""
    return {label: interpreter_cost(code, runs) for label, code in IMPORTS.items()}


def top_imports(module: str = "smartstart.cli.main", limit: int = 8) -> list[tuple[str, float]]:
    """The slowest top-level imports under `python -X importtime -c 'import module'`."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    # "import time: self [us] | cumulative | <indent>name": per top-level package, its largest
    # cumulative time (what importing it cost the first module that did).
    rows: list[tuple[int, str, float]] = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = len(name) - len(name.lstrip())
        rows.append((depth, name.strip(), int(parts[1]) / 1e6))
    packages: dict[str, float] = {}
    for _, name, cumulative in rows:
        top = name.split(".")[0]
        packages[top] = max(packages.get(top, 0.0), cumulative)
    ranked = sorted(packages.items(), key=lambda kv: kv[1], reverse=True)
    return [(k, v) for k, v in ranked if k != module.split(".")[0]][:limit]


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# A Brain that does not import the CLI (typer, rich, every command group, alembic.command).
LIGHT_BRAIN = """
import uvicorn
from smartstart.api.app import create_app
from smartstart.config import get_settings
s = get_settings()
uvicorn.run(create_app(s), host=s.api_host, port=s.api_port, log_level="warning")
"""
COLD, WARM = "cold", "warm"
EARLY = "warm what-if: Brain spawned before the DB work (src/ unchanged)"
EARLY_LIGHT = "warm what-if: Brain spawned first, without the CLI (LIGHT_BRAIN)"
IMPORTS_STEP = "imports (smartstart.cli.main)"


def phases() -> dict[str, Any]:
    """Time each step `up --detach` takes, in this (fresh) interpreter; prints JSON.

    Runs inside `python -m bench.bench_startup --phases` so that the import phase is real.
    The what-ifs replay the warm start with the Brain spawned first (as `up` could do: the
    Brain's own start-up overlaps the DB work) with today's Brain command and a lighter one.
    """
    timings: dict[str, dict[str, float]] = {COLD: {}, WARM: {}, EARLY: {}, EARLY_LIGHT: {}}
    for key in [k for k in os.environ if k.startswith("SMARTSTART_")]:
        del os.environ[key]  # the developer's shell must not point us elsewhere

    def step(kind: str, name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = fn()
        timings[kind][name] = timings[kind].get(name, 0.0) + time.perf_counter() - started
        return result

    t0, cpu0 = time.perf_counter(), time.process_time()
    import smartstart.cli.main  # noqa: F401 - what `smartstart` imports before anything else

    for kind in timings:
        timings[kind][IMPORTS_STEP] = time.perf_counter() - t0
    cpu: dict[str, float] = {"CLI imports (smartstart.cli.main)": time.process_time() - cpu0}

    from smartstart.api import server
    from smartstart.config import Settings
    from smartstart.db import migrate, seed
    from smartstart.db.engine import connect
    from smartstart.domain import passwords
    from smartstart.pg.cluster import Cluster
    from smartstart.services import brain

    home = make_home()
    os.chdir(home)  # no stray .env for the Brain processes
    api_port = free_port()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=home,
        pg_port=free_port(),
        api_port=api_port,
        admin_password=ADMIN_PASSWORD,
        env="test",
    )
    os.environ.update(bench_env(home, settings.pg_port, api_port))  # for the Brain process
    cluster = Cluster.from_settings(settings)
    url = settings.sqlalchemy_url()
    creds = {
        "db_name": settings.db_name,
        "db_user": settings.db_user,
        "db_password": settings.db_password.get_secret_value(),
    }
    brains: list[subprocess.Popen[bytes]] = []

    def first_ready() -> None:
        while readyz(api_port) != 200:
            time.sleep(POLL)

    def healthy(proc: subprocess.Popen[bytes]) -> None:
        url = f"http://127.0.0.1:{api_port}/healthz"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Brain exited with {proc.returncode}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):  # noqa: S310
                return
            time.sleep(0.05)

    def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        brains.append(proc)
        return proc

    def database(kind: str) -> None:
        step(kind, "check_api_port", lambda: server.claim(settings).close())
        step(
            kind, "initdb (cluster.init)" if kind == COLD else "cluster.init (no-op)", cluster.init
        )
        step(kind, "pg start (pg_ctl start -w)", cluster.start)
        step(kind, "bootstrap (role, db, extensions)", lambda: cluster.bootstrap(**creds))
        step(kind, "connect check", lambda: connect(settings).close())
        current = step(kind, "alembic current + head", lambda: migrate.current_revision(url))
        head = step(kind, "alembic current + head", migrate.head_revision)
        if current != head:
            step(kind, "migrate (alembic upgrade head)", lambda: migrate.upgrade(url))

        def seed_if_empty() -> None:
            with connect(settings) as conn:
                if seed.is_empty(conn):
                    seed.seed(conn, settings)

        label = "seed (1 bcrypt-12 hash, admin password given)" if kind == COLD else "is_empty"
        step(kind, label, seed_if_empty)

    def spawn_healthy() -> int:
        pid = brain.spawn(settings)
        brain.wait_for(settings, pid, "/healthz")
        return pid

    def stop_all() -> None:
        brain.stop(settings)
        while brains:
            proc = brains.pop()
            proc.terminate()
            proc.wait(timeout=15)
        cluster.stop()

    try:
        for kind in (COLD, WARM):
            database(kind)
            pid = step(kind, "Brain spawn to /healthz", lambda: spawn_healthy())
            cpu[f"Brain process until /healthz ({kind}, `smartstart serve`)"] = proc_cpu(pid)
            step(kind, "first /readyz 200", first_ready)
            if kind == COLD:
                started = time.perf_counter()
                brain.stop(settings)
                timings["down"] = {"stop Brain": time.perf_counter() - started}
                started = time.perf_counter()
                cluster.stop()
                timings["down"]["stop PostgreSQL"] = time.perf_counter() - started
            else:
                stop_all()
        today = [sys.executable, "-m", "smartstart.cli.main", "serve"]  # as stack spawns it
        for kind, argv in ((EARLY, today), (EARLY_LIGHT, [sys.executable, "-c", LIGHT_BRAIN])):
            brain = step(kind, "spawn the Brain (Popen)", lambda a=argv: spawn(a))
            database(kind)
            step(kind, "wait for Brain /healthz after the DB work", lambda b=brain: healthy(b))
            if kind == EARLY_LIGHT:
                cpu["Brain process until /healthz (LIGHT_BRAIN)"] = proc_cpu(brain.pid)
            step(kind, "first /readyz 200", first_ready)
            stop_all()
        other: dict[str, float] = {}
        started = time.perf_counter()
        passwords.hash_password(ADMIN_PASSWORD)
        other["one bcrypt cost-12 hash"] = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(2):
            passwords.hash_password(ADMIN_PASSWORD)
        other["2 hashes one after the other (no SMARTSTART_ADMIN_PASSWORD)"] = (
            time.perf_counter() - started
        )
        started = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(passwords.hash_password, [ADMIN_PASSWORD] * 2))
        other["2 hashes in 2 threads (bcrypt releases the GIL)"] = time.perf_counter() - started
        timings["other"] = other
        timings["CPU seconds (hardly affected by other load)"] = cpu
    finally:
        for proc in brains:
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(timeout=5)
        with contextlib.suppress(Exception):
            brain.stop(settings)
        with contextlib.suppress(Exception):
            cluster.stop(mode="immediate")
        os.chdir(ROOT)
        shutil.rmtree(home, ignore_errors=True)
    return timings


def breakdown(runs: int) -> dict[str, dict[str, float]]:
    """Median per phase over a few fresh `--phases` interpreters."""
    samples: list[dict[str, dict[str, float]]] = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-m", "bench.bench_startup", "--phases"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"phase breakdown failed:\n{proc.stdout}\n{proc.stderr}")
        samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    merged: dict[str, dict[str, float]] = {}
    for kind in samples[0]:
        merged[kind] = {
            name: statistics.median(s[kind][name] for s in samples) for name in samples[0][kind]
        }
    return merged


def main() -> int:
    """Time cold and warm `up --detach`, print the breakdown; 0 when both targets are met."""
    times: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        times.setdefault(key, []).append(value)

    load_before = load_after()
    started = time.perf_counter()
    for i in range(RUNS):
        if i >= MIN_RUNS and time.perf_counter() - started > RUNS_BUDGET:
            break
        with throwaway_home() as (home, env, api_port):
            for kind in ("cold", "warm"):
                if kind == "warm":
                    add("down", down(home, env))
                ready, exited, cpu = timed_up(home, env, api_port)
                add(kind, ready)
                add(f"{kind} exit", exited)
                add(f"{kind} cpu", cpu)
    c, w = summary(times["cold"]), summary(times["warm"])
    cold_ok, warm_ok = c["median"] <= TARGET_COLD, w["median"] <= TARGET_WARM
    print("smartstart up --detach -> first GET /readyz 200 (2-core machine, real subprocess)")
    print(f"load average before/after: {load_before} / {load_after()}")
    print(
        f"  from nothing (initdb):   {fmt(c)} — target <= {TARGET_COLD} s: "
        f"{'met' if cold_ok else 'MISSED'}"
    )
    print(
        f"  from a stopped cluster:  {fmt(w)} — target <= {TARGET_WARM} s: "
        f"{'met' if warm_ok else 'MISSED'}"
    )
    for kind in ("cold", "warm"):
        print(
            f"  {kind} `up` exited after {fmt(summary(times[kind + ' exit']))}; CPU of `up` "
            f"(+ initdb, pg_ctl) {fmt(summary(times[kind + ' cpu']))}"
        )
    print(f"  `smartstart down`: {fmt(summary(times['down']))}")

    runs = 2 if time.perf_counter() - started < BUDGET else 1
    print(f"\nWhere the time goes (median of {runs} fresh interpreter(s), seconds):")
    for kind, steps in breakdown(runs).items():
        timeline = kind in (COLD, WARM, EARLY, EARLY_LIGHT, "down")
        print(f"  {kind}: total {sum(steps.values()):.2f}" if timeline else f"  {kind}:")
        for name, seconds in steps.items():
            print(f"    {seconds:6.3f}  {name}")
    runs = 3 if time.perf_counter() - started < BUDGET else 1
    print(f"\nFresh interpreter, median of {runs}: wall s, CPU s")
    for what, (wall_s, cpu_s) in import_costs(runs).items():
        print(f"    {wall_s:6.3f} {cpu_s:6.3f}  {what}")
    print("\nSlowest packages under `python -X importtime -c 'import smartstart.cli.main'`:")
    for name, seconds in top_imports():
        print(f"    {seconds:6.3f}  {name} (cumulative, first importer)")
    return 0 if cold_ok and warm_ok else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--phases"]:
        print(json.dumps(phases()))
        sys.exit(0)
    sys.exit(main())
