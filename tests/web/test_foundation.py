"""The web app's foundation: sign-in form, CSRF, CSP, static assets, gates and errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from smartstart.api.deps import SESSION_COOKIE
from tests.web.conftest import FIXTURE_PASSWORD, form_csrf


def test_a_page_without_a_session_goes_to_the_login_form(client: TestClient) -> None:
    r = client.get("/journey", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/journey"


def test_sign_in_through_the_form_and_out(
    client: TestClient, make_user: Callable[..., dict[str, Any]], db: psycopg.Connection[Any]
) -> None:
    user = make_user("MEMBER")
    form = client.get("/login?next=/profile")
    assert form.status_code == 200
    assert "script-src 'self'" in form.headers["content-security-policy"]
    assert "unsafe-inline" not in form.headers["content-security-policy"]
    r = client.post(
        "/login",
        data={
            "identifier": user["email"],
            "password": FIXTURE_PASSWORD,
            "csrf": form_csrf(form.text),
            "next": "/profile",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/profile"
    assert client.cookies.get(SESSION_COOKIE)
    page = client.get("/profile")
    assert page.status_code == 200
    assert user["email"] in page.text
    out = client.post("/logout", data={"csrf": form_csrf(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert client.get("/profile", follow_redirects=False).status_code == 303
    actions = [
        r[0]
        for r in db.execute(
            "SELECT action FROM audit_log WHERE actor = %s ORDER BY id", [user["id"]]
        )
    ]
    assert actions[-2:] == ["auth.login", "auth.logout"]


def test_a_wrong_password_shows_the_form_again_with_the_error(
    client: TestClient, make_user: Callable[..., dict[str, Any]]
) -> None:
    user = make_user("MEMBER")
    form = client.get("/login")
    r = client.post(
        "/login",
        data={"identifier": user["email"], "password": "nope", "csrf": form_csrf(form.text)},
    )
    assert r.status_code == 401
    assert "invalid email/username or password" in r.text
    assert not client.cookies.get(SESSION_COOKIE)


def test_a_login_post_without_the_forms_token_is_refused(
    client: TestClient, make_user: Callable[..., dict[str, Any]]
) -> None:
    user = make_user("MEMBER")
    r = client.post("/login", data={"identifier": user["email"], "password": FIXTURE_PASSWORD})
    assert r.status_code == 403
    assert not client.cookies.get(SESSION_COOKIE)


def test_a_megabyte_login_field_is_refused_plainly(client: TestClient) -> None:
    form = client.get("/login")
    r = client.post(
        "/login",
        data={"identifier": "x" * 500_000, "password": "y", "csrf": form_csrf(form.text)},
    )
    assert r.status_code in (401, 422)
    assert "<form" in r.text


def test_static_assets_come_from_the_package(client: TestClient) -> None:
    css = client.get("/static/app.css")
    assert css.status_code == 200 and "prefers-color-scheme: dark" in css.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/nope.js").status_code == 404


def test_an_unknown_path_is_a_404_page_for_a_browser_and_json_for_the_api(
    client: TestClient,
) -> None:
    page = client.get("/no/such/page", headers={"accept": "text/html,*/*"})
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html") and "Not found" in page.text
    api = client.get("/api/no-such-thing", headers={"accept": "text/html"})
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
    plain = client.get("/no/such/page")
    assert plain.json()["error"]["code"] == "not_found"


def test_sign_in_never_redirects_off_the_site(
    client: TestClient, make_user: Callable[..., dict[str, Any]]
) -> None:
    user = make_user("MEMBER")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        form = client.get("/login", params={"next": target})
        assert 'name="next" value="/"' in form.text
        r = client.post(
            "/login",
            data={
                "identifier": user["email"],
                "password": FIXTURE_PASSWORD,
                "csrf": form_csrf(form.text),
                "next": target,
            },
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/", target
        client.cookies.clear()


def test_the_web_routes_come_after_every_api_route() -> None:
    # FastAPI tries routes in order: an API request never tries a web page's pattern, and
    # the web app adds no middleware (the hot path pays nothing for it).
    from fastapi.routing import APIRoute
    from starlette.routing import Route

    from smartstart.api.app import create_app
    from smartstart.config import Settings
    from smartstart.web.routes import ROUTES

    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    kinds = ["api" if isinstance(r, APIRoute) else "other" for r in app.routes]
    web = {path for path, _, _ in ROUTES}
    first_web = min(i for i, r in enumerate(app.routes) if isinstance(r, Route) and r.path in web)
    assert "api" not in kinds[first_web:]
    middleware = [m.cls.__name__ for m in app.user_middleware]  # type: ignore[attr-defined]
    assert not any("web" in name.lower() for name in middleware)
