"""`smartstart doctor`: the guide's Troubleshooting section, automated.

Each finding says what is wrong, the evidence, and the fix. A finding whose fix is safe
(start the embedded server, reset the app's password to the configured one through the
local superuser, create the database, migrate, create pg_stat_statements, remove a stale
pid file) names an action that `--fix` applies; the others say what a person must do.
Diagnosis goes in order: a server that is not running makes the connection findings moot,
so they are left out until it runs.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from smartstart.config import Settings
from smartstart.errors import SmartStartError
from smartstart.health import State
from smartstart.pg import probe
from smartstart.pg.cluster import INSTALL_HINT, Cluster, find_bin_dir, read_pid_file
from smartstart.services import process

# Free space under $SMARTSTART_HOME, as a share of its filesystem.
DISK_WARN = 0.10
DISK_CRIT = 0.05


@dataclass(frozen=True)
class Finding:
    """One diagnosis: what is wrong (or that it is fine), the evidence, and the fix."""

    name: str
    state: State
    problem: str
    evidence: str = ""
    fix: str | None = None
    action: str | None = None  # a safe fix `--fix` applies (a key of ACTIONS)

    def as_json(self) -> dict[str, object]:
        return {
            "check": self.name,
            "state": self.state.name,
            "problem": self.problem,
            "evidence": self.evidence,
            "fix": self.fix,
            "fixable": self.action is not None,
        }


def _ok(name: str, what: str, evidence: str = "") -> Finding:
    return Finding(name, State.OK, what, evidence)


# -- the filesystem and the binaries -------------------------------------------------------


def disk_finding(home: Path, total: int, free: int) -> Finding:
    """Judge the free space of the filesystem holding home."""
    share = free / total if total else 1.0
    evidence = f"{free / 2**30:,.1f} GiB free of {total / 2**30:,.1f} GiB ({share:.0%}) at {home}"
    if share >= DISK_WARN:
        return _ok("disk", "enough free disk space", evidence)
    return Finding(
        "disk",
        State.CRIT if share < DISK_CRIT else State.WARN,
        "the disk under $SMARTSTART_HOME is nearly full: PostgreSQL stops accepting writes "
        "when it is full",
        evidence,
        "free space (old backups: smartstart db backups; the server log in logs/) or move "
        "SMARTSTART_HOME to a larger disk",
    )


def _disk(settings: Settings) -> Finding:
    home = settings.home_dir
    where = next((p for p in [home, *home.parents] if p.exists()), Path("/"))
    usage = shutil.disk_usage(where)
    return disk_finding(home, usage.total, usage.free)


def client_finding(versions: dict[str, str], server_version_num: int) -> Finding:
    """Client binaries older than the server (pg_dump refuses a newer server)."""
    server_major = server_version_num // 10000
    older = probe.older_clients(versions, server_major)
    if not older:
        shown = ", ".join(f"{Path(p).name} {probe.major(t)}" for p, t in versions.items())
        return _ok("client_version", "client binaries match the server", shown)
    return Finding(
        "client_version",
        State.WARN,
        f"client binaries are older than the server (PostgreSQL {server_major}): backups and "
        "psql may refuse it",
        "; ".join(f"{p}: {t}" for p, t in older.items()),
        f"install the PostgreSQL {server_major} client (Debian/Ubuntu: apt-get install "
        f"postgresql-client-{server_major}) or set SMARTSTART_PG_BIN to its bin directory",
    )


# -- the embedded server ----------------------------------------------------------------------


def _stale_pids(settings: Settings, cluster: Cluster) -> list[Finding]:
    from smartstart.services import brain

    found = []
    pidfile = read_pid_file(cluster.data_dir)
    if pidfile is not None and not process.alive(pidfile.pid):
        found.append(
            Finding(
                "stale_pid",
                State.WARN,
                "a stale postmaster.pid: the server was killed and left its pid file behind",
                f"{cluster.data_dir / 'postmaster.pid'} names pid {pidfile.pid}, which is not "
                "running",
                "smartstart db start (removes it, then starts the server)",
                "start",
            )
        )
    brain_pid = brain.pid_file(settings)
    pid = _brain_pid(settings)
    if pid is not None and not process.alive(pid):
        found.append(
            Finding(
                "stale_pid",
                State.WARN,
                "a stale brain.pid: the Brain died without removing its pid file",
                f"{brain_pid} names pid {pid}, which is not running",
                f"rm {brain_pid}",
                "remove_brain_pid",
            )
        )
    return found


def _brain_pid(settings: Settings) -> int | None:
    """The pid brain.pid names (read only: diagnosing changes nothing)."""
    from smartstart.services import brain

    try:
        return int(brain.pid_file(settings).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _embedded_server(settings: Settings) -> tuple[list[Finding], bool]:
    """Findings about the embedded server, and whether it runs."""
    cluster = Cluster.from_settings(settings)
    findings = _stale_pids(settings, cluster)
    try:
        cluster.bin_dir  # noqa: B018 - finds the binaries, or says how to install them
    except SmartStartError as e:
        return [*findings, Finding("binaries", State.CRIT, e.message, "", INSTALL_HINT)], False
    status = cluster.status()
    if status.state == "uninitialized":
        findings.append(
            Finding(
                "server",
                State.CRIT,
                "the embedded PostgreSQL has not been initialised",
                f"no cluster at {cluster.data_dir}",
                "smartstart db start (initialises and starts it)",
                "start",
            )
        )
        return findings, False
    if status.running:
        findings.append(
            _ok(
                "server",
                "the embedded PostgreSQL is running",
                f"pid {status.pid}, port {status.port}",
            )
        )
        return findings, True
    taken = probe.listener(settings.pg_port) if _port_taken(settings) else None
    if taken is not None:
        findings.append(
            Finding(
                "port",
                State.CRIT,
                f"port {settings.pg_port} is taken by another program: the server cannot start",
                f"{taken.describe()} listens on {settings.pg_host}:{settings.pg_port}",
                "stop that program, or use another port: SMARTSTART_PG_PORT is recorded in "
                "$SMARTSTART_HOME/cluster.json (edit it there)",
            )
        )
    findings.append(
        Finding(
            "server",
            State.CRIT,
            "the embedded PostgreSQL is not running (connection refused)",
            f"no server process for {cluster.data_dir}; nothing of ours on "
            f"{settings.pg_host}:{settings.pg_port}",
            "smartstart db start",
            None if taken is not None else "start",
        )
    )
    return findings, False


def _port_taken(settings: Settings) -> bool:
    from smartstart.pg.cluster import port_in_use

    return port_in_use(settings.pg_host, settings.pg_port)


def _brain_port(settings: Settings) -> list[Finding]:
    from smartstart.pg.cluster import port_in_use

    pid = _brain_pid(settings)
    if (pid is not None and process.alive(pid)) or not port_in_use(
        settings.api_host, settings.api_port
    ):
        return []
    taken = probe.listener(settings.api_port)
    return [
        Finding(
            "brain_port",
            State.WARN,
            f"the Brain's port {settings.api_port} is taken by another program: "
            "`smartstart up` would refuse to start",
            f"{(taken or probe.Listener(None, None)).describe()} listens on "
            f"{settings.api_host}:{settings.api_port}",
            "stop that program or set SMARTSTART_API_PORT to a free port",
        )
    ]


# -- an external server ---------------------------------------------------------------------


def _external_server(settings: Settings) -> tuple[list[Finding], bool]:
    info = psycopg.conninfo.conninfo_to_dict(settings.url_for())
    host, port = str(info.get("host") or "localhost"), int(str(info.get("port") or 5432))
    if error := probe.resolves(host):
        return [
            Finding(
                "dns",
                State.CRIT,
                f"the host {host!r} of SMARTSTART_DATABASE_URL does not resolve",
                error,
                "correct the host in SMARTSTART_DATABASE_URL, or the DNS",
            )
        ], False
    if host.startswith("/"):
        return [_ok("server", "a local socket directory", host)], True
    if error := probe.reachable(host, port):
        return [
            _ok("dns", f"{host} resolves"),
            Finding(
                "server",
                State.CRIT,
                f"nothing accepts connections on {host}:{port} (connection refused or filtered)",
                error,
                "start that server, or check the port and any firewall between",
            ),
        ], False
    return [
        _ok("dns", f"{host} resolves"),
        _ok("server", f"{host}:{port} accepts connections"),
    ], True


# -- connected ----------------------------------------------------------------------------------


def _connection(
    settings: Settings,
) -> tuple[list[Finding], psycopg.Connection[tuple[object, ...]] | None]:
    try:
        conn = psycopg.connect(settings.url_for(), connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as e:
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return [_connect_failure(settings, text)], None
    return [_ok("connection", f"connected to {settings.db_name} as {settings.db_user}")], conn


# What a refused connection says → (finding, problem, fix on the embedded cluster, fix on
# an external server). The embedded fixes are all `start`: it sets the role's password and
# creates the role and the database through the local superuser.
_CONNECT_FAILURES: tuple[tuple[tuple[str, ...], str, str, str, str], ...] = (
    (
        ("password authentication failed",),
        "authentication",
        "the server refuses the password of {user!r}",
        "smartstart doctor --fix (resets it to SMARTSTART_DB_PASSWORD through the local superuser)",
        "correct the password in SMARTSTART_DATABASE_URL, or as a superuser there: "
        "ALTER USER … PASSWORD '…';",
    ),
    (
        ("database", "does not exist"),
        "database",
        "the database {database!r} does not exist",
        "smartstart doctor --fix (creates it, owned by the app's role, then migrates)",
        "as a superuser there: CREATE DATABASE …; GRANT ALL PRIVILEGES ON DATABASE … TO …;",
    ),
    (
        ("role", "does not exist"),
        "authentication",
        "the role {user!r} does not exist",
        "smartstart doctor --fix (creates it)",
        "create that role on the server",
    ),
)


def _connect_failure(settings: Settings, text: str) -> Finding:
    for words, name, problem, embedded_fix, external_fix in _CONNECT_FAILURES:
        if all(w in text for w in words):
            return Finding(
                name,
                State.CRIT,
                problem.format(user=settings.db_user, database=settings.db_name),
                text,
                embedded_fix if settings.embedded else external_fix,
                "start" if settings.embedded else None,
            )
    return Finding("connection", State.CRIT, "cannot connect to the database", text)


def _schema(settings: Settings) -> list[Finding]:
    from smartstart.db import migrate

    result = migrate.check(settings.sqlalchemy_url())
    current, head = result["current"], result["head"]
    findings = []
    if current != head:
        findings.append(
            Finding(
                "schema",
                State.CRIT,
                "the schema is behind the code: the Brain reports not ready until it is migrated",
                f"the database is at {current or 'base (empty)'}, the code's head is {head}",
                "smartstart db migrate",
                "migrate",
            )
        )
    elif result["differences"]:
        findings.append(
            Finding(
                "schema",
                State.WARN,
                "the schema has drifted from the models (changed by hand?)",
                "; ".join(result["differences"][:10]),
                "see smartstart db diff --sql; put a wanted change into a migration "
                "(smartstart db revision --autogenerate), undo an unwanted one",
            )
        )
    else:
        findings.append(_ok("schema", f"at head ({head}), no drift"))
    return findings


def _stat_statements(settings: Settings, conn: psycopg.Connection[tuple[object, ...]]) -> Finding:
    row = conn.execute(
        "SELECT current_setting('shared_preload_libraries'),"
        " EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')"
    ).fetchone()
    preload, installed = (str(row[0]), bool(row[1])) if row else ("", False)
    if "pg_stat_statements" not in preload:
        return Finding(
            "pg_stat_statements",
            State.WARN,
            "pg_stat_statements is not loaded: slow-query checks and statistics have no data",
            f"shared_preload_libraries = {preload!r}",
            "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'; then restart "
            "the server (smartstart db restart)",
        )
    if not installed:
        return Finding(
            "pg_stat_statements",
            State.WARN,
            "the pg_stat_statements extension is missing from the database",
            f"no pg_stat_statements in pg_extension of {settings.db_name}",
            "smartstart doctor --fix"
            if settings.embedded
            else "as a superuser there: CREATE EXTENSION pg_stat_statements;",
            "create_extension" if settings.embedded else None,
        )
    return _ok("pg_stat_statements", "pg_stat_statements is loaded and installed")


def _clients(settings: Settings, conn: psycopg.Connection[tuple[object, ...]]) -> Finding:
    bin_dir = None
    if settings.embedded:
        with contextlib.suppress(SmartStartError):
            bin_dir = find_bin_dir(settings.pg_bin)
    return client_finding(probe.client_versions(bin_dir), conn.info.server_version)


# -- the diagnosis and the safe fixes ------------------------------------------------------------


def diagnose(settings: Settings) -> list[Finding]:
    """Every finding, in the order a person would look."""
    findings = [_disk(settings)]
    if settings.embedded:
        server, running = _embedded_server(settings)
        findings += _brain_port(settings)
    else:
        server, running = _external_server(settings)
    findings += server
    if not running:
        return findings
    connected, conn = _connection(settings)
    findings += connected
    if conn is None:
        return findings
    with conn:
        findings.append(_stat_statements(settings, conn))
        findings.append(_clients(settings, conn))
    try:
        findings += _schema(settings)
    except Exception as e:  # noqa: BLE001 - any failure here is a finding, not a crash
        findings.append(Finding("schema", State.CRIT, "cannot compare the schema", str(e)))
    return findings


def _start(settings: Settings) -> str:
    from smartstart.services import database

    initialized, started = database.start_database(settings)
    done = ["initialised the cluster"] if initialized else []
    done.append("started PostgreSQL" if started else "PostgreSQL was running")
    return ", ".join(done) + (
        f"; {settings.db_user!r} has the password SMARTSTART_DB_PASSWORD and "
        f"{settings.db_name!r} exists (through the local superuser)"
    )


def _remove_brain_pid(settings: Settings) -> str:
    from smartstart.services import brain

    brain.running_pid(settings)  # removes a stale file
    return f"removed the stale {brain.pid_file(settings)}"


def _migrate(settings: Settings) -> str:
    from smartstart.db import migrate
    from smartstart.db.owner import migration_url

    before = migrate.current_revision(settings.sqlalchemy_url())
    migrate.upgrade(migration_url(settings))
    return f"migrated the schema {before or 'base'} → {migrate.head_revision()}"


def _create_extension(settings: Settings) -> str:
    from smartstart.services.database import cluster_for

    with cluster_for(settings).connect(settings.db_name) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return f"created the pg_stat_statements extension in {settings.db_name}"


# In the order they must run: a server first, then what needs a connection.
ACTIONS: dict[str, Callable[[Settings], str]] = {
    "remove_brain_pid": _remove_brain_pid,
    "start": _start,
    "create_extension": _create_extension,
    "migrate": _migrate,
}


@dataclass
class Repair:
    """What `--fix` did, and the findings after it."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def repair(settings: Settings, rounds: int = 4) -> Repair:
    """Apply the safe fixes, diagnosing again after each round (a started server may reveal
    a missing database, a created database an empty schema), until none is left."""
    result = Repair()
    applied: set[str] = set()
    for _ in range(rounds):
        findings = diagnose(settings)
        wanted = {f.action for f in findings if f.action and f.state is not State.OK}
        todo = [name for name in ACTIONS if name in wanted and name not in applied]
        if not todo:
            result.findings = findings
            return result
        for name in todo:
            applied.add(name)
            try:
                result.done.append(ACTIONS[name](settings))
            except (SmartStartError, psycopg.Error, OSError) as e:
                result.failed.append(f"{name}: {e}")
                result.findings = diagnose(settings)
                return result
    result.findings = diagnose(settings)
    return result


def worst(findings: list[Finding]) -> State:
    return max((f.state for f in findings), default=State.OK)
