"""Every listing of the API pages the same way: {items, next_cursor}, signed cursors, one limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.cursors import forgeries

ADMIN = "admin@alicesolutionsgroup.com"

# name: (path, query that lists everything, table the rows come from, its ORDER BY as a key)
LISTINGS: dict[str, tuple[str, dict[str, str], str]] = {
    "users": ("/api/users", {}, 'SELECT id FROM "User" ORDER BY "createdAt" DESC, id DESC'),
    "sessions": (
        "/api/auth/sessions",
        {"include_ended": "true"},
        'SELECT s.id FROM "Session" s JOIN "User" u ON u.id = s."userId"'
        " WHERE lower(u.email) = '" + ADMIN + '\' ORDER BY s."createdAt" DESC, s.id DESC',
    ),
    "roles": ("/api/roles", {}, 'SELECT id FROM "Role" ORDER BY name'),
    "permissions": ("/api/permissions", {}, 'SELECT id FROM "Permission" ORDER BY name'),
    "stages": (
        "/api/journey/stages",
        {"include_inactive": "true"},
        'SELECT id FROM "JourneyStage" ORDER BY "order"',
    ),
    "audit": ("/api/audit", {}, "SELECT id FROM audit_log ORDER BY id DESC"),
}
NAMES = list(LISTINGS)
LIMIT_ERROR = {
    "code": "invalid",
    "message": "limit must be a whole number from 1 to 500",
    "details": {"field": "limit", "min": 1, "max": 500},
}


@pytest.fixture
def rows(
    db: psycopg.Connection[Any],
    make_user: Callable[..., dict[str, Any]],
    token_for: Callable[[str], str],
) -> dict[str, str]:
    """At least five rows in every listing; the admin's Bearer headers."""
    for _ in range(3):
        make_user()
    tokens = [token_for(ADMIN) for _ in range(5)]
    # Equal timestamps: the id must break the tie, or a page boundary would skip or repeat.
    db.execute('UPDATE "Session" SET "createdAt" = date_trunc(\'hour\', now())')
    db.execute(
        "UPDATE \"User\" SET \"createdAt\" = date_trunc('hour', now()) WHERE role = 'MEMBER'"
    )
    for n in range(7):
        db.execute(
            'INSERT INTO audit_log (actor, action, resource, "resourceId", details)'
            " VALUES ('cli:test', 'test.paging', 'test', %s, '{}')",
            [str(n)],
        )
    return {"Authorization": f"Bearer {tokens[0]}"}


def _get(client: TestClient, headers: dict[str, str], name: str, **params: Any) -> Any:
    path, query, _ = LISTINGS[name]
    return client.get(path, params={**query, **params}, headers=headers)


@pytest.mark.parametrize("name", NAMES)
def test_walking_every_page_returns_every_row_once_in_order(
    client: TestClient, db: psycopg.Connection[Any], rows: dict[str, str], name: str
) -> None:
    expected = [r[0] for r in db.execute(LISTINGS[name][2])]
    assert len(expected) >= 5
    whole = _get(client, rows, name, limit=500).json()
    assert set(whole) == {"items", "next_cursor"} and whole["next_cursor"] is None
    assert [r["id"] for r in whole["items"]] == expected
    for limit in (1, 2, 3):
        seen: list[str] = []
        cursor = None
        for _ in range(len(expected) + 1):
            resp = _get(client, rows, name, limit=limit, **({"cursor": cursor} if cursor else {}))
            assert resp.status_code == 200, resp.text
            page = resp.json()
            assert len(page["items"]) <= limit
            seen.extend(r["id"] for r in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected, (name, limit)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "kind",
    ["edited payload", "edited tag", "another listing", "NUL", "truncated", "no tag", "garbage"]
    + ["huge"],
)
def test_a_forged_cursor_is_422_never_500(
    client: TestClient, rows: dict[str, str], name: str, kind: str
) -> None:
    genuine = _get(client, rows, name, limit=1).json()["next_cursor"]
    other = NAMES[(NAMES.index(name) + 1) % len(NAMES)]
    foreign = _get(client, rows, other, limit=1).json()["next_cursor"]
    assert genuine and foreign
    resp = _get(client, rows, name, limit=1, cursor=forgeries(genuine, foreign)[kind])
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid"
    if kind != "NUL":  # a NUL may be refused before the listing sees it: 422 all the same
        assert error["details"]["field"] == "cursor"


def test_a_cursor_is_bound_to_the_sort_and_filters_it_was_made_for(
    client: TestClient, rows: dict[str, str]
) -> None:
    by_email = _get(client, rows, "users", limit=1, sort="email").json()["next_cursor"]
    assert _get(client, rows, "users", limit=1, sort="email", cursor=by_email).status_code == 200
    resp = _get(client, rows, "users", limit=1, sort="xp", cursor=by_email)
    assert resp.status_code == 422 and "another sort or filter" in resp.json()["error"]["message"]
    filtered = _get(client, rows, "audit", limit=1, action="test.*").json()["next_cursor"]
    assert _get(client, rows, "audit", limit=1, cursor=filtered).status_code == 422
    live = client.get("/api/auth/sessions", params={"limit": 1}, headers=rows).json()
    resp = _get(client, rows, "sessions", limit=1, cursor=live["next_cursor"])  # include_ended
    assert resp.status_code == 422


@pytest.mark.parametrize("limit", ["0", "-1", "501", "1000000"])
def test_a_limit_out_of_range_is_the_same_error_everywhere(
    client: TestClient, rows: dict[str, str], limit: str
) -> None:
    for name in NAMES:
        resp = _get(client, rows, name, limit=limit)
        assert resp.status_code == 422, (name, resp.text)
        assert resp.json() == {"error": LIMIT_ERROR}, name


def test_the_default_page_is_fifty(
    client: TestClient, db: psycopg.Connection[Any], rows: dict[str, str]
) -> None:
    db.execute(
        "INSERT INTO audit_log (actor, action, details)"
        " SELECT 'cli:test', 'test.many', '{}' FROM generate_series(1, 60)"
    )
    page = _get(client, rows, "audit", action="test.many").json()
    assert len(page["items"]) == 50 and page["next_cursor"] is not None


def test_audit_entries_name_the_acting_user_by_email(
    client: TestClient, db: psycopg.Connection[Any], rows: dict[str, str]
) -> None:
    admin_id = db.execute('SELECT id FROM "User" WHERE email = %s', [ADMIN]).fetchone()
    assert admin_id is not None
    db.execute(
        "INSERT INTO audit_log (actor, action, details) VALUES (%s, 'test.by_user', '{}')",
        [admin_id[0]],
    )
    items = _get(client, rows, "audit", action="test.*").json()["items"]
    by_user = next(e for e in items if e["action"] == "test.by_user")
    assert (by_user["actor"], by_user["actorEmail"]) == (admin_id[0], ADMIN)
    by_cli = next(e for e in items if e["action"] == "test.paging")
    assert (by_cli["actor"], by_cli["actorEmail"]) == ("cli:test", None)


def test_page_models_keep_plain_names_in_openapi(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for model in ("UserAccountPage", "SessionPage", "RolePage", "PermissionPage", "StagePage"):
        assert set(schemas[model]["properties"]) == {"items", "next_cursor"}, model
    assert set(schemas["AuditPage"]["properties"]) == {"items", "next_cursor"}
    assert not [n for n in schemas if "[" in n or "Page_" in n or "paging" in n]
