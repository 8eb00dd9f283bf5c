"""CLI start-up: `smartstart --help`, listings and shell completion, as a shell runs them
(issue 8: ≤ 300 ms each).

Runs the installed `smartstart` in fresh processes against a throwaway seeded cluster (1,000
demo users: start-up, not the query, is measured), each command RUNS times after a warm-up,
and prints the median wall time, the median CPU time (user + system of the child) and the
fastest wall. Listings run with stdout into a pipe (as a script reads them) and on a
pseudo-terminal (as a person does, where Rich draws the table). Completion is one Tab as
Typer's bash completion asks for it. Two floors show what no CLI can beat on this machine: a
bare interpreter, and one importing the PostgreSQL driver; on a shared machine, compare
each command with them (the ratio column), not with the target alone.

The package's modules are byte-compiled first, as an installed package's are: this
environment sets PYTHONDONTWRITEBYTECODE, under which an editable install would compile
every module of ours on every run (~40 ms a command).

    .venv/bin/python -m bench cli
    BENCH_CLI_RUNS=15 .venv/bin/python -m bench cli
"""

from __future__ import annotations

import compileall
import os
import pty
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.bench_api import ADMIN_EMAIL, brain_env, throwaway_database

RUNS = int(os.environ.get("BENCH_CLI_RUNS", "9"))
TARGET_MS = 300.0
SMARTSTART = str(Path(sys.executable).with_name("smartstart"))
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "smartstart"
FLOOR = "python -c 'import psycopg' (floor)"


def _tab(words: str) -> dict[str, str]:
    """The environment of Typer's bash completion asked to complete the last of words."""
    return {
        "_SMARTSTART_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }


# (label, argv, extra environment, on a terminal, judged against the target)
COMMANDS: list[tuple[str, list[str], dict[str, str], bool, bool]] = [
    ("python -c pass (floor)", [sys.executable, "-c", "pass"], {}, False, False),
    (FLOOR, [sys.executable, "-c", "import psycopg"], {}, False, False),
    ("smartstart --help", [SMARTSTART, "--help"], {}, False, True),
    ("smartstart users --help", [SMARTSTART, "users", "--help"], {}, False, True),
    (
        "smartstart users list --limit 20",
        [SMARTSTART, "users", "list", "--limit", "20"],
        {},
        False,
        True,
    ),
    ("smartstart users list --json", [SMARTSTART, "users", "list", "--json"], {}, False, True),
    ("smartstart rbac roles --json", [SMARTSTART, "rbac", "roles", "--json"], {}, False, True),
    ("smartstart journey stages", [SMARTSTART, "journey", "stages"], {}, False, True),
    (
        "smartstart audit list --limit 20",
        [SMARTSTART, "audit", "list", "--limit", "20"],
        {},
        False,
        True,
    ),
    (
        "smartstart auth sessions admin",
        [SMARTSTART, "auth", "sessions", ADMIN_EMAIL],
        {},
        False,
        True,
    ),
    (
        "users list --limit 20 (terminal)",
        [SMARTSTART, "users", "list", "--limit", "20"],
        {},
        True,
        True,
    ),
    (
        "audit list --limit 20 (terminal)",
        [SMARTSTART, "audit", "list", "--limit", "20"],
        {},
        True,
        True,
    ),
    (
        "users list --limit 20 (no bytecode)",
        [SMARTSTART, "users", "list", "--limit", "20"],
        {},
        False,
        False,
    ),
    ("Tab: smartstart us", [SMARTSTART], _tab("smartstart us"), False, True),
    ("Tab: smartstart users li", [SMARTSTART], _tab("smartstart users li"), False, True),
    (
        "Tab: smartstart users list --li",
        [SMARTSTART],
        _tab("smartstart users list --li"),
        False,
        True,
    ),
]


def timed(argv: list[str], env: dict[str, str], terminal: bool) -> tuple[float, float]:
    """(wall, cpu) seconds of one run; fails loudly when the command fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    if terminal:
        status, output = _on_terminal(argv, env)
    else:
        done = subprocess.run(argv, env=env, capture_output=True, check=False)
        status, output = done.returncode, done.stdout + done.stderr
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if status != 0:
        raise SystemExit(f"{argv} failed ({status}): {output.decode()[-400:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _on_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run argv with stdin, stdout and stderr on a pseudo-terminal: (exit status, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child, on the pty
        os.execve(argv[0], argv, env)
    output = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child has closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


def main() -> int:
    compileall.compile_dir(PACKAGE, quiet=1)  # as installed: see the module's docstring
    print(f"load average {os.getloadavg()}; {RUNS} runs of each", flush=True)
    with throwaway_database(demo_users=1000) as db:
        base = brain_env(db) | {"COLUMNS": "120"}
        missed = []
        floor = None
        print(f"{'command':40} {'wall p50':>9} {'cpu p50':>9} {'wall min':>9} {'÷ floor':>8}")
        for label, argv, extra, terminal, judged in COMMANDS:
            env = base | extra
            if "no bytecode" in label:  # what PYTHONDONTWRITEBYTECODE costs an editable install
                for cache in PACKAGE.rglob("__pycache__"):
                    shutil.rmtree(cache)
                env |= {"PYTHONDONTWRITEBYTECODE": "1"}
            timed(argv, env, terminal)  # warm the page cache
            runs = [timed(argv, env, terminal) for _ in range(RUNS)]
            wall = statistics.median(r[0] for r in runs) * 1000
            cpu = statistics.median(r[1] for r in runs) * 1000
            low = min(r[0] for r in runs) * 1000
            if label == FLOOR:
                floor = wall
            ratio = f"{wall / floor:7.2f}x" if floor else ""
            verdict = ""
            if judged:
                verdict = "ok" if wall <= TARGET_MS else f"MISSED (target {TARGET_MS:.0f} ms)"
                if wall > TARGET_MS:
                    missed.append(label)
            print(
                f"{label:40} {wall:7.0f}ms {cpu:7.0f}ms {low:7.0f}ms {ratio:>8}  {verdict}",
                flush=True,
            )
            if "no bytecode" in label:
                compileall.compile_dir(PACKAGE, quiet=1)
    print(f"load average {os.getloadavg()}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
