"""Fixtures: one real throwaway PostgreSQL cluster per test session, and a fresh
database per test cloned from a template the migrations built."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from smartstart import recorded
from smartstart.config import Settings, get_settings
from smartstart.db import migrate
from smartstart.pg.cluster import Cluster

DB_USER = "smartstart_user"
DB_PASSWORD = "smartstart_password"  # noqa: S105 - the guide's development default
TEMPLATE = "smartstart_template"
SEEDED_TEMPLATE = "smartstart_seeded_template"
TEST_ADMIN_PASSWORD = "correct horse battery staple"  # noqa: S105
# bcrypt's cost for the suite's own hashes: at the default 12 each login of the seeded
# admin costs ~250 ms of CPU, hundreds of times a run. Tests of the cost itself set theirs.
TEST_BCRYPT_ROUNDS = 4
FAST_CONF = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
_counter = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_env(settings: Settings) -> dict[str, str]:
    """The environment of a SmartStart process (a Brain, the CLI) on settings' database."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SMARTSTART_")},
        "SMARTSTART_HOME": str(settings.home),
        "SMARTSTART_PG_PORT": str(settings.pg_port),
        "SMARTSTART_DB_NAME": settings.db_name,
        "SMARTSTART_ENV": "test",
        "SMARTSTART_BCRYPT_ROUNDS": str(TEST_BCRYPT_ROUNDS),
    }


# Throwaway clusters live in memory when the machine has a tmpfs: cloning a test
# database creates ~300 files, which costs ~10 ms there and 100-250 ms on a busy disk.
TMPFS = Path("/dev/shm")


def make_home(prefix: str = "smartstart-test-") -> Path:
    """A temp dir the unprivileged server user can enter (pytest's tmp_path is 0700)."""
    base = TMPFS if TMPFS.is_dir() and os.access(TMPFS, os.W_OK) else None
    home = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    home.chmod(0o711)
    return home


def settings_for(cluster: Cluster, db_name: str = "smartstart_db", **extra: Any) -> Settings:
    extra.setdefault("bcrypt_rounds", TEST_BCRYPT_ROUNDS)
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=cluster.home,
        pg_port=cluster.port,
        db_name=db_name,
        db_user=DB_USER,
        env="test",
        **extra,
    )


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A running embedded cluster on a free port, bootstrapped like `smartstart up` does."""
    home = make_home()
    cluster = Cluster(home, port=free_port(), server_conf=FAST_CONF)
    cluster.init()
    cluster.start()
    cluster.bootstrap(db_name="smartstart_db", db_user=DB_USER, db_password=DB_PASSWORD)
    # Recorded like `smartstart db start` does, but without a database name: this
    # cluster holds one database per test, each named by SMARTSTART_DB_NAME.
    recorded.record(settings_for(cluster), keys=("pg_port", "pg_host", "db_user"))
    yield cluster
    cluster.destroy()
    shutil.rmtree(home, ignore_errors=True)


def _create_db(cluster: Cluster, name: str, template: str | None = None) -> None:
    with cluster.connect() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        stmt = sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(DB_USER)
        )
        if template:
            stmt += sql.SQL(" TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(template))
        conn.execute(stmt)


def drop_db(cluster: Cluster, name: str) -> None:
    with cluster.connect() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def migrated_template(pg_cluster: Cluster) -> str:
    """Name of a database migrated to head: the template every test database is cloned from."""
    _create_db(pg_cluster, TEMPLATE)
    migrate.upgrade(settings_for(pg_cluster, TEMPLATE).sqlalchemy_url())
    return TEMPLATE


@pytest.fixture(scope="session")
def seeded_template(pg_cluster: Cluster, migrated_template: str) -> str:
    """A migrated template with the platform's seed data (admin password known)."""
    from smartstart.db import seed

    _create_db(pg_cluster, SEEDED_TEMPLATE, migrated_template)
    settings = settings_for(pg_cluster, SEEDED_TEMPLATE, admin_password=TEST_ADMIN_PASSWORD)
    with psycopg.connect(settings.url_for()) as conn:
        seed.seed(conn, settings)
    return SEEDED_TEMPLATE


def _fresh(cluster: Cluster, template: str) -> Iterator[Settings]:
    name = f"t_{os.getpid()}_{next(_counter)}"
    _create_db(cluster, name, template)
    yield settings_for(cluster, name)
    drop_db(cluster, name)


@pytest.fixture
def db_settings(pg_cluster: Cluster, migrated_template: str) -> Iterator[Settings]:
    """Settings pointing at a fresh, migrated, empty database of this test's own."""
    yield from _fresh(pg_cluster, migrated_template)


@pytest.fixture
def seeded_settings(pg_cluster: Cluster, seeded_template: str) -> Iterator[Settings]:
    """Settings pointing at a fresh database of this test's own, migrated and seeded."""
    yield from _fresh(pg_cluster, seeded_template)


@pytest.fixture
def conn(db_settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """Autocommit connection to a fresh migrated database."""
    with psycopg.connect(db_settings.url_for(), autocommit=True) as c:
        yield c


@pytest.fixture
def seeded_conn(seeded_settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """Autocommit connection to a fresh migrated and seeded database."""
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as c:
        yield c


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No SMARTSTART_* variable of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("SMARTSTART_"):
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, pg_cluster: Cluster) -> Any:
    """Point the CLI (through environment variables) at a database of the test cluster."""

    def point(settings: Settings) -> Settings:
        monkeypatch.setenv("SMARTSTART_HOME", str(pg_cluster.home))
        monkeypatch.setenv("SMARTSTART_PG_PORT", str(pg_cluster.port))
        monkeypatch.setenv("SMARTSTART_DB_NAME", settings.db_name)
        monkeypatch.setenv("SMARTSTART_ENV", "test")
        monkeypatch.setenv("SMARTSTART_BCRYPT_ROUNDS", str(TEST_BCRYPT_ROUNDS))
        get_settings.cache_clear()
        return settings

    return point


# Seconds each of the slowest modules took in a whole run (a loaded machine; only their
# order matters), against ~0.8 s a test for the rest. `make test` runs pytest-xdist with
# `--no-loadscope-reorder`, so the modules are handed out in the order set here: longest
# first, so that no long module starting last leaves one worker running alone at the end.
MODULE_SECONDS = {
    "tests/api/test_openapi_fuzz.py": 142,
    "tests/api/test_authz_matrix.py": 95,
    "tests/cli/test_restore_cli.py": 62,
    "tests/api/test_paging_api.py": 59,
    "tests/cli/test_services.py": 56,
    "tests/pg/test_pitr.py": 32,
    "tests/web/test_backups_page.py": 40,
    "tests/web/test_browser.py": 33,
    "tests/api/test_db_resilience.py": 25,
    "tests/api/test_server.py": 24,
    "tests/test_doctor.py": 20,
    "tests/api/test_metrics.py": 17,
    "tests/api/test_rbac_invalidation.py": 12,
    "tests/cli/test_scripting.py": 12,
    "tests/test_alembic_cli.py": 8,
    "tests/api/test_client.py": 8,
    "tests/api/test_login_flood.py": 6,
}
SECONDS_PER_TEST = 0.8


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first (a stable sort: each module's own order is kept)."""
    per_module: dict[str, float] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        per_module[path] = per_module.get(path, 0.0) + SECONDS_PER_TEST
    weight = {path: MODULE_SECONDS.get(path, seconds) for path, seconds in per_module.items()}
    items.sort(key=lambda item: -weight[item.nodeid.split("::", 1)[0]])
