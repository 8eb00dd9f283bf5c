"""The platform's database: the embedded cluster's lifecycle, or an external server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict

import psycopg

from smartstart import recorded
from smartstart.config import Settings
from smartstart.db.engine import connect
from smartstart.errors import ConfigurationError
from smartstart.pg.cluster import Cluster

if TYPE_CHECKING:
    from smartstart.api.server import WorkerState

Say = Callable[[str], None]


def quiet(_: str) -> None:
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
    # A cluster made before settings were recorded is recorded on its next start.
    recorded.record(settings)
    return initialized, started


def stop_database(settings: Settings) -> bool:
    return cluster_for(settings).stop()


def ensure_database(
    settings: Settings, say: Say = quiet, seed_if_empty: bool = True
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
        from smartstart.db.owner import migration_url

        migrate.upgrade(migration_url(settings))
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


class ServiceStatus(TypedDict):
    """One service's line of `smartstart status`."""

    service: str
    state: str
    pid: int | None
    port: int | None
    url: str
    version: str | None
    uptime_seconds: float | None
    data_dir: str | None
    workers: NotRequired[WorkerState | None]
    archiving: NotRequired[str | None]  # WAL archiving of the embedded cluster (pg.archive)
    archiving_via: NotRequired[str | None]  # basic_archive or archive_command


def status_row(settings: Settings) -> ServiceStatus:
    """The database's line of `smartstart status`."""
    archiving = archiving_via = None
    if settings.embedded:
        from smartstart.errors import SmartStartError
        from smartstart.pg import archive

        cluster = Cluster.from_settings(settings)
        st = cluster.status()
        state, pid, port, version = st.state, st.pid, st.port, st.version
        uptime, data_dir = st.uptime_seconds, st.data_dir
        if st.state != "uninitialized":
            try:
                archived = archive.status(cluster)
                archiving, archiving_via = archived.state, archived.via
            except SmartStartError:
                archiving = "unknown"
    else:
        state, pid, port, version, uptime, data_dir = "unreachable", None, None, None, None, None
        try:
            with psycopg.connect(settings.url_for(), connect_timeout=3) as conn:
                version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
                state = "running (external)"
        except psycopg.Error:
            pass
    return {
        "service": "postgres",
        "state": state,
        "pid": pid,
        "port": port,
        "url": redact(settings.url_for()),
        "version": version,
        "uptime_seconds": uptime,
        "data_dir": data_dir,
        "archiving": archiving,
        "archiving_via": archiving_via,
    }


def redact(url: str) -> str:
    """The URL with its password masked, for display."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - display only
        return "<unparseable URL>"
