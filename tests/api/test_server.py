"""Serving the Brain with several workers: one port, a supervisor, clean stops."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from smartstart.api import server
from smartstart.cli.main import app as cli
from smartstart.config import Settings
from smartstart.errors import SmartStartError
from tests.conftest import free_port, process_env


def children(pid: int) -> set[int]:
    """The live child processes of pid."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.add(int(entry.name))
    return found


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def listeners(port: int) -> int:
    """How many sockets listen on the TCP port (IPv4), whoever holds them."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        count += state == "0A" and int(local.split(":")[1], 16) == port
    return count


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def serve(seeded_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start `smartstart serve` with arguments; returns (process, base URL)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **env_extra: str) -> tuple[subprocess.Popen[bytes], str, int]:
        port = free_port()
        env = {**process_env(seeded_settings), **env_extra}
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("smartstart")),
                "serve",
                "--port",
                str(port),
                *args,
            ],
            env=env,
            cwd=tmp_path,
            stdout=(tmp_path / "brain.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(proc)
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "brain.log").read_text()
            try:
                return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, "the Brain to answer /readyz")
        return proc, base, port

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_workers_share_the_port_and_a_dead_one_is_replaced(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    proc, base, port = serve("--workers", "2")

    def two_workers() -> set[int] | None:
        found = children(proc.pid)
        return found if len(found) == 2 else None

    workers = wait_for(two_workers, "2 workers")
    wait_for(lambda: listeners(port) == 2, "both workers to listen")
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    # Until the victim's socket is closed, the kernel still queues connections on it (they
    # are reset when it closes): wait for that, not for its replacement. Not for the pid to
    # look dead: a killed thread-group leader shows "Z" while its other threads, which
    # hold the socket open, are still exiting (two CI runs got a reset that way).
    wait_for(lambda: victim not in children(proc.pid), "the victim to exit")
    wait_for(lambda: listeners(port) == 1, "the victim's socket to close")
    # The other worker answers every request, while the replacement loads too: it listens
    # only once it can serve, so no connection waits on it (or is reset if it fails).
    answers: list[int] = []
    deadline = time.monotonic() + 60
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as c:
        while len(answers) < 20 or listeners(port) < 2:
            assert time.monotonic() < deadline, (tmp_path / "brain.log").read_text()
            try:
                answers.append(c.get(f"{base}/healthz").status_code)
            except httpx.TransportError as e:
                raise AssertionError(f"{e!r}\n" + (tmp_path / "brain.log").read_text()) from e
    assert set(answers) == {200}
    replaced = wait_for(
        lambda: (found := two_workers()) and victim not in found and found,
        "the dead worker's replacement",
    )
    assert len(replaced & workers) == 1
    assert "exited with status SIGKILL" in (tmp_path / "brain.log").read_text()

    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in replaced)
    assert wait_for(lambda: port_free(port), "the port to be free", timeout=10)


def test_one_worker_is_served_without_a_supervisor(serve: Callable[..., Any]) -> None:
    proc, base, _ = serve("--workers", "1")
    assert children(proc.pid) == set()
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}


def test_a_taken_port_is_refused_before_any_worker_starts(
    cli_env: Any, seeded_settings: Settings
) -> None:
    cli_env(seeded_settings)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--workers", "2", "--port", str(port)])
    assert result.exit_code == 1
    assert f"port {port}" in result.output and "in use" in result.output


def test_a_bad_worker_count_is_refused(cli_env: Any, seeded_settings: Settings) -> None:
    cli_env(seeded_settings)
    result = CliRunner().invoke(cli, ["serve", "--workers", "0"])
    assert result.exit_code == 2
    assert "--workers" in result.output


@pytest.fixture
def own_signals() -> Iterator[None]:
    """The supervisor installs signal handlers in this process: put them back after."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def supervised(settings: Settings, workers: int) -> Settings:
    return settings.model_copy(update={"api_workers": workers, "api_port": free_port()})


def test_workers_that_all_keep_crashing_give_up_with_an_error(
    monkeypatch: pytest.MonkeyPatch, own_signals: None, seeded_settings: Settings
) -> None:
    monkeypatch.setattr(server, "RESTART_DELAY", 0.01)

    def crash(_sock: socket.socket) -> None:
        raise RuntimeError("cannot start")

    supervisor = server.Supervisor(supervised(seeded_settings, 2), crash)
    with pytest.raises(SmartStartError, match="kept exiting"):
        supervisor.run()
    assert supervisor.workers == {}
    # It gives up at the first check past the limit; both workers may have exited by then.
    assert server.MAX_RESTARTS < len(supervisor.recent) <= server.MAX_RESTARTS + 2


def test_a_worker_killed_again_and_again_backs_off_while_the_other_serves(
    monkeypatch: pytest.MonkeyPatch, own_signals: None, seeded_settings: Settings
) -> None:
    # Six kill -9s of one worker within a minute used to stop the healthy one too.
    monkeypatch.setattr(server, "RESTART_DELAY", 0.05)
    monkeypatch.setattr(server, "MAX_BACKOFF", 0.4)
    settings = supervised(seeded_settings, 2)
    supervisor = server.Supervisor(settings, lambda _sock: time.sleep(120))
    seen: dict[str, Any] = {"delays": []}

    def attack() -> None:
        def worker(number: int) -> int | None:
            return next((p for p, n in list(supervisor.workers.items()) if n == number), None)

        healthy = wait_for(lambda: worker(1), "worker 1")
        for _ in range(6):
            victim = wait_for(lambda: worker(2), "worker 2")
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda v=victim: (p := worker(2)) and p != v, "worker 2 again")
            seen["delays"].append(time.monotonic() - killed)
        seen["healthy"] = worker(1) == healthy and Path(f"/proc/{healthy}").exists()

        def state() -> dict[str, Any] | None:
            # The supervisor writes its state file just after it starts the replacement.
            try:
                found = json.loads(server.state_path(settings).read_text())
            except (OSError, ValueError):
                return None
            return found if found["restarts"] == 6 and found["alive"] == 2 else None

        seen["state"] = wait_for(state, "the state file to count the sixth restart")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=attack).start()
    supervisor.run()  # returns (no error) once the attack thread stops it
    assert seen["healthy"], "the healthy worker was stopped"
    assert seen["state"] == {
        "supervisor": os.getpid(),
        "expected": 2,
        "alive": 2,
        "restarts": 6,
    }
    # Exponential back-off, capped: the later restarts wait longer than the first.
    assert seen["delays"][-1] > seen["delays"][0] and seen["delays"][-1] > 0.35
    assert not server.state_path(settings).exists()  # removed when the supervisor stops


def test_readyz_and_status_report_the_workers(
    serve: Callable[..., Any], cli_env: Any, seeded_settings: Settings
) -> None:
    proc, base, port = serve("--workers", "2")
    first = wait_for(lambda: (f := children(proc.pid)) and len(f) == 2 and f, "2 workers")
    body = httpx.get(f"{base}/readyz").json()
    assert body["status"] == "ready"
    assert body["workers"] == {"alive": 2, "expected": 2, "restarts": 0}
    os.kill(min(first), signal.SIGKILL)
    wait_for(lambda: (f := children(proc.pid)) and len(f) == 2 and f != first, "a replacement")

    def restarted() -> dict[str, Any] | None:
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as c:
            answer = c.get(f"{base}/readyz").json()
        return answer if answer["workers"]["restarts"] == 1 else None

    assert wait_for(restarted, "a restart in /readyz")["workers"]["alive"] == 2
    cli_env(seeded_settings)
    result = CliRunner().invoke(cli, ["status", "--json"])
    assert result.exit_code == 0, result.output
    brain = {r["service"]: r for r in json.loads(result.output)["items"]}["brain"]
    assert brain["pid"] == proc.pid and brain["state"] == "running"
    assert brain["workers"] == {"alive": 2, "expected": 2, "restarts": 1}


def test_a_worker_ignoring_sigterm_is_killed(
    monkeypatch: pytest.MonkeyPatch, own_signals: None, seeded_settings: Settings
) -> None:
    monkeypatch.setattr(server, "STOP_TIMEOUT", 0.5)

    def stubborn(_sock: socket.socket) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)

    supervisor = server.Supervisor(supervised(seeded_settings, 1), stubborn)
    threading.Timer(0.5, os.kill, [os.getpid(), signal.SIGTERM]).start()
    started = time.monotonic()
    supervisor.run()
    assert supervisor.workers == {}
    assert time.monotonic() - started < 10


def test_the_serving_process_freezes_its_startup_heap(
    monkeypatch: pytest.MonkeyPatch, seeded_settings: Settings
) -> None:
    # Full garbage collections walking the startup heap stopped loaded workers for
    # 90-190 ms (docs/benchmarks.md): it must be frozen before uvicorn serves.
    import gc

    import uvicorn

    seen: dict[str, int] = {}

    def fake_run(self: uvicorn.Server, sockets: Any = None) -> None:
        seen["frozen"] = gc.get_freeze_count()
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    gc.unfreeze()
    try:
        server._run_uvicorn(seeded_settings, sockets=None)
    finally:
        gc.unfreeze()
    assert seen["frozen"] > 10_000


def test_only_the_first_worker_gets_the_claimed_socket(
    monkeypatch: pytest.MonkeyPatch, own_signals: None, seeded_settings: Settings, tmp_path: Path
) -> None:
    monkeypatch.setattr(server, "RESTART_DELAY", 0.01)
    settings = supervised(seeded_settings, 3)
    claimed = server.claim(settings)
    got = tmp_path / "sockets"

    def record(sock: socket.socket | None) -> None:
        with got.open("a") as f:
            f.write(f"{'none' if sock is None else sock.getsockname()[1]}\n")

    with pytest.raises(SmartStartError, match="kept exiting"):  # its workers just return
        server.Supervisor(settings, record, claimed).run()
    # (the restarts' records follow the first three)
    assert got.read_text().splitlines()[:3] == [str(settings.api_port), "none", "none"]
    assert claimed.fileno() == -1  # closed in the supervisor: the worker owned it


def test_a_late_worker_listens_only_once_loaded(
    monkeypatch: pytest.MonkeyPatch, seeded_settings: Settings
) -> None:
    import gc

    import uvicorn

    settings = supervised(seeded_settings, 2)
    seen: dict[str, Any] = {}

    def fake_run(self: uvicorn.Server, sockets: Any = None) -> None:
        seen["frozen"] = gc.get_freeze_count()
        seen["port"] = [s.getsockname()[1] for s in sockets]
        seen["listening"] = listeners(settings.api_port)
        for s in sockets:
            s.close()
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    assert listeners(settings.api_port) == 0
    gc.unfreeze()
    try:
        server._run_worker(settings, None)
    finally:
        gc.unfreeze()
    assert seen["frozen"] > 10_000  # the app was loaded before the socket was made
    assert seen["port"] == [settings.api_port] and seen["listening"] == 1
