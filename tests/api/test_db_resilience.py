"""The Brain and its database: lock and statement timeouts, deadlocks, a restarted server."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.api import edge
from smartstart.api.app import create_app, session_options
from smartstart.config import Settings
from smartstart.db import migrate
from smartstart.pg.cluster import Cluster
from tests.api.conftest import _FIXTURE_HASH as FIXTURE_HASH
from tests.conftest import (
    DB_PASSWORD,
    DB_USER,
    FAST_CONF,
    TEST_ADMIN_PASSWORD,
    free_port,
    make_home,
    settings_for,
)


def waiting_on_a_lock(db: psycopg.Connection[Any], count: int = 1) -> bool:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return row is not None and row[0] >= count


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def brain(settings: Settings, **update: Any) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=update)))


def a_member(db: psycopg.Connection[Any]) -> str:
    row = db.execute(
        'INSERT INTO "User" (email, username, name, password, role, status)'
        " VALUES ('locked@example.com', 'locked', 'Locked', %s, 'MEMBER', 'ACTIVE')"
        " RETURNING id",
        [FIXTURE_HASH],
    ).fetchone()
    assert row is not None
    return str(row[0])


# -- lock_timeout / statement_timeout (item 13) ---------------------------------------


def test_a_row_locked_elsewhere_is_a_prompt_409(
    seeded_settings: Settings, db: psycopg.Connection[Any], admin_headers: dict[str, str]
) -> None:
    user_id = a_member(db)
    with (
        brain(seeded_settings, api_lock_timeout_ms=500) as client,
        psycopg.connect(seeded_settings.url_for()) as holder,
    ):
        holder.execute('SELECT 1 FROM "User" WHERE id = %s FOR UPDATE', [user_id])
        # Released after a while, so that without a lock timeout the PATCH would succeed late.
        release = threading.Timer(8, holder.rollback)
        release.start()
        try:
            started = time.monotonic()
            resp = client.patch(
                f"/api/users/{user_id}", json={"name": "Changed"}, headers=admin_headers
            )
            elapsed = time.monotonic() - started
        finally:
            release.cancel()  # answered: let go of the row now, not when the timer fires
            release.join()
            holder.rollback()
    assert resp.status_code == 409, resp.text
    error = resp.json()["error"]
    assert error["code"] == "locked"
    assert error["details"] == {"reason": "lock_timeout", "lock_timeout_ms": 500}
    assert "locked by another transaction" in error["message"]
    assert elapsed < 5
    assert db.execute('SELECT name FROM "User" WHERE id = %s', [user_id]).fetchone() == ("Locked",)


def test_a_statement_over_its_timeout_is_a_503_with_a_reason(
    seeded_settings: Settings, db: psycopg.Connection[Any], admin_headers: dict[str, str]
) -> None:
    user_id = a_member(db)
    with (
        brain(seeded_settings, api_lock_timeout_ms=60_000, api_statement_timeout_ms=300) as client,
        psycopg.connect(seeded_settings.url_for()) as holder,
    ):
        holder.execute('SELECT 1 FROM "User" WHERE id = %s FOR UPDATE', [user_id])
        release = threading.Timer(8, holder.rollback)
        release.start()
        try:
            resp = client.patch(
                f"/api/users/{user_id}", json={"name": "Changed"}, headers=admin_headers
            )
        finally:
            release.cancel()  # answered: let go of the row now, not when the timer fires
            release.join()
            holder.rollback()
    assert resp.status_code == 503, resp.text
    error = resp.json()["error"]
    assert error["code"] == "statement_timeout"
    assert error["details"] == {"reason": "statement_timeout", "statement_timeout_ms": 300}
    assert resp.headers["retry-after"]


def test_the_timeouts_are_settings_with_sane_defaults() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert 0 < settings.api_lock_timeout_ms <= 5000
    assert 0 < settings.api_statement_timeout_ms <= 60_000
    assert session_options(settings) == (
        f"-c lock_timeout={settings.api_lock_timeout_ms}"
        f" -c statement_timeout={settings.api_statement_timeout_ms}"
    )
    # Options of a configured URL are kept; 0 sends nothing.
    url = "postgresql://u:p@db.example/app?options=-c%20search_path%3Dapp"
    configured = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=url, api_lock_timeout_ms=0, api_statement_timeout_ms=0
    )
    assert session_options(configured) == "-c search_path=app"


# -- deadlocks (item 8) ---------------------------------------------------------------


def deadlocked_patch(
    client: TestClient, settings: Settings, db: psycopg.Connection[Any], headers: dict[str, str]
) -> tuple[httpx.Response, str]:
    """PATCH a user while another transaction makes a real deadlock with it.

    The other transaction blocks the audit_log insert that the PATCH makes after locking
    the user's row, then updates that row: a cycle. The other's deadlock check waits far
    longer than the PATCH's (deadlock_timeout, a superuser's setting: it connects as the
    cluster's superuser), so PostgreSQL aborts the PATCH however busy the machine is.
    """
    user_id = a_member(db)
    superuser = Cluster(settings.home_dir, port=settings.pg_port).superuser_conninfo(
        settings.db_name
    )
    with psycopg.connect(superuser) as other, ThreadPoolExecutor(1) as pool:
        other.execute("SET deadlock_timeout = '60s'")
        other.execute("LOCK TABLE audit_log IN SHARE MODE")
        future = pool.submit(
            client.patch, f"/api/users/{user_id}", json={"name": "By API"}, headers=headers
        )
        wait_until(lambda: waiting_on_a_lock(db), "the PATCH to wait for audit_log")
        other.execute('UPDATE "User" SET name = %s WHERE id = %s', ["By other", user_id])
        other.commit()
        resp = future.result(timeout=30)
    return resp, user_id


def test_a_deadlocked_transaction_is_retried_and_succeeds(
    seeded_settings: Settings, db: psycopg.Connection[Any], admin_headers: dict[str, str]
) -> None:
    with brain(seeded_settings) as client:
        resp, user_id = deadlocked_patch(client, seeded_settings, db, admin_headers)
    assert resp.status_code == 200, resp.text
    assert "x-smartstart-retry" not in resp.headers
    # The retry ran after the other transaction committed: its change came last.
    assert db.execute('SELECT name FROM "User" WHERE id = %s', [user_id]).fetchone() == ("By API",)


def test_a_deadlock_that_outlasts_the_retries_is_a_409(
    seeded_settings: Settings,
    db: psycopg.Connection[Any],
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(edge, "MAX_ATTEMPTS", 1)
    with brain(seeded_settings) as client:
        resp, user_id = deadlocked_patch(client, seeded_settings, db, admin_headers)
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["code"] == "transaction_conflict"
    assert resp.json()["error"]["details"] == {"reason": "deadlock"}
    assert "x-smartstart-retry" not in resp.headers
    row = db.execute('SELECT name FROM "User" WHERE id = %s', [user_id]).fetchone()
    assert row == ("By other",)


# -- a restarted database (Part 3) ----------------------------------------------------


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[tuple[Cluster, Settings]]:
    """A cluster of this module's own: restarting the shared one would disturb other tests."""
    from smartstart.db import seed

    home = make_home()
    cluster = Cluster(home, port=free_port(), server_conf=FAST_CONF)
    cluster.init()
    cluster.start()
    cluster.bootstrap(db_name="smartstart_db", db_user=DB_USER, db_password=DB_PASSWORD)
    settings = settings_for(cluster, admin_password=TEST_ADMIN_PASSWORD)
    migrate.upgrade(settings.sqlalchemy_url())
    with psycopg.connect(settings.url_for()) as conn:
        seed.seed(conn, settings)
    assert DB_PASSWORD
    yield cluster, settings
    cluster.destroy()
    shutil.rmtree(home, ignore_errors=True)


def test_the_first_request_after_a_database_restart_succeeds(
    own_cluster: tuple[Cluster, Settings],
) -> None:
    from datetime import timedelta

    from smartstart.domain import sessions

    cluster, settings = own_cluster
    with psycopg.connect(settings.url_for(), autocommit=True) as db:
        row = db.execute(
            'SELECT id FROM "User" WHERE email = %s', ["admin@alicesolutionsgroup.com"]
        ).fetchone()
        assert row is not None
        admin_id = row[0]
        token, _ = sessions.create(db, admin_id, lifetime=timedelta(hours=1))
    headers = {"Authorization": f"Bearer {token}"}
    urls = ["/api/users", f"/api/users/{admin_id}", "/api/auth/me", "/api/auth/sessions"]
    with TestClient(create_app(settings)) as client:
        # Several idle connections in both pools, each of which the restart will kill.
        with ThreadPoolExecutor(6) as pool:
            warm = list(pool.map(lambda u: client.get(u, headers=headers), urls * 6))
        assert {r.status_code for r in warm} == {200}
        for round_ in range(2):
            cluster.stop()
            cluster.start()
            for url in urls * 2:
                resp = client.get(url, headers=headers)
                assert resp.status_code == 200, (round_, url, resp.text)
        # One dead connection met per restart: the pools then dropped all their others.
        assert unavailable_attempts(client) == 2


def unavailable_attempts(client: TestClient) -> float:
    """How many attempts of requests the Brain answered 503 (retried ones included)."""
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("smartstart_http_requests_total{") and 'status="503"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total
