"""GET /api/audit."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi.testclient import TestClient

from smartstart.domain import audit


def test_audit_requires_a_session(client: TestClient) -> None:
    resp = client.get("/api/audit")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"


def test_audit_requires_the_permission_and_records_the_denial(
    client: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    member = make_user("MEMBER")
    resp = client.get("/api/audit", headers=member["headers"])
    assert resp.status_code == 403
    assert resp.json()["error"]["details"] == {"permission": "audit:read", "reason": "missing"}
    row = db.execute(
        "SELECT actor, \"resourceId\" FROM audit_log WHERE action = 'authz.denied'"
    ).fetchone()
    assert row == (member["id"], "audit:read")


def test_audit_lists_filters_and_pages(
    client: TestClient, admin_headers: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    for i in range(5):
        audit.record(db, audit.Actor.operator(), "test.thing", resource="thing", resource_id=str(i))
    audit.record(db, audit.Actor.operator(), "other.thing", resource="other", password="hunter2")
    page = client.get(
        "/api/audit", params={"action": "test.*", "limit": 2}, headers=admin_headers
    ).json()
    assert [e["resourceId"] for e in page["items"]] == ["4", "3"]
    nxt = client.get(
        "/api/audit",
        params={"action": "test.*", "limit": 2, "cursor": page["next_cursor"]},
        headers=admin_headers,
    ).json()
    assert [e["resourceId"] for e in nxt["items"]] == ["2", "1"]
    other = client.get("/api/audit", params={"resource": "other"}, headers=admin_headers).json()
    assert other["items"][0]["details"]["password"] == "***"


def test_bad_cursor_is_422_not_500(client: TestClient, admin_headers: dict[str, str]) -> None:
    resp = client.get("/api/audit", params={"cursor": "1; DROP TABLE"}, headers=admin_headers)
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid"
