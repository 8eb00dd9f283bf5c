"""Processes of our own: the one way SmartStart forks a child, and liveness checks."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1


def alive(pid: int) -> bool:
    """True while pid runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X")
    return True


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def fork(
    target: Callable[[], None],
    *,
    detach: bool = False,
    log: Path | None = None,
    on_exit: Callable[[], None] | None = None,
) -> int:
    """Run target in a forked child and return its pid; the child never returns.

    detach: a session of its own (Ctrl-C in the launching shell must not reach it),
    output appended to log. Otherwise: a process group of its own (the parent relays
    signals once) and a child that dies with its parent.
    """
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid != 0:
        return pid
    code = 0  # pragma: no cover - everything below runs in the child
    try:
        if detach:
            os.setsid()
        else:
            os.setpgid(0, 0)
            _die_with_parent()
            if os.getppid() != parent:
                os._exit(0)  # the parent died before PDEATHSIG was armed
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        if log is not None:
            devnull = os.open(os.devnull, os.O_RDONLY)
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(devnull, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
        target()
    except BaseException:  # noqa: BLE001 - report it, then leave as a failure
        traceback.print_exc()
        code = 1
    finally:
        if on_exit is not None:
            with contextlib.suppress(BaseException):
                on_exit()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
