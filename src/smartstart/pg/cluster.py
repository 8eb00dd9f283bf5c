"""The embedded PostgreSQL cluster: find binaries, initdb, start/stop/status.

Knows nothing of users or the platform schema. When the current process is
root, every server binary runs as an unprivileged OS user (PostgreSQL refuses
to run as root), and the directories it writes are handed to that user.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from smartstart.errors import ClusterError
from smartstart.services.process import alive

REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
INSTALL_HINT = (
    "install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql; "
    "macOS: brew install postgresql) or point SMARTSTART_PG_BIN at its bin directory"
)
SUPERUSER = "postgres"
# Local socket connections: peer auth for the superuser, with the invoking OS user (often
# root) mapped to it; every other role by password, so the Brain can use the socket (cheaper
# than loopback TCP per query) as the platform user. The socket directory is private.
HBA = (
    "# SmartStart: written at init\n"
    f"local   all   {SUPERUSER}              peer map=smartstart\n"
    "local   all   all                   scram-sha-256\n"
    "host    all   all   127.0.0.1/32    scram-sha-256\n"
    "host    all   all   ::1/128         scram-sha-256\n"
)
# What clusters made before the socket was opened to the platform user have.
_HBA_BEFORE_SOCKET = (
    "# SmartStart: written at init\n"
    "local   all   all                   peer map=smartstart\n"
    "host    all   all   127.0.0.1/32    scram-sha-256\n"
    "host    all   all   ::1/128         scram-sha-256\n"
)

# Server settings written once by `init`; listen address and port are passed at
# start so that changing SMARTSTART_PG_PORT needs no re-init.
SERVER_CONF = {
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "all",
    "track_io_timing": "on",
    "password_encryption": "'scram-sha-256'",
    "unix_socket_permissions": "0700",
    "max_connections": "100",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "log_timezone": "'UTC'",
    "timezone": "'UTC'",
}


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name) or [0])


def find_bin_dir(override: Path | None = None) -> Path:
    """Locate a directory holding initdb, pg_ctl and postgres."""

    def complete(d: Path) -> bool:
        return all((d / b).is_file() and os.access(d / b, os.X_OK) for b in REQUIRED_BINARIES)

    if override is not None:
        d = Path(override).expanduser()
        if complete(d):
            return d
        missing = [b for b in REQUIRED_BINARIES if not (d / b).is_file()]
        raise ClusterError(
            f"SMARTSTART_PG_BIN={d} does not hold {', '.join(missing)}",
            "point it at the bin directory of a PostgreSQL server installation",
        )
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=5, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    candidates.extend(
        p.parent
        for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)[::-1]
    )
    for d in candidates:
        if complete(d):
            return d
    raise ClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found", INSTALL_HINT
    )


def server_version(bin_dir: Path) -> str:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"(\d+(?:\.\d+)?)", out)
    return match.group(1) if match else out.strip()


@dataclass(frozen=True)
class ClusterStatus:
    """What `status` reports; `state` is running, stopped or uninitialized."""

    state: str
    data_dir: str
    port: int
    host: str
    pid: int | None = None
    version: str | None = None
    started_at: float | None = None
    socket_dir: str | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def uptime_seconds(self) -> float | None:
        return None if self.started_at is None else max(0.0, time.time() - self.started_at)


@dataclass(frozen=True)
class PidFile:
    pid: int
    data_dir: str
    started_at: float
    port: int
    socket_dir: str
    status: str


def read_pid_file(data_dir: Path) -> PidFile | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    try:
        return PidFile(
            pid=int(lines[0]),
            data_dir=lines[1],
            started_at=float(lines[2]),
            port=int(lines[3]),
            socket_dir=lines[4] if len(lines) > 4 else "",
            status=lines[7].strip() if len(lines) > 7 else "",
        )
    except (IndexError, ValueError):
        return None


def _is_postgres_process(pid: int) -> bool:
    # A killed postmaster can linger as a zombie until its parent reaps it: not alive.
    if not alive(pid):
        return False
    if not Path("/proc").is_dir():
        return True  # no /proc (macOS): trust kill(0)
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return os.path.basename(exe).startswith(("postgres", "postmaster"))


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.settimeout(0.5)
            if s.connect_ex(addr) == 0:
                return True
    return False


class Cluster:
    """One PostgreSQL data directory under SmartStart's control."""

    def __init__(
        self,
        home: Path,
        *,
        port: int = 5432,
        host: str = "127.0.0.1",
        bin_dir: Path | None = None,
        run_as: str | None = "postgres",
        server_conf: dict[str, str] | None = None,
        archive_dir: Path | None = None,
    ) -> None:
        self.home = Path(home).expanduser().resolve()
        self.data_dir = self.home / "pgdata"
        self.socket_dir = self.home / "run"
        self.log_dir = self.home / "logs"
        self.log_file = self.log_dir / "postgres.log"
        self.port = port
        self.host = host
        self._bin_dir = bin_dir
        self.extra_conf = server_conf or {}
        # Where finished WAL segments are archived (pg.archive); None: left as configured,
        # unless archiving was turned off (the setting), which `start` then writes.
        self.archive_dir = archive_dir
        self.archive_off = False
        # Only root needs (and can) switch user.
        self.run_as = run_as if os.geteuid() == 0 else None

    @classmethod
    def from_settings(cls, settings: Any) -> Cluster:
        cluster = cls(
            settings.home_dir,
            port=settings.pg_port,
            host=settings.pg_host,
            bin_dir=settings.pg_bin,
            run_as=settings.pg_user,
            archive_dir=settings.home_dir / "wal" if settings.wal_archive else None,
        )
        cluster.archive_off = not settings.wal_archive
        return cluster

    # -- plumbing ---------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None or not (self._bin_dir / "pg_ctl").exists():
            self._bin_dir = find_bin_dir(self._bin_dir)
        return self._bin_dir

    def _owner(self) -> pwd.struct_passwd:
        if self.run_as is None:
            return pwd.getpwuid(os.geteuid())
        try:
            return pwd.getpwnam(self.run_as)
        except KeyError:
            raise ClusterError(
                f"running as root, but the OS user {self.run_as!r} that should run PostgreSQL "
                "does not exist",
                f"create it (useradd --system {self.run_as}) or set SMARTSTART_PG_USER",
            ) from None

    def _run(
        self, args: Sequence[str], *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_MESSAGES"] = "C"
        if self.run_as is not None:
            owner = self._owner()
            kwargs.update(user=owner.pw_uid, group=owner.pw_gid, extra_groups=[])
            env.update(HOME=owner.pw_dir, USER=owner.pw_name, LOGNAME=owner.pw_name)
        proc = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            env=env,
            cwd=str(self.home),
            timeout=timeout,
            check=False,
            **kwargs,
        )
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise ClusterError(
                f"{Path(args[0]).name} failed: {detail[-1] if detail else proc.returncode}",
                f"see {self.log_file}",
            )
        return proc

    def _give(self, path: Path, mode: int) -> None:
        """Make path belong to the server's OS user."""
        owner = self._owner()
        if os.geteuid() == 0:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        path.chmod(mode)

    def _check_reachable(self) -> None:
        """The server user must be able to traverse every ancestor of home."""
        if self.run_as is None:
            return
        owner = self._owner()
        for parent in [self.home, *self.home.parents]:
            st = parent.stat()
            if st.st_uid == owner.pw_uid:
                ok = st.st_mode & 0o100
            elif st.st_gid == owner.pw_gid:
                ok = st.st_mode & 0o010
            else:
                ok = st.st_mode & 0o001
            if not ok:
                raise ClusterError(
                    f"the server's OS user {owner.pw_name!r} cannot enter {parent} "
                    f"(mode {oct(st.st_mode & 0o777)})",
                    f"chmod o+x {parent}, or set SMARTSTART_HOME to a directory it can reach",
                )

    def _check_ownership(self) -> None:
        if not self.data_dir.exists():
            return
        owner = self._owner()
        st = self.data_dir.stat()
        if st.st_uid != owner.pw_uid:
            try:
                actual = pwd.getpwuid(st.st_uid).pw_name
            except KeyError:
                actual = str(st.st_uid)
            raise ClusterError(
                f"data directory {self.data_dir} is owned by {actual!r}, "
                f"but PostgreSQL would run as {owner.pw_name!r}",
                f"chown -R {owner.pw_name} {self.data_dir}, or set SMARTSTART_HOME elsewhere",
            )

    # -- state --------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def status(self) -> ClusterStatus:
        base = {"data_dir": str(self.data_dir), "port": self.port, "host": self.host}
        if not self.initialized:
            return ClusterStatus(state="uninitialized", **base)  # type: ignore[arg-type]
        version = (self.data_dir / "PG_VERSION").read_text().strip()
        pidfile = read_pid_file(self.data_dir)
        if pidfile is None or not _is_postgres_process(pidfile.pid):
            return ClusterStatus(state="stopped", version=version, **base)  # type: ignore[arg-type]
        state = {"ready": "running", "starting": "starting", "stopping": "stopping"}.get(
            pidfile.status, "running"
        )
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            version = server_version(self.bin_dir)
        return ClusterStatus(
            state=state,
            data_dir=str(self.data_dir),
            port=pidfile.port,
            host=self.host,
            pid=pidfile.pid,
            version=version,
            started_at=pidfile.started_at,
            socket_dir=pidfile.socket_dir or str(self.socket_dir),
        )

    # -- lifecycle ------------------------------------------------------------

    def init(self) -> bool:
        """Create the data directory; False when it already exists."""
        if self.initialized:
            self._check_ownership()
            return False
        bin_dir = self.bin_dir
        self.home.mkdir(parents=True, exist_ok=True)
        self._check_reachable()
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ClusterError(
                f"{self.data_dir} exists but is not a PostgreSQL data directory",
                "move it away or set SMARTSTART_HOME elsewhere",
            )
        self.data_dir.mkdir(exist_ok=True)
        self._give(self.data_dir, 0o700)
        self._prepare_runtime_dirs()
        invoker = getpass.getuser()
        self._run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--data-checksums",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                # C.UTF-8 orders text by code point, as C does for UTF-8, but through
                # strcoll and without abbreviated keys: C sorts and builds text indexes
                # faster (the 1M-user demo seed 87 → 82 s); C.UTF-8's character classes
                # stay (lower(), and pg_trgm's letters in the search key).
                "--lc-collate=C",
                "--no-instructions",
                "--no-sync",  # durability of an empty cluster is not worth seconds
            ]
        )
        conf = {**SERVER_CONF, **self.extra_conf}
        with (self.data_dir / "postgresql.conf").open("a") as f:
            f.write("\n# --- SmartStart ---\n")
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")
        (self.data_dir / "pg_hba.conf").write_text(HBA)
        owner = self._owner().pw_name
        (self.data_dir / "pg_ident.conf").write_text(
            "# MAPNAME    SYSTEM-USERNAME   PG-USERNAME\n"
            f"smartstart  {invoker}  {SUPERUSER}\n"
            f"smartstart  {owner}  {SUPERUSER}\n"
            "smartstart  /^(.*)$  \\1\n"
        )
        for name in ("pg_hba.conf", "pg_ident.conf"):
            self._give(self.data_dir / name, 0o600)
        return True

    def _prepare_runtime_dirs(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._give(self.socket_dir, 0o700)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.chmod(0o755)
        if not self.log_file.exists():
            self.log_file.touch()
        self._give(self.log_file, 0o640)

    def _upgrade_hba(self) -> None:
        """Give a cluster made before the socket was opened to the platform user today's rules."""
        hba = self.data_dir / "pg_hba.conf"
        with contextlib.suppress(OSError):
            # Only our own untouched file: an operator's edits are theirs.
            if hba.read_text() == _HBA_BEFORE_SOCKET:
                hba.write_text(HBA)

    def _clear_stale_pid(self) -> None:
        pidfile = read_pid_file(self.data_dir)
        if pidfile is None or _is_postgres_process(pidfile.pid):
            return
        # A postmaster killed with -9 leaves its backends for a moment; they exit
        # on their own once they notice, and must before a new one can attach.
        deadline = time.monotonic() + 10
        while self._orphans() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "postmaster.pid").unlink()
        # The socket lock names the same dead (possibly zombie) pid; the server would
        # only trust kill(0) and refuse to start.
        for lock in self.socket_dir.glob(".s.PGSQL.*.lock"):
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                if int(lock.read_text().split()[0]) == pidfile.pid:
                    lock.unlink()

    def _orphans(self) -> list[int]:
        """Server processes still attached to this data directory."""
        found: list[int] = []
        proc = Path("/proc")
        if not proc.is_dir():
            return found
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if not os.readlink(entry / "exe").endswith("postgres"):
                    continue
                if Path(os.readlink(entry / "cwd")) == self.data_dir:
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def start(self, timeout: float = 30) -> bool:
        """Start the server; False when it was already running."""
        if not self.initialized:
            raise ClusterError(
                f"no cluster at {self.data_dir}", "run `smartstart db start` (it initialises one)"
            )
        self._check_ownership()
        current = self.status()
        if current.running or current.state == "starting":
            if current.state == "starting":
                self._wait_ready(timeout)
            return False
        self._clear_stale_pid()
        if port_in_use(self.host, self.port):
            raise ClusterError(
                f"port {self.port} on {self.host} is already in use by another program",
                "stop that program or set SMARTSTART_PG_PORT to a free port",
            )
        self._prepare_runtime_dirs()
        self._upgrade_hba()
        if self.archive_dir is not None or self.archive_off:
            from smartstart.pg import archive

            archive.configure(self, self.archive_dir)
        opts = f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host}"
        proc = self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(timeout)),
                "-o",
                opts,
            ],
            check=False,
            timeout=timeout + 10,
        )
        if proc.returncode != 0:
            raise ClusterError(
                f"PostgreSQL did not start: {self._last_log_error() or proc.stderr.strip()}",
                f"see {self.log_file}",
            )
        return True

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status().running:
                return
            time.sleep(0.05)
        raise ClusterError("PostgreSQL did not become ready", f"see {self.log_file}")

    def _last_log_error(self) -> str | None:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-30:]
        except OSError:
            return None
        for line in reversed(lines):
            if "FATAL" in line or "ERROR" in line or "could not" in line:
                return line.split("FATAL:", 1)[-1].strip()
        return None

    def stop(self, mode: str = "fast", timeout: float = 60) -> bool:
        """Stop the server; False when it was not running."""
        if not self.initialized:
            return False
        pidfile = read_pid_file(self.data_dir)
        if pidfile is None or not _is_postgres_process(pidfile.pid):
            return False
        proc = self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(timeout)),
            ],
            check=False,
            timeout=timeout + 10,
        )
        if proc.returncode != 0:
            # A server exiting by itself (a failed recovery, a crash) between the check
            # above and pg_ctl: "Is server running?". Stopped is what was asked for.
            pidfile = read_pid_file(self.data_dir)
            if pidfile is not None and _is_postgres_process(pidfile.pid):
                detail = (proc.stderr or proc.stdout).strip().splitlines()
                raise ClusterError(
                    f"pg_ctl failed: {detail[-1] if detail else proc.returncode}",
                    f"see {self.log_file}",
                )
        return True

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster (tests use this to simulate a crash)."""
        pidfile = read_pid_file(self.data_dir)
        if pidfile is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pidfile.pid, signal.SIGKILL)

    def destroy(self) -> None:
        """Stop and delete the data directory."""
        self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- connections ------------------------------------------------------------

    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        return psycopg.conninfo.make_conninfo(
            host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname=dbname
        )

    @contextlib.contextmanager
    def connect(self, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
        """Superuser connection over the private socket (autocommit)."""
        try:
            conn = psycopg.connect(self.superuser_conninfo(dbname), autocommit=True)
        except psycopg.OperationalError as e:
            raise ClusterError(f"cannot connect to the embedded server: {e}".strip()) from e
        with conn:
            yield conn

    def bootstrap(self, *, db_name: str, db_user: str, db_password: str) -> None:
        """Make the application role and database exist with the configured password."""
        with self.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [db_user]).fetchone()
            verb = "ALTER" if exists else "CREATE"
            # Password literals cannot be bound parameters in DDL; sql.Literal quotes safely.
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN NOSUPERUSER CREATEDB PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(db_user), sql.Literal(db_password)
                )
            )
            conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(db_user)))
            # New databases (tests, reset) inherit the extension from template1.
            with self.connect("template1") as t1:
                create_monitoring_extension(t1)
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [db_name]
            ).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(db_name), sql.Identifier(db_user)
                    )
                )
        with self.connect(db_name) as conn:
            create_monitoring_extension(conn)


def create_monitoring_extension(conn: psycopg.Connection[Any]) -> None:
    """pg_stat_statements in conn's database, without the comment CREATE EXTENSION gives it.

    Only the extension's owner (postgres) may COMMENT ON it, and pg_dump writes that comment
    into every dump: restored by the database's owner, `pg_restore` exits 1 on it and `psql -v
    ON_ERROR_STOP=1` stops there, before any table. Without a comment, the dump holds only
    `CREATE EXTENSION IF NOT EXISTS`, a no-op where the extension already is (every database
    made from template1)."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    conn.execute("COMMENT ON EXTENSION pg_stat_statements IS NULL")
