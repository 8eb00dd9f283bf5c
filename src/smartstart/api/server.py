"""Serving the Brain: one process, or `api_workers` processes sharing the port.

Uvicorn's own `--workers` shares one listening socket, and whichever worker wakes
first accepts every connection waiting: a client that keeps its connections alive
(a proxy, a load test) can end up with all of them on one worker while the others
idle. Here each worker listens on a socket of its own with SO_REUSEPORT, and the
kernel spreads new connections over them. A small supervisor forks the workers,
restarts one that dies (backing off when one keeps dying, while the others serve),
and stops them all on SIGTERM or SIGINT.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypedDict

from smartstart.config import Settings
from smartstart.errors import SmartStartError
from smartstart.services import process

if TYPE_CHECKING:
    import uvicorn

BACKLOG = 2048
RESTART_DELAY = 1.0  # seconds before a dead worker is first replaced
MAX_BACKOFF = 30.0  # the delay doubles with each exit of that worker in CRASH_WINDOW, to this
CRASH_WINDOW = 60.0
MAX_RESTARTS = 5  # with no worker left alive, more exits than this in CRASH_WINDOW: give up
STOP_TIMEOUT = 15.0  # seconds the workers get to finish before SIGKILL
STATE_FILE = "brain-workers.json"


def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    """Serve the Brain on sock (claimed here when not given) until SIGTERM or Ctrl-C."""
    sock = sock or claim(settings)
    if settings.api_workers == 1:
        _run_uvicorn(settings, sockets=[sock])
        return
    from smartstart.api import metrics

    metrics.prepare_workers(settings)  # before the fork: one /metrics for all workers
    Supervisor(settings, lambda s: _run_worker(settings, s), sock).run()


def _run_worker(settings: Settings, sock: socket.socket | None) -> None:
    """One supervised worker: on the claimed socket, or on one of its own once loaded."""
    _run_uvicorn(settings, sockets=[sock] if sock is not None else None, listen_late=True)


def _run_uvicorn(
    settings: Settings, sockets: list[socket.socket] | None, *, listen_late: bool = False
) -> None:
    import uvicorn

    from smartstart.api.app import create_app

    app = create_app(settings)
    # Everything alive now (modules, the app, its schemas: ~120,000 objects) lives as long
    # as the process. Frozen, it is left out of the garbage collector's full collections,
    # which otherwise stopped a loaded worker for 90-190 ms now and then (the p99). No
    # gc.collect() first: it would cost ~70 ms of startup to free ~120 objects.
    gc.freeze()
    if listen_late and sockets is None:
        # Listening only now, loaded: the kernel hands a share of new connections to
        # each socket on the port, and those queued on a worker still loading waited
        # seconds for it (or were reset if it failed to start) while another was idle.
        try:
            sockets = [listen(settings.api_host, settings.api_port)]
        except OSError as e:
            print(
                f"worker [{os.getpid()}]: cannot listen on port {settings.api_port}: {e}",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(3)
    server = uvicorn.Server(uvicorn_config(settings, app))
    # Like uvicorn.run: uvicorn re-raises the signal that stopped it once it has shut
    # down, and Ctrl-C is then no error; a server that never started is one.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    if not server.started:
        sys.exit(3)


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    """How the Brain's uvicorn serves `app` (our HTTP protocol: see api/wire.py)."""
    import uvicorn

    from smartstart.api.wire import Protocol
    from smartstart.logs import log_config

    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        log_config=log_config(settings),  # JSON lines, or lines for a person on a terminal
        access_log=settings.api_access_log,
        http=Protocol,
        # X-Forwarded-For is applied by the app, only from SMARTSTART_TRUSTED_PROXIES
        # (uvicorn's default believed any peer on loopback).
        proxy_headers=False,
    )


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listen(host: str, port: int) -> socket.socket:
    """A listening socket of one worker's own on the shared port."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    return sock


def claim(settings: Settings) -> socket.socket:
    """The Brain's first listening socket; refused when anything listens on the port.

    SO_REUSEPORT would let a second Brain of ours share the port unnoticed: a plain
    bind first proves that nothing, ours or not, listens there.
    """
    host, port = settings.api_host, settings.api_port
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        return listen(host, port)
    except OSError as e:
        raise SmartStartError(
            f"port {port} on {host} is already in use by another program ({e.strerror})",
            "stop that program or set SMARTSTART_API_PORT to a free port",
        ) from None


class WorkerState(TypedDict):
    """What a supervisor reports of its workers."""

    alive: int
    expected: int
    restarts: int


def state_path(settings: Settings) -> Path:
    return settings.home_dir / STATE_FILE


def worker_state(settings: Settings, supervisor: int | None = None) -> WorkerState | None:
    """What the supervisor pid last wrote about its workers (None: not supervised)."""
    try:
        with open(state_path(settings)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("supervisor") != (supervisor or os.getppid()):
        return None  # another (or a dead) supervisor's file
    try:
        return WorkerState(
            alive=int(state["alive"]),
            expected=int(state["expected"]),
            restarts=int(state["restarts"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


class Supervisor:
    """Forks `settings.api_workers` workers running `target(socket)`, and keeps them running.

    The first worker gets the claimed socket; the others, and every replacement, get None
    and listen on the port themselves once they can serve.
    """

    def __init__(
        self,
        settings: Settings,
        target: Callable[[socket.socket | None], None],
        sock: socket.socket | None = None,
    ) -> None:
        self.settings = settings
        self.count = settings.api_workers
        self.target = target
        self.first_socket = sock
        self.workers: dict[int, int] = {}  # pid → worker number
        self.due: dict[int, float] = {}  # worker number → when it is restarted
        self.exits: dict[int, list[float]] = {}  # worker number → its recent exits
        self.recent: list[float] = []  # every worker's exits within CRASH_WINDOW
        self.restarts = 0
        self.stopping = False
        self.failed = False

    def log(self, message: str) -> None:
        print(f"supervisor [{os.getpid()}]: {message}", file=sys.stderr, flush=True)

    def spawn(self, number: int) -> None:
        sock, self.first_socket = self.first_socket, None
        # The worker owns its socket: closed here, it goes away with the worker, and the
        # kernel stops handing that worker's share of connections to nobody.
        with sock or contextlib.nullcontext():
            pid = process.fork(lambda: self.target(sock))
        self.workers[pid] = number
        self.log(f"worker {number} started (pid {pid})")
        self.write_state()

    def exited(self, number: int) -> None:
        """Schedule worker number's restart, later each time it dies again."""
        now = time.monotonic()
        self.recent = [t for t in self.recent if now - t < CRASH_WINDOW] + [now]
        mine = [t for t in self.exits.get(number, []) if now - t < CRASH_WINDOW] + [now]
        self.exits[number] = mine
        if not self.workers and len(self.recent) > MAX_RESTARTS:
            self.log(f"no worker alive after {len(self.recent)} exits within {CRASH_WINDOW:.0f} s")
            self.failed = True
            self.stop(signal.SIGTERM)
            return
        delay = min(RESTART_DELAY * 2 ** (len(mine) - 1), MAX_BACKOFF)
        self.due[number] = now + delay
        self.log(f"worker {number} restarts in {delay:g} s; {len(self.workers)} still serving")

    def stop(self, signum: int, _frame: FrameType | None = None) -> None:
        if not self.stopping:
            self.log(f"{signal.Signals(signum).name}: stopping {len(self.workers)} worker(s)")
        self.stopping = True
        self.due.clear()
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self) -> None:
        """Until every worker has exited after a stop; raises if none could be kept alive."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.stop)
        try:
            for number in range(1, self.count + 1):
                self.spawn(number)
            self._loop()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(state_path(self.settings))
        if self.failed:
            raise SmartStartError(
                "the Brain's workers kept exiting", "the lines before this one say why"
            )

    def _loop(self) -> None:
        kill_at: float | None = None
        # Polling, not a blocking waitpid: a signal must not leave us waiting for a
        # worker that ignores SIGTERM, and restarts are due at their own times.
        while self.workers or self.due:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:  # every worker is waiting for its restart
                pid, status = 0, 0
            if pid == 0:
                if self.stopping:
                    kill_at = kill_at or time.monotonic() + STOP_TIMEOUT
                    if time.monotonic() > kill_at:
                        self.kill_all()
                        kill_at = float("inf")
                now = time.monotonic()
                for number in [n for n, due in self.due.items() if due <= now]:
                    del self.due[number]
                    self.restarts += 1
                    self.spawn(number)
                time.sleep(0.05)
                continue
            if pid not in self.workers:
                continue
            number = self.workers.pop(pid)
            if not self.stopping:
                self.log(f"worker {number} (pid {pid}) exited with status {_exit_code(status)}")
                self.exited(number)
            self.write_state()

    def write_state(self) -> None:
        """What /readyz and `smartstart status` report: workers alive of expected, restarts."""
        state = {
            "supervisor": os.getpid(),
            "expected": self.count,
            "alive": len(self.workers),
            "restarts": self.restarts,
        }
        path = state_path(self.settings)
        with contextlib.suppress(OSError):
            path.with_suffix(".tmp").write_text(json.dumps(state))
            os.replace(path.with_suffix(".tmp"), path)

    def kill_all(self) -> None:
        for pid, number in list(self.workers.items()):
            self.log(f"worker {number} (pid {pid}) did not stop in {STOP_TIMEOUT:.0f} s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _exit_code(status: int) -> str:
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    return str(os.waitstatus_to_exitcode(status))
