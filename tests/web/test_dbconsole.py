"""The Database page's statistics and live queries (cancel/terminate: db:admin, confirmed,
audited), and the Backups page's recoverable window, schedule and restore placeholder."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.config import Settings

Browse = Callable[..., dict[str, Any]]
BrowseWith = Callable[[set[str]], dict[str, Any]]


@contextmanager
def sleeper(settings: Settings) -> Iterator[tuple[int, list[BaseException]]]:
    """A session of the platform database running pg_sleep: (its pid, what it raised)."""
    conn = psycopg.connect(settings.url_for(), autocommit=True, application_name="sleeper")
    pid = conn.info.backend_pid
    raised: list[BaseException] = []

    def run() -> None:
        try:
            conn.execute("SELECT pg_sleep(60)")
        except psycopg.Error as e:
            raised.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        with psycopg.connect(settings.url_for(), autocommit=True) as probe:
            while time.monotonic() < deadline:
                row = probe.execute(
                    "SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]
                ).fetchone()
                if row and row[0] == "active":
                    break
                time.sleep(0.05)
        yield pid, raised
    finally:
        with psycopg.connect(settings.url_for(), autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", [pid])
        thread.join(10)
        conn.close()


def test_the_database_page_shows_sizes_indexes_and_slow_queries(
    client: TestClient, browse_with: BrowseWith
) -> None:
    browse_with({"db:read"})
    r = client.get("/admin/database")
    assert r.status_code == 200, r.text
    for heading in (
        "Table sizes",
        "Index usage",
        "Slow queries",
        "Since a snapshot",
        "Live queries",
    ):
        assert heading in r.text, heading
    assert '<td class="wrap">User</td>' in r.text
    assert "_pkey<br>" in r.text  # index usage names indexes
    assert "No snapshot yet" in r.text  # a fresh database: nothing to compare with
    assert client.get("/admin/database?history=1y").status_code == 422


def test_the_history_compares_with_a_snapshot(
    client: TestClient, browse_with: BrowseWith, db: psycopg.Connection[Any]
) -> None:
    from smartstart.domain import statshistory

    statshistory.take_snapshot(db)
    db.execute("UPDATE stats_snapshot SET \"takenAt\" = now() - interval '2 hours'")
    browse_with({"db:read"})
    r = client.get("/admin/database?history=1h")
    assert "Snapshot of " in r.text and "No snapshot yet" not in r.text


def test_a_live_query_is_listed_and_cancelled_after_confirmation(
    client: TestClient,
    browse: Browse,
    db: psycopg.Connection[Any],
    seeded_settings: Settings,
) -> None:
    admin = browse("SUPER_ADMIN")
    with sleeper(seeded_settings) as (pid, raised):
        page = client.get("/admin/database")
        assert f'<td class="num">{pid}</td>' in page.text
        assert "pg_sleep(60)" in page.text
        action = f"/admin/database/queries/{pid}/cancel"
        assert f'action="{action}"' in page.text
        asked = client.post(action, data={"csrf": admin["csrf"]})
        assert asked.status_code == 200 and "Please confirm" in asked.text
        assert "pg_sleep(60)" in asked.text and not raised  # nothing done yet
        done = client.post(action, data={"csrf": admin["csrf"], "confirmed": "yes"})
        assert f"pid {pid}: query cancelled" in done.text
        deadline = time.monotonic() + 10
        while not raised and time.monotonic() < deadline:
            time.sleep(0.05)
        assert raised and isinstance(raised[0], psycopg.errors.QueryCanceled)
    audited = db.execute(
        "SELECT actor, details->'before'->>'application' FROM audit_log"
        " WHERE action = 'db.cancel' AND \"resourceId\" = %s",
        [str(pid)],
    ).fetchall()
    assert audited == [(admin["id"], "sleeper")]


def test_terminate_disconnects_the_session(
    client: TestClient, browse: Browse, seeded_settings: Settings
) -> None:
    admin = browse("SUPER_ADMIN")
    with sleeper(seeded_settings) as (pid, raised):
        done = client.post(
            f"/admin/database/queries/{pid}/terminate",
            data={"csrf": admin["csrf"], "confirmed": "yes"},
        )
        assert f"pid {pid}: session terminated" in done.text
        deadline = time.monotonic() + 10
        while not raised and time.monotonic() < deadline:
            time.sleep(0.05)
        assert raised  # the connection was closed under it


def test_cancel_needs_db_admin_and_its_buttons_are_hidden_without_it(
    client: TestClient, browse_with: BrowseWith, seeded_settings: Settings
) -> None:
    user = browse_with({"db:read"})
    with sleeper(seeded_settings) as (pid, raised):
        page = client.get("/admin/database").text
        assert f'<td class="num">{pid}</td>' in page
        assert "/cancel" not in page and "/terminate" not in page
        r = client.post(
            f"/admin/database/queries/{pid}/cancel", data={"csrf": user["csrf"], "confirmed": "yes"}
        )
        assert r.status_code == 403 and "db:admin" in r.text
        assert not raised


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/admin/database/queries/0/cancel", 422, "not a server process id"),
        ("/admin/database/queries/abc/cancel", 422, "not a server process id"),
        ("/admin/database/queries/99999999999/cancel", 422, "not a server process id"),
        ("/admin/database/queries/4000000/cancel", 404, "no client session"),
        ("/admin/database/queries/123/stop", 422, "cancel or terminate"),
    ],
)
def test_a_bad_signal_is_refused_plainly(
    client: TestClient, browse: Browse, path: str, status: int, message: str
) -> None:
    admin = browse("SUPER_ADMIN")
    r = client.post(path, data={"csrf": admin["csrf"], "confirmed": "yes"})
    assert r.status_code == status, r.text
    assert message in r.text


def test_the_backups_page_shows_the_window_the_schedule_and_where_restore_goes(
    client: TestClient, browse_with: BrowseWith, db: psycopg.Connection[Any]
) -> None:
    browse_with({"db:read"})
    r = client.get("/admin/backups")
    assert r.status_code == 200, r.text
    assert "Point-in-time recovery" in r.text and "No base backups" in r.text
    assert "<td>backup</td>" in r.text and "0 3 * * *" in r.text and "(off)" in r.text
    assert 'id="restore"' in r.text and "smartstart db restore --to-time" in r.text
    db.execute(
        'INSERT INTO job_runs (job, slot, attempt, runner, outcome, error, "finishedAt")'
        " VALUES ('backup', now() - interval '1 day', 3, 'test', 'failed', 'disk full', now())"
    )
    failed = client.get("/admin/backups").text
    assert "disk full" in failed and "v-crit" in failed
