"""Authentication on the event loop: no connection without a token, denials recorded."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from fastapi.testclient import TestClient


class _NoPool:
    """Stands in for a pool that must not be touched."""

    def __init__(self) -> None:
        self.used = 0

    def __getattr__(self, name: str) -> Any:
        self.used += 1
        raise AssertionError(f"pool.{name} used")


def test_no_token_is_401_without_taking_a_connection(client: TestClient) -> None:
    state: Any = client.app.state  # type: ignore[attr-defined]
    real = state.pool, state.apool
    state.pool, state.apool = _NoPool(), _NoPool()
    try:
        for path in (f"/api/users/{uuid.uuid4()}", "/api/authz/check?user=a@b.c&permission=a:b"):
            response = client.get(path)
            assert response.status_code == 401, response.text
        assert state.pool.used == 0 and state.apool.used == 0
    finally:
        state.pool, state.apool = real


def test_hot_routes_deny_and_record_it(
    client: TestClient, db: psycopg.Connection[Any], make_user: Callable[..., dict[str, Any]]
) -> None:
    member = make_user("MEMBER")
    for path in (
        f"/api/users/{member['id']}",
        f"/api/authz/check?user={member['id']}&permission=users:read",
    ):
        response = client.get(path, headers=member["headers"])
        assert response.status_code == 403, response.text
    rows = db.execute(
        "SELECT actor, \"resourceId\" FROM audit_log WHERE action = 'authz.denied' ORDER BY id"
    ).fetchall()
    assert rows == [(member["id"], "users:read")] * 2


def test_hot_routes_answer_the_admin(
    client: TestClient, admin_headers: dict[str, str], make_user: Callable[..., dict[str, Any]]
) -> None:
    member = make_user("MEMBER")
    got = client.get(f"/api/users/{member['id']}", headers=admin_headers)
    assert got.status_code == 200 and got.json()["email"] == member["email"]
    assert client.get(f"/api/users/{uuid.uuid4()}", headers=admin_headers).status_code == 404
    check = client.get(
        "/api/authz/check",
        params={"user": member["email"], "permission": "journey:read", "explain": "true"},
        headers=admin_headers,
    )
    assert check.status_code == 200, check.text
    assert check.json()["allowed"] is True and check.json()["via_roles"] == ["MEMBER"]
