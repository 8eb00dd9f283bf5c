"""The running platform: its database (embedded or external) and the Brain process."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from smartstart.config import Settings
from smartstart.db.engine import connect
from smartstart.errors import ConfigurationError, SmartStartError
from smartstart.pg.cluster import Cluster, port_in_use

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def cluster_for(settings: Settings) -> Cluster:
    if not settings.embedded:
        raise ConfigurationError(
            "SMARTSTART_DATABASE_URL is set: SmartStart does not start, stop or reset that server",
            "manage it with its own tools, or unset SMARTSTART_DATABASE_URL to use the "
            "embedded one",
        )
    return Cluster.from_settings(settings)


@dataclass
class DatabaseReady:
    """What `ensure_database` did."""

    initialized: bool = False
    started: bool = False
    migrated_from: str | None = None
    revision: str | None = None
    seeded: bool = False
    credentials: dict[str, str] = field(default_factory=dict)
    credentials_file: Path | None = None
    credentials_kept: Path | None = None  # the credentials file the seed replaced, kept


def start_database(settings: Settings) -> tuple[bool, bool]:
    """Initialise (first time) and start the embedded server: (initialized, started)."""
    cluster = cluster_for(settings)
    initialized = cluster.init()
    started = cluster.start()
    cluster.bootstrap(
        db_name=settings.db_name,
        db_user=settings.db_user,
        db_password=settings.db_password.get_secret_value(),
    )
    return initialized, started


def ensure_database(
    settings: Settings, say: Say = _quiet, seed_if_empty: bool = True
) -> DatabaseReady:
    """Bring the database to a usable state: running, migrated to head, seeded if empty."""
    from smartstart.db import migrate, seed

    ready = DatabaseReady()
    if settings.embedded:
        ready.initialized, ready.started = start_database(settings)
        if ready.initialized:
            say(f"initialised a PostgreSQL cluster in {Cluster.from_settings(settings).data_dir}")
        if ready.started:
            say(f"started PostgreSQL on {settings.pg_host}:{settings.pg_port}")
    url = settings.sqlalchemy_url()
    with connect(settings):
        pass  # a readable error now beats an Alembic traceback later
    ready.migrated_from = migrate.current_revision(url)
    head = migrate.head_revision()
    if ready.migrated_from != head:
        migrate.upgrade(url)
        say(f"migrated the schema {ready.migrated_from or 'base'} → {head}")
    ready.revision = head
    if seed_if_empty:
        with connect(settings) as conn:
            if seed.is_empty(conn):
                report = seed.seed(conn, settings)
                ready.seeded = True
                ready.credentials = dict(report.credentials)
                ready.credentials_file = report.credentials_file
                ready.credentials_kept = report.credentials_kept
                say("seeded roles, permissions, journey stages and the guide's users")
    return ready


# -- the Brain process ---------------------------------------------------------


def brain_pid_file(settings: Settings) -> Path:
    return settings.home_dir / "brain.pid"


def brain_log_file(settings: Settings) -> Path:
    return settings.home_dir / "logs" / "brain.log"


def brain_url(settings: Settings) -> str:
    host = settings.api_host if settings.api_host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    return f"http://{host}:{settings.api_port}"


def _alive(pid: int) -> bool:
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


def brain_pid(settings: Settings) -> int | None:
    """The pid of a running Brain, or None (a stale pid file is removed)."""
    path = brain_pid_file(settings)
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if _alive(pid):
        return pid
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return None


def write_brain_pid(settings: Settings, pid: int) -> None:
    path = brain_pid_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n")


def clear_brain_pid(settings: Settings, pid: int) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        if int(brain_pid_file(settings).read_text().strip()) == pid:
            brain_pid_file(settings).unlink()


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own URL
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def check_api_port(settings: Settings) -> None:
    if brain_pid(settings) is None and port_in_use(settings.api_host, settings.api_port):
        raise SmartStartError(
            f"port {settings.api_port} on {settings.api_host} is already in use by another program",
            "stop that program or set SMARTSTART_API_PORT to a free port",
        )


def run_brain(settings: Settings) -> None:
    """Serve the Brain in this process (and its workers) until interrupted."""
    from smartstart.api.server import serve

    serve(settings)


def spawn_brain(settings: Settings) -> int:
    """Fork a detached Brain (output to logs/brain.log) and return its pid.

    Forking lets the Brain reuse this process's imports and start while the
    database is still being prepared; /readyz answers 503 until it is.
    """
    existing = brain_pid(settings)
    if existing is not None:
        return existing
    check_api_port(settings)
    log = brain_log_file(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        code = 0
        try:
            os.setsid()  # Ctrl-C in the launching shell must not reach it
            devnull = os.open(os.devnull, os.O_RDONLY)
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(devnull, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            run_brain(settings)
        except BaseException:  # noqa: BLE001 - the log is the only place to say it
            traceback.print_exc()
            code = 1
        finally:
            clear_brain_pid(settings, os.getpid())
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    write_brain_pid(settings, pid)
    return pid


def wait_for_brain(
    settings: Settings, pid: int, path: str = "/readyz", timeout: float = 60
) -> None:
    """Block until the Brain answers 200 on path; fail if it exits first."""
    deadline = time.monotonic() + timeout
    url = brain_url(settings) + path
    while time.monotonic() < deadline:
        if not _alive(pid):
            clear_brain_pid(settings, pid)
            raise SmartStartError(
                f"the Brain exited: {_log_tail(brain_log_file(settings))}",
                f"see {brain_log_file(settings)}",
            )
        with contextlib.suppress(OSError):
            if http_get(url, timeout=1)[0] == 200:
                return
        time.sleep(0.03)
    raise SmartStartError(
        f"the Brain did not answer {path} in time", f"see {brain_log_file(settings)}"
    )


def _log_tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"


def start_detached(settings: Settings, say: Say = _quiet) -> tuple[int, DatabaseReady]:
    """`up --detach`: the Brain forked first, then the database made ready, then wait."""
    pid = spawn_brain(settings)
    try:
        ready = ensure_database(settings, say=say)
        wait_for_brain(settings, pid)
    except BaseException:
        stop_brain(settings)
        raise
    return pid, ready


def stop_brain(settings: Settings, timeout: float = 15) -> bool:
    """Stop a running Brain; False when none was running."""
    pid = brain_pid(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    clear_brain_pid(settings, pid)
    return True


def stop_database(settings: Settings) -> bool:
    return cluster_for(settings).stop()


# -- status ----------------------------------------------------------------------


def services_status(settings: Settings) -> list[dict[str, Any]]:
    """State, pid, port and URL of each service."""
    rows: list[dict[str, Any]] = []
    if settings.embedded:
        st = Cluster.from_settings(settings).status()
        rows.append(
            {
                "service": "postgres",
                "state": st.state,
                "pid": st.pid,
                "port": st.port,
                "url": redact(settings.url_for()),
                "version": st.version,
                "uptime_seconds": st.uptime_seconds,
                "data_dir": st.data_dir,
            }
        )
    else:
        state, version = "unreachable", None
        try:
            with psycopg.connect(settings.url_for(), connect_timeout=3) as conn:
                version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
                state = "running (external)"
        except psycopg.Error:
            pass
        rows.append(
            {
                "service": "postgres",
                "state": state,
                "pid": None,
                "port": None,
                "url": redact(settings.url_for()),
                "version": version,
                "uptime_seconds": None,
                "data_dir": None,
            }
        )
    pid = brain_pid(settings)
    rows.append(
        {
            "service": "brain",
            "state": "running" if pid else "stopped",
            "pid": pid,
            "port": settings.api_port,
            "url": brain_url(settings),
            "version": None,
            "uptime_seconds": None,
            "data_dir": None,
        }
    )
    return rows


def redact(url: str) -> str:
    """The URL with its password masked, for display."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - display only
        return "<unparseable URL>"
