"""The fast lane of the two hot reads answers exactly as FastAPI's own routing does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fastapi.routing
import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.api.app import create_app
from smartstart.api.fastlane import FastLane
from smartstart.config import Settings


@pytest.fixture
def clients(seeded_settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """The Brain as served, and the same app with its fast lane taken out."""
    fast = create_app(seeded_settings)
    plain = create_app(seeded_settings)
    lane = plain.router.middleware_stack
    assert isinstance(lane, FastLane)
    plain.router.middleware_stack = lane.app
    with TestClient(fast) as a, TestClient(plain) as b:
        yield a, b


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths whose dependencies FastAPI solved (it does for every route it serves)."""
    paths: list[str] = []
    real = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        paths.append(kwargs["request"].url.path)
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return paths


def test_the_hot_reads_skip_fastapis_routing(
    client: TestClient, admin_headers: dict[str, str], make_user: Any, solved: list[str]
) -> None:
    user = make_user()
    resp = client.get(f"/api/users/{user['id']}", headers=admin_headers)
    assert resp.status_code == 200 and resp.json()["id"] == user["id"]
    resp = client.get(
        "/api/authz/check",
        params={"user": user["id"], "permission": "users:read"},
        headers=admin_headers,
    )
    assert resp.status_code == 200 and resp.json()["allowed"] is False
    assert solved == []
    # Not the other routes, nor a read whose query FastAPI must interpret.
    client.get("/api/users/me", headers=admin_headers)
    client.get(
        "/api/authz/check",
        params={"user": user["id"], "permission": "users:read", "explain": "true"},
        headers=admin_headers,
    )
    assert solved == ["/api/users/me", "/api/authz/check"]


def audit_count(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM audit_log WHERE action = 'authz.denied'").fetchone()
    assert row is not None
    return int(row[0])


def test_every_answer_is_fastapis(
    clients: tuple[TestClient, TestClient],
    admin_headers: dict[str, str],
    make_user: Callable[..., dict[str, Any]],
    db: psycopg.Connection[Any],
) -> None:
    fast, plain = clients
    target = make_user()
    member = make_user()  # no users:read
    cookie_user = make_user(role="ADMIN")
    uid = target["id"]
    requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
    for headers in (admin_headers, member["headers"], {}, {"Authorization": "Bearer nope"}):
        requests += [
            (f"/api/users/{uid}", {}, headers),
            (f"/api/users/{target['email']}", {}, headers),
            ("/api/users/00000000-0000-0000-0000-000000000000", {}, headers),
            ("/api/users/not-an-id", {}, headers),
            ("/api/users/me", {}, headers),
            ("/api/users/%20", {}, headers),
            ("/api/authz/check", {"user": uid, "permission": "users:read"}, headers),
            ("/api/authz/check", {"user": target["email"], "permission": "db:backup"}, headers),
            ("/api/authz/check", {"user": "nobody", "permission": "users:read"}, headers),
            ("/api/authz/check", {"user": uid, "permission": "Users:Read"}, headers),
            ("/api/authz/check", {"user": uid, "permission": "users:read\n"}, headers),
            ("/api/authz/check", {"user": "x" * 321, "permission": "users:read"}, headers),
            ("/api/authz/check", {"user": "", "permission": "users:read"}, headers),
            ("/api/authz/check", {"user": uid}, headers),
            ("/api/authz/check", {"user": uid, "permission": "a:b", "other": "1"}, headers),
            ("/api/authz/check", {"user": uid, "permission": "a:b", "explain": "1"}, headers),
        ]
    requests.append(
        (f"/api/users/{uid}", {}, {"Cookie": f"smartstart_session={cookie_user['token']}"})
    )
    for path, params, headers in requests:
        before = audit_count(db)
        a = fast.get(path, params=params, headers=headers)
        denied_fast = audit_count(db) - before
        b = plain.get(path, params=params, headers=headers)
        denied_plain = audit_count(db) - before - denied_fast
        where = f"{path} {params} {sorted(headers)}"
        assert (a.status_code, a.content) == (b.status_code, b.content), where
        assert a.headers.items() == b.headers.items(), where
        assert denied_fast == denied_plain, where
    # The member's reads were denied and audited, by both.
    assert audit_count(db) > 0
