"""Serving the Brain: one process, or `api_workers` processes sharing the port.

Uvicorn's own `--workers` shares one listening socket, and whichever worker wakes
first accepts every connection waiting: a client that keeps its connections alive
(a proxy, a load test) can end up with all of them on one worker while the others
idle. Here each worker listens on a socket of its own with SO_REUSEPORT, and the
kernel spreads new connections over them. A small supervisor forks the workers,
restarts one that dies, and stops them all on SIGTERM or SIGINT.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType

from smartstart.config import Settings
from smartstart.errors import SmartStartError

BACKLOG = 2048
RESTART_DELAY = 1.0  # seconds before a dead worker is replaced
CRASH_WINDOW = 60.0  # seconds: this many restarts within it means a crash loop
MAX_RESTARTS = 5
STOP_TIMEOUT = 15.0  # seconds the workers get to finish before SIGKILL
PR_SET_PDEATHSIG = 1


def serve(settings: Settings) -> None:
    """Serve the Brain in this process (and its workers) until SIGTERM or Ctrl-C."""
    # Callers have checked that the port is free (stack.check_api_port): SO_REUSEPORT
    # would otherwise let a second Brain of ours share it.
    if settings.api_workers == 1:
        _run_uvicorn(settings, sockets=None)
        return
    from smartstart.api import metrics

    metrics.prepare_workers(settings)  # before the fork: one /metrics for all workers
    Supervisor(settings, lambda: _worker(settings)).run()


def _run_uvicorn(settings: Settings, sockets: list[socket.socket] | None) -> None:
    import uvicorn

    from smartstart.api.app import create_app

    app = create_app(settings)
    # Everything alive now (modules, the app, its schemas: ~120,000 objects) lives as long
    # as the process. Frozen, it is left out of the garbage collector's full collections,
    # which otherwise stopped a loaded worker for 90-190 ms now and then (the p99). No
    # gc.collect() first: it would cost ~70 ms of startup to free ~120 objects.
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        access_log=settings.api_access_log,
        # X-Forwarded-For is applied by the app, only from SMARTSTART_TRUSTED_PROXIES
        # (uvicorn's default believed any peer on loopback).
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    # Like uvicorn.run: uvicorn re-raises the signal that stopped it once it has shut
    # down, and Ctrl-C is then no error; a server that never started is one.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    if not server.started:
        sys.exit(3)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listen(host: str, port: int) -> socket.socket:
    """A listening socket of this worker's own on the shared port."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    return sock


def _worker(settings: Settings) -> None:
    _run_uvicorn(settings, sockets=[listen(settings.api_host, settings.api_port)])


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when the supervisor dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Forks `settings.api_workers` workers running `target`, and keeps them running."""

    def __init__(self, settings: Settings, target: Callable[[], None]) -> None:
        self.count = settings.api_workers
        self.target = target
        self.workers: dict[int, int] = {}  # pid → worker number
        self.restarts: list[float] = []
        self.stopping = False
        self.failed = False

    def log(self, message: str) -> None:
        print(f"supervisor [{os.getpid()}]: {message}", file=sys.stderr, flush=True)

    def spawn(self, number: int) -> None:
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            code = 0
            try:
                # Its own process group: Ctrl-C reaches the supervisor alone, which
                # then stops each worker once (a second signal makes uvicorn hurry).
                os.setpgid(0, 0)
                _die_with_parent()
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                if os.getppid() != parent:
                    os._exit(0)  # the supervisor died before PDEATHSIG was armed
                self.target()
            except BaseException:  # noqa: BLE001 - report it, then leave as a failure
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.workers[pid] = number
        self.log(f"worker {number} started (pid {pid})")

    def stop(self, signum: int, _frame: FrameType | None = None) -> None:
        if not self.stopping:
            self.log(f"{signal.Signals(signum).name}: stopping {len(self.workers)} worker(s)")
        self.stopping = True
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self) -> None:
        """Until every worker has exited after a stop; raises if they kept crashing."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.stop)
        for number in range(1, self.count + 1):
            self.spawn(number)
        kill_at: float | None = None
        # Polling, not a blocking waitpid: a signal must not leave us waiting for a
        # worker that ignores SIGTERM.
        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if self.stopping:
                    kill_at = kill_at or time.monotonic() + STOP_TIMEOUT
                    if time.monotonic() > kill_at:
                        self.kill_all()
                        kill_at = float("inf")
                time.sleep(0.1)
                continue
            if pid not in self.workers:
                continue
            number = self.workers.pop(pid)
            if self.stopping:
                continue
            self.log(f"worker {number} (pid {pid}) exited with status {_exit_code(status)}")
            if self.crash_looping():
                self.log(f"more than {MAX_RESTARTS} restarts within {CRASH_WINDOW:.0f} s")
                self.failed = True
                self.stop(signal.SIGTERM)
                continue
            time.sleep(RESTART_DELAY)
            if not self.stopping:
                self.spawn(number)
        if self.failed:
            raise SmartStartError(
                "the Brain's workers kept exiting", "the lines before this one say why"
            )

    def crash_looping(self) -> bool:
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < CRASH_WINDOW] + [now]
        return len(self.restarts) > MAX_RESTARTS

    def kill_all(self) -> None:
        for pid, number in list(self.workers.items()):
            self.log(f"worker {number} (pid {pid}) did not stop in {STOP_TIMEOUT:.0f} s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _exit_code(status: int) -> str:
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    return str(os.waitstatus_to_exitcode(status))
