"""Each page's permission gate: no session, the permission missing (403 page, audited, link
hidden), and held (the page)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.web.routes import PAGES, ROUTES

PROTECTED = [(path, perm) for path, perm in PAGES.items() if perm]


@pytest.mark.parametrize("path", list(PAGES))
def test_without_a_session_a_page_sends_to_the_login_form(client: TestClient, path: str) -> None:
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize(("path", "perm"), PROTECTED)
def test_without_its_permission_a_page_is_refused_and_its_link_hidden(
    client: TestClient,
    browse_with: Callable[[set[str]], dict[str, Any]],
    db: psycopg.Connection[Any],
    path: str,
    perm: str,
) -> None:
    others = {p for p in PAGES.values() if p and p != perm}
    user = browse_with(others)
    r = client.get(path)
    assert r.status_code == 403
    assert "Not allowed" in r.text and perm in r.text
    assert f'href="{path}"' not in client.get("/journey").text
    denied = db.execute(
        "SELECT count(*) FROM audit_log WHERE actor = %s AND action = 'authz.denied'"
        ' AND "resourceId" = %s',
        [user["id"], perm],
    ).fetchone()
    assert denied == (1,)


@pytest.mark.parametrize(("path", "perm"), PROTECTED)
def test_with_its_permission_a_page_renders_and_is_linked(
    client: TestClient,
    browse_with: Callable[[set[str]], dict[str, Any]],
    path: str,
    perm: str,
) -> None:
    browse_with({perm})
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert f'href="{path}"' in r.text
    assert "unsafe-inline" not in r.headers["content-security-policy"]


def test_every_write_route_refuses_a_missing_csrf_token(
    client: TestClient, browse: Callable[..., dict[str, Any]]
) -> None:
    browse("SUPER_ADMIN")
    writes = [path for path, _, methods in ROUTES if "POST" in methods and path != "/login"]
    for path in writes:
        concrete = path.replace("{", "x").replace("}", "")
        r = client.post(concrete, data={"confirmed": "yes"})
        assert r.status_code == 403, path
        assert "Form refused" in r.text, path


def test_a_member_sees_no_operator_link(client: TestClient, browse: Callable[..., Any]) -> None:
    browse("MEMBER")
    page = client.get("/journey").text
    assert "/admin" not in page
    assert client.get("/", follow_redirects=False).headers["location"] == "/journey"


def test_an_unknown_page_is_a_404(client: TestClient, browse: Callable[..., Any]) -> None:
    browse("SUPER_ADMIN")
    r = client.get("/admin/users/no-such-user")
    assert r.status_code == 404 and "Not found" in r.text
    assert client.get("/admin/data/no_such_table").status_code == 404
