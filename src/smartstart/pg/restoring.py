"""A marker in the home directory while a restore swaps the database in.

While a point-in-time restore stops the server, renames data directories and starts it
again (or a logical restore renames databases), the Brain meets a database it cannot reach.
The marker lets it say why (503 `restoring`, with Retry-After) instead of a bare outage. It
is read only on that error path, so it costs the requests that succeed nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from smartstart.services.process import alive

MARK = ".restoring.json"
# After the swap the pools reconnect with a backoff: an answer in those seconds still owes
# its failure to the restore.
GRACE = 10.0  # seconds


@dataclass(frozen=True)
class Restoring:
    """What is being restored, since when, by which process; ended once it finished."""

    kind: str  # "pitr" or "logical"
    what: str  # e.g. "point-in-time recovery to 2026-11-29 12:00:00 UTC"
    since: str  # ISO 8601, UTC
    pid: int
    ended: float | None = None  # time.time() when the swap finished


def _write(path: Path, mark: Restoring) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(mark.__dict__))
    tmp.chmod(0o644)  # the Brain may run as another user
    os.replace(tmp, path)


@contextlib.contextmanager
def marked(home: Path, kind: str, what: str) -> Iterator[None]:
    """The marker for the duration of the block (then marked ended, for GRACE seconds).

    A marker that cannot be written (a read-only home) is no reason to stop a restore."""
    path = home / MARK
    mark = Restoring(kind, what, datetime.now(UTC).isoformat(timespec="seconds"), os.getpid())
    try:
        _write(path, mark)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            _write(path, Restoring(**{**mark.__dict__, "ended": time.time()}))


def current(home: Path, now: float | None = None) -> Restoring | None:
    """The restore swapping the database in now (or within GRACE seconds); None otherwise,
    and for the leftover of a restore that was killed."""
    try:
        mark = Restoring(**json.loads((home / MARK).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if mark.ended is not None:
        return mark if (now or time.time()) - mark.ended <= GRACE else None
    return mark if alive(mark.pid) else None
