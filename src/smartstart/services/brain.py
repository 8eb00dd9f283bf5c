"""The Brain's process: started in the foreground or detached, found, waited for, stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from smartstart.config import Settings
from smartstart.errors import SmartStartError
from smartstart.services import database, process
from smartstart.services.database import DatabaseReady, Say


def pid_file(settings: Settings) -> Path:
    return settings.home_dir / "brain.pid"


def log_file(settings: Settings) -> Path:
    return settings.home_dir / "logs" / "brain.log"


def url(settings: Settings) -> str:
    host = settings.api_host if settings.api_host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    return f"http://{host}:{settings.api_port}"


def _pid_file_entry(settings: Settings) -> tuple[int, str | None, int | None] | None:
    """The pid file's pid and the address that Brain serves (None when there is no file)."""
    try:
        pid, *address = pid_file(settings).read_text().split()
        if len(address) == 2:
            return int(pid), address[0], int(address[1])
        return int(pid), None, None
    except (FileNotFoundError, ValueError):
        return None


def running_pid(settings: Settings) -> int | None:
    """The pid of a running Brain, or None (a stale pid file is removed)."""
    entry = _pid_file_entry(settings)
    if entry is None:
        return None
    if process.alive(entry[0]):
        return entry[0]
    with contextlib.suppress(FileNotFoundError):
        pid_file(settings).unlink()
    return None


def as_running(settings: Settings) -> Settings:
    """settings with the address of the Brain that runs from this home, if one does.

    A Brain started with SMARTSTART_API_PORT=56002 must be found there by a new shell
    without that variable (`status`, `down`), as the cluster's settings are.
    """
    entry = _pid_file_entry(settings)
    if entry is None or entry[1] is None or not process.alive(entry[0]):
        return settings
    return settings.model_copy(update={"api_host": entry[1], "api_port": entry[2]})


def write_pid(settings: Settings, pid: int) -> None:
    path = pid_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid} {settings.api_host} {settings.api_port}\n")


def clear_pid(settings: Settings, pid: int) -> None:
    entry = _pid_file_entry(settings)
    if entry is not None and entry[0] == pid:
        with contextlib.suppress(FileNotFoundError):
            pid_file(settings).unlink()


def claim(settings: Settings) -> socket.socket:
    """The Brain's listening socket, before anything else is touched; refused if taken."""
    from smartstart.api.server import claim

    running = running_pid(settings)
    if running is not None and running != os.getpid():
        raise SmartStartError(
            f"a Brain is already running (pid {running})", "`smartstart down` stops it"
        )
    return claim(settings)


def run(settings: Settings, sock: socket.socket | None = None) -> None:
    """Serve the Brain in this process (and its workers) until interrupted."""
    from smartstart.api.server import serve

    sock = sock or claim(settings)
    write_pid(settings, os.getpid())
    try:
        serve(settings, sock)
    finally:
        clear_pid(settings, os.getpid())


def spawn(settings: Settings) -> int:
    """Fork a detached Brain (output to logs/brain.log) and return its pid.

    Forking lets the Brain reuse this process's imports and start while the
    database is still being prepared; /readyz answers 503 until it is.
    """
    existing = running_pid(settings)
    if existing is not None:
        return existing
    sock = claim(settings)
    log = log_file(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    from smartstart.api.server import serve

    with sock:
        pid = process.fork(
            lambda: serve(settings, sock),
            detach=True,
            log=log,
            on_exit=lambda: clear_pid(settings, os.getpid()),
        )
    write_pid(settings, pid)
    return pid


def _http_get(address: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(address, timeout=timeout) as resp:  # noqa: S310 - our own URL
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def wait_for(settings: Settings, pid: int, path: str = "/readyz", timeout: float = 60) -> None:
    """Block until the Brain answers 200 on path; fail if it exits first."""
    deadline = time.monotonic() + timeout
    address = url(settings) + path
    while time.monotonic() < deadline:
        if not process.alive(pid):
            clear_pid(settings, pid)
            raise SmartStartError(
                f"the Brain exited: {_log_tail(log_file(settings))}",
                f"see {log_file(settings)}",
            )
        with contextlib.suppress(OSError):
            if _http_get(address, timeout=1)[0] == 200:
                return
        time.sleep(0.03)
    raise SmartStartError(f"the Brain did not answer {path} in time", f"see {log_file(settings)}")


def _log_tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"


def start_detached(settings: Settings, say: Say = database.quiet) -> tuple[int, DatabaseReady]:
    """`up --detach`: the Brain forked first, then the database made ready, then wait."""
    pid = spawn(settings)
    try:
        ready = database.ensure_database(settings, say=say)
        wait_for(settings, pid)
    except BaseException:
        stop(settings)
        raise
    return pid, ready


def stop(settings: Settings, timeout: float = 15) -> bool:
    """Stop a running Brain; False when none was running."""
    pid = running_pid(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.alive(pid):
        time.sleep(0.05)
    if process.alive(pid):
        os.kill(pid, signal.SIGKILL)
    clear_pid(settings, pid)
    return True


def status_row(settings: Settings) -> database.ServiceStatus:
    """The Brain's line of `smartstart status`, with its workers when supervised."""
    from smartstart.api.server import worker_state

    pid = running_pid(settings)
    settings = as_running(settings)
    workers = worker_state(settings, supervisor=pid) if pid else None
    state = "running" if pid else "stopped"
    if workers and workers["alive"] < workers["expected"]:
        state = "degraded"
    return {
        "service": "brain",
        "state": state,
        "pid": pid,
        "port": settings.api_port,
        "url": url(settings),
        "version": None,
        "uptime_seconds": None,
        "data_dir": None,
        "workers": workers,
    }
