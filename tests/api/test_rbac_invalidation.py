"""RBAC changes by raw SQL take effect on the very next request in EVERY worker process.

The Brain runs as `uvicorn --factory --workers 2` against a fresh seeded database;
each request opens a new connection (no keep-alive), so the kernel hands them to
either worker. Both workers' caches are warmed first, and that two workers really
answer is shown through /metrics, which lists the `process_*` metrics of every worker
that has counted a request (by pid). After each raw change, every one of many requests
must reflect it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from smartstart.config import Settings
from smartstart.domain import sessions
from smartstart.pg.cluster import Cluster
from tests.conftest import _fresh, free_port, process_env

_FIXTURE_HASH = "$2b$04$WVKvKa12safshzWEV6kU7.Wgv6PzC6oShpvCfBGfIGSlxfhqVfX8."
AFTER_CHANGE = 30  # requests that must all reflect a change (≥ 20)
PID_LINE = re.compile(r'^process_cpu_seconds_total\{pid="([0-9]+)"\}', re.M)

GRANT_SQL = """
INSERT INTO "RolePermission" ("roleId", "permissionId")
VALUES (
    (SELECT id FROM "Role" WHERE name = %s),
    (SELECT id FROM "Permission" WHERE name = 'roles:read')
)
"""
REVOKE_SQL = """
DELETE FROM "RolePermission"
WHERE "roleId" = (SELECT id FROM "Role" WHERE name = %s)
  AND "permissionId" = (SELECT id FROM "Permission" WHERE name = 'roles:read')
"""
ASSIGN_SQL = """
INSERT INTO "UserRole" ("userId", "roleId", "assignedAt")
VALUES (
    (SELECT id FROM "User" WHERE email = %s),
    (SELECT id FROM "Role" WHERE name = 'DEVELOPER'),
    NOW()
)
"""
UNASSIGN_SQL = """
DELETE FROM "UserRole"
WHERE "userId" = (SELECT id FROM "User" WHERE email = %s)
  AND "roleId" = (SELECT id FROM "Role" WHERE name = 'DEVELOPER')
"""


@pytest.fixture(scope="module")
def brain_settings(pg_cluster: Cluster, seeded_template: str) -> Iterator[Settings]:
    """A fresh seeded database for this module (each test makes its own role and users)."""
    yield from _fresh(pg_cluster, seeded_template)


@pytest.fixture(scope="module")
def brain(brain_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a two-worker Brain on the module's database; always stopped."""
    seeded_settings = brain_settings
    tmp_path = tmp_path_factory.mktemp("brain")
    port = free_port()
    env = process_env(seeded_settings)
    log = (tmp_path / "brain.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("smartstart")),
            "serve",
            "--workers",
            "2",
            "--port",
            str(port),
        ],  # fmt: skip
        env=env,
        cwd=tmp_path,  # no developer .env is read
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "brain.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the Brain did not become ready"
            time.sleep(0.2)
        # The first worker may answer while the second still starts: wait until
        # /metrics shows two workers that have served requests.
        seen: set[str] = set()
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as c:
            while len(seen) < 2:
                assert time.monotonic() < deadline, f"only one worker answered: {seen}"
                seen |= worker_pids(c, base, 5)
                time.sleep(0.1)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A client that opens a new connection for every request (so any worker may answer)."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(limits=limits, timeout=10, headers={"Connection": "close"}) as c:
        yield c


def new_user(settings: Settings, role: str | None = None) -> tuple[str, str, str, dict[str, str]]:
    """A user whose primary role is `role` (default: a new role of its own without
    permissions, so that tests sharing the database do not see each other's grants);
    returns (role, id, email, Bearer headers)."""
    tag = uuid.uuid4().hex[:10]
    email = f"u{tag}@example.com"
    with psycopg.connect(settings.url_for(), autocommit=True) as conn:
        if role is None:
            role = f"R_{tag.upper()}"
            conn.execute('INSERT INTO "Role" (name) VALUES (%s)', [role])
        row = conn.execute(
            'INSERT INTO "User" (email, username, password, role)'
            " VALUES (%s, %s, %s, %s) RETURNING id",
            [email, f"u{tag}", _FIXTURE_HASH, role],
        ).fetchone()
        assert row is not None
        token, _ = sessions.create(conn, row[0], lifetime=timedelta(hours=1))
    return role, str(row[0]), email, {"Authorization": f"Bearer {token}"}


def raw(settings: Settings, statement: str, params: Any = None) -> None:
    """A change the guide's way: raw SQL on a connection of its own, committed."""
    with psycopg.connect(settings.url_for(), autocommit=True) as conn:
        conn.execute(statement, params)


def _concurrently(fn: Any, n: int) -> list[Any]:
    # Parallel connections: one idle worker would otherwise win every accept().
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda _: fn(), range(n)))


def statuses(http: httpx.Client, url: str, headers: dict[str, str], n: int) -> list[int]:
    return _concurrently(lambda: http.get(url, headers=headers).status_code, n)


def worker_pids(http: httpx.Client, base: str, n: int) -> set[str]:
    """The pids of the workers that have served requests, per n scrapes of /metrics.

    Background /healthz traffic keeps a worker busy so the other accepts.
    Every request has a connection of its own: a kept-alive one stays with the worker
    that accepted it, and a client's few pooled connections could all be one worker's.
    """
    stop = threading.Event()
    close = {"Connection": "close"}

    def busy() -> None:
        while not stop.is_set():
            http.get(f"{base}/healthz", headers=close)

    pids: set[str] = set()
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(4):
            pool.submit(busy)
        try:
            for _ in range(n):
                pids |= set(PID_LINE.findall(http.get(f"{base}/metrics", headers=close).text))
        finally:
            stop.set()
    return pids


def two_workers_answered(http: httpx.Client, base: str, rounds: int = 5) -> set[str]:
    """The pids of the workers that served requests: two, or what the last round found."""
    pids: set[str] = set()
    for _ in range(rounds):  # the kernel's choice of worker is not ours: try a few times
        pids = worker_pids(http, base, 30)
        if len(pids) >= 2:
            break
    return pids


def test_both_workers_answer(brain: str, http: httpx.Client) -> None:
    pids = two_workers_answered(http, brain)
    assert len(pids) == 2, pids


def test_raw_sql_reaches_every_worker(
    brain: str, http: httpx.Client, brain_settings: Settings
) -> None:
    role, _, email, headers = new_user(brain_settings)
    url = f"{brain}/api/rbac/matrix"
    # warm both workers' caches with "the role lacks roles:read"
    assert statuses(http, url, headers, 30) == [403] * 30
    pids = two_workers_answered(http, brain)
    assert len(pids) == 2, f"only one worker answered: {pids}"

    raw(brain_settings, GRANT_SQL, [role])
    assert statuses(http, url, headers, AFTER_CHANGE) == [200] * AFTER_CHANGE

    raw(brain_settings, REVOKE_SQL, [role])
    assert statuses(http, url, headers, AFTER_CHANGE) == [403] * AFTER_CHANGE

    # a role assignment the guide's way, then its removal
    raw(brain_settings, ASSIGN_SQL, [email])
    assert statuses(http, url, headers, AFTER_CHANGE) == [200] * AFTER_CHANGE
    raw(brain_settings, UNASSIGN_SQL, [email])
    assert statuses(http, url, headers, AFTER_CHANGE) == [403] * AFTER_CHANGE


def test_the_check_endpoint_follows_raw_sql_in_every_worker(
    brain: str, http: httpx.Client, brain_settings: Settings
) -> None:
    _, _, _, asker = new_user(brain_settings, "MODERATOR")
    role, user_id, email, _ = new_user(brain_settings)
    url = f"{brain}/api/authz/check"

    def answers(n: int, ref: str) -> list[Any]:
        out = []
        for _ in range(n):
            params = {"user": ref, "permission": "roles:read"}
            resp = http.get(url, params=params, headers=asker)
            assert resp.status_code == 200, resp.text
            out.append(resp.json()["allowed"])
        return out

    # by id the warm answer comes from the caches alone; by email, one lookup
    assert answers(30, user_id) == [False] * 30
    assert answers(10, email) == [False] * 10
    raw(brain_settings, GRANT_SQL, [role])
    assert answers(AFTER_CHANGE, user_id) == [True] * AFTER_CHANGE
    assert answers(10, email) == [True] * 10
    # suspending by raw SQL: only ACTIVE users hold permissions
    raw(brain_settings, "UPDATE \"User\" SET status = 'SUSPENDED' WHERE id = %s", [user_id])
    assert answers(AFTER_CHANGE, user_id) == [False] * AFTER_CHANGE
    raw(brain_settings, "UPDATE \"User\" SET status = 'ACTIVE' WHERE id = %s", [user_id])
    assert answers(AFTER_CHANGE, user_id) == [True] * AFTER_CHANGE
    # changing the primary role by UPDATE moves the assignment (trigger)
    raw(brain_settings, "UPDATE \"User\" SET role = 'GUEST' WHERE id = %s", [user_id])
    assert answers(AFTER_CHANGE, user_id) == [False] * AFTER_CHANGE
    assert answers(10, email) == [False] * 10
