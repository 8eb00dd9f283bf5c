"""API fixtures: a Brain app on a fresh seeded database, and signed-in users."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from smartstart.api.app import create_app
from smartstart.config import Settings
from smartstart.domain import sessions

# bcrypt("correct horse battery staple", cost 4): users made by fixtures sign in fast.
_FIXTURE_HASH = "$2b$04$WVKvKa12safshzWEV6kU7.Wgv6PzC6oShpvCfBGfIGSlxfhqVfX8."
_n = itertools.count()


@pytest.fixture
def client(seeded_settings: Settings) -> Iterator[TestClient]:
    """A TestClient of the Brain on a fresh seeded database of this test's own."""
    with TestClient(create_app(seeded_settings)) as c:
        yield c


@pytest.fixture
def db(seeded_settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """Autocommit connection to the same database the client's app uses."""
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def token_for(db: psycopg.Connection[Any]) -> Callable[[str], str]:
    """A live session token for the user with this email (made without a login)."""

    def make(email: str) -> str:
        row = db.execute('SELECT id FROM "User" WHERE lower(email) = lower(%s)', [email]).fetchone()
        assert row is not None, email
        token, _ = sessions.create(db, row[0], lifetime=timedelta(hours=1))
        return token

    return make


@pytest.fixture
def make_user(db: psycopg.Connection[Any]) -> Callable[..., dict[str, Any]]:
    """Insert a user with a role; returns {id, email, username, headers} (a Bearer session)."""

    def make(role: str = "MEMBER", status: str = "ACTIVE", **extra: Any) -> dict[str, Any]:
        n = next(_n)
        email = extra.pop("email", f"fixture{n}@example.com")
        username = extra.pop("username", f"fixture{n}")
        row = db.execute(
            'INSERT INTO "User" (email, username, name, password, role, status)'
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            [email, username, f"Fixture {n}", _FIXTURE_HASH, role, status],
        ).fetchone()
        assert row is not None
        token, _ = sessions.create(db, row[0], lifetime=timedelta(hours=1))
        return {
            "id": row[0],
            "email": email,
            "username": username,
            "token": token,
            "headers": {"Authorization": f"Bearer {token}"},
        }

    return make


@pytest.fixture
def admin_headers(token_for: Callable[[str], str]) -> dict[str, str]:
    """Bearer headers of the seeded SUPER_ADMIN."""
    return {"Authorization": f"Bearer {token_for('admin@alicesolutionsgroup.com')}"}


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """app served by uvicorn on a free loopback port (a real socket), in a thread; its URL."""
    from tests.conftest import free_port

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the Brain did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
