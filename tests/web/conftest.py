"""Web app fixtures: the Brain in-process (TestClient) with a browser-like signed-in user."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from smartstart.api.deps import SESSION_COOKIE, csrf_token
from smartstart.config import Settings
from smartstart.pg.cluster import Cluster
from tests.api.conftest import client, db, make_user, token_for  # noqa: F401 - fixtures

FIXTURE_PASSWORD = "correct horse battery staple"  # the fixture users' (tests/api/conftest)
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]*)"')


def kept_databases(cluster: Cluster, settings: Settings) -> list[str]:
    """The databases restores of settings' database set aside."""
    with cluster.connect() as conn:
        return [
            str(r[0])
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                [settings.db_name + "_before_restore_"],
            )
        ]


def form_csrf(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


BACKUP_STARTED = re.compile(r"Writing (\S+): its progress is shown below")


def create_backup(web: TestClient, csrf: str, settings: Settings, note: str = "") -> str:
    """Start a backup on the Backups page and wait until it is listed; its file name."""
    started = web.post("/admin/backups", data={"csrf": csrf, "note": note})
    found = BACKUP_STARTED.search(started.text)
    assert found, started.text
    name = found.group(1)
    manifest = Path(settings.home_dir) / "backups" / f"{name}.json"
    deadline = time.monotonic() + 120
    while not manifest.exists():
        assert time.monotonic() < deadline, f"{name} was not written"
        time.sleep(0.1)
    return name


@pytest.fixture
def browse(
    client: TestClient,  # noqa: F811
    make_user: Callable[..., dict[str, Any]],  # noqa: F811
    seeded_settings: Settings,
) -> Callable[..., dict[str, Any]]:
    """Sign the client in as a new user of `role` (session cookie, as a browser holds it);
    returns the user with its `csrf` token."""

    def sign_in(role: str = "MEMBER", **extra: Any) -> dict[str, Any]:
        user = make_user(role, **extra)
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, user["token"], domain="testserver.local")
        user["csrf"] = csrf_token(seeded_settings, user["token"])
        return user

    return sign_in


@pytest.fixture
def browse_with(
    client: TestClient,  # noqa: F811
    db: Any,  # noqa: F811
    browse: Callable[..., dict[str, Any]],
) -> Callable[[set[str]], dict[str, Any]]:
    """Sign in as a new user whose only role grants exactly these permissions."""
    import uuid

    def sign_in(perms: set[str]) -> dict[str, Any]:
        role = f"WEB_{uuid.uuid4().hex[:10]}".upper()
        db.execute('INSERT INTO "Role" (name) VALUES (%s)', [role])
        for perm in perms:
            db.execute(
                'INSERT INTO "RolePermission" ("roleId", "permissionId")'
                ' SELECT r.id, p.id FROM "Role" r, "Permission" p'
                " WHERE r.name = %s AND p.name = %s",
                [role, perm],
            )
        return browse(role)

    return sign_in
