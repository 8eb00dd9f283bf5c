"""The HTTP edge: header bounds, NUL bytes, proxies, security headers, redirects, CSRF."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.api.app import create_app
from smartstart.api.edge import MAX_HEADER_BYTES, forwarded_client
from smartstart.config import Settings
from tests.api.test_server import serve  # noqa: F401 - the fixture

PASSWORD = "correct horse battery staple"  # noqa: S105 - make_user's users


@pytest.fixture
def fast(seeded_settings: Settings) -> Iterator[TestClient]:
    """The Brain with cost-4 hashing, so make_user's users sign in without a rehash."""
    settings = seeded_settings.model_copy(update={"bcrypt_rounds": 4})
    with TestClient(create_app(settings)) as c:
        yield c


def assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    return body["error"]  # type: ignore[no-any-return]


# -- header size (item 2) ------------------------------------------------------------


def test_oversized_headers_are_431_before_anything_is_stored(
    client: TestClient, db: psycopg.Connection[Any]
) -> None:
    before = db.execute("SELECT count(*) FROM audit_log").fetchone()
    resp = client.post(
        "/api/auth/login",
        json={"identifier": "nobody@example.com", "password": "wrong password"},
        headers={"User-Agent": "x" * (MAX_HEADER_BYTES + 1)},
    )
    assert_error(resp, 431, "headers_too_large")
    assert db.execute("SELECT count(*) FROM audit_log").fetchone() == before
    # Ordinary headers, even a few KiB of cookies, pass.
    ok = client.get("/healthz", headers={"Cookie": "a=" + "b" * 4000})
    assert ok.status_code == 200


# -- NUL bytes (item 6) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "where"),
    [
        ("POST", "/api/auth/login", {"json": {"identifier": "a\x00b", "password": "x"}}, "body"),
        ("DELETE", "/api/auth/sessions/%00", {}, "path"),
        ("GET", "/api/audit?actor=a%00b", {}, "query"),
        ("GET", "/api/audit?cursor=eyJpZCI6%00MX0", {}, "query"),
        ("DELETE", "/api/auth/throttle?email=a%00b", {}, "query"),
    ],
)
def test_the_reported_nul_requests_are_422(
    client: TestClient,
    admin_headers: dict[str, str],
    method: str,
    url: str,
    kwargs: dict[str, Any],
    where: str,
) -> None:
    resp = client.request(method, url, headers=admin_headers, **kwargs)
    error = assert_error(resp, 422, "invalid")
    assert error["details"] == {"reason": "nul_byte", "where": where}


def test_a_nul_is_refused_in_every_kind_of_input(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    cases = {
        "path": client.get("/api/users/a%00b", headers=admin_headers),
        "query": client.get("/api/users?q=%00", headers=admin_headers),
        "query param": client.get("/api/users", params={"q": "a\x00"}, headers=admin_headers),
        "json escape": client.post(
            "/api/auth/login",
            content=b'{"identifier": "a\\u0000", "password": "x"}',
            headers={"content-type": "application/json"},
        ),
        "form": client.post(
            "/api/auth/login",
            content=b"identifier=a%00b&password=x",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        "raw body": client.post(
            "/api/auth/login",
            content=b'{"identifier": "a\x00", "password": "x"}',
            headers={"content-type": "application/json"},
        ),
    }
    for kind, resp in cases.items():
        assert resp.status_code == 422, (kind, resp.text)
        assert resp.json()["error"]["details"]["reason"] == "nul_byte", kind
    # An escaped backslash followed by "u0000" is text, not a NUL.
    text = client.post(
        "/api/auth/login",
        content=b'{"identifier": "a\\\\u0000", "password": "x"}',
        headers={"content-type": "application/json"},
    )
    assert text.status_code == 401, text.text


# -- X-Forwarded-For (item 3) --------------------------------------------------------


def login_ip(
    client: TestClient, db: psycopg.Connection[Any], user: dict[str, Any], **h: str
) -> str:
    resp = client.post(
        "/api/auth/login", json={"identifier": user["email"], "password": PASSWORD}, headers=h
    )
    assert resp.status_code == 200, resp.text
    row = db.execute(
        'SELECT host(ip::inet) FROM "Session" WHERE id = %s', [resp.json()["session_id"]]
    ).fetchone()
    assert row is not None
    return str(row[0])


def proxied(settings: Settings, trusted: str, peer: str) -> TestClient:
    settings = settings.model_copy(update={"bcrypt_rounds": 4, "trusted_proxies": trusted})
    return TestClient(create_app(settings), client=(peer, 40000))


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    seeded_settings: Settings, db: psycopg.Connection[Any], make_user: Any
) -> None:
    user = make_user()
    with proxied(seeded_settings, "", "127.0.0.1") as c:
        assert login_ip(c, db, user, **{"X-Forwarded-For": "203.0.113.9"}) == "127.0.0.1"
    with proxied(seeded_settings, "10.0.0.0/8", "127.0.0.1") as c:
        assert login_ip(c, db, user, **{"X-Forwarded-For": "203.0.113.9"}) == "127.0.0.1"


def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    seeded_settings: Settings, db: psycopg.Connection[Any], make_user: Any
) -> None:
    user = make_user()
    with proxied(seeded_settings, "10.0.0.1, 10.1.0.0/16", "10.0.0.1") as c:
        # The right-most hop not of ours: what the client wrote on the left is not believed.
        xff = "198.51.100.7, 203.0.113.9, 10.1.2.3"
        assert login_ip(c, db, user, **{"X-Forwarded-For": xff}) == "203.0.113.9"
        # Garbage is ignored: the peer stays the client.
        for junk in ("'; DROP TABLE x; --", "203.0.113.9:80", "", "x" * 300):
            assert login_ip(c, db, user, **{"X-Forwarded-For": junk}) == "10.0.0.1"


def test_forwarded_client_parsing() -> None:
    nets = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert forwarded_client("1.2.3.4", nets) == "1.2.3.4"
    assert forwarded_client("1.2.3.4, 5.6.7.8", nets) == "5.6.7.8"
    assert forwarded_client("1.2.3.4, 10.0.0.2, ::1", nets) == "1.2.3.4"
    assert forwarded_client("2001:db8::1", nets) == "2001:db8::1"
    assert forwarded_client("10.0.0.3", nets) == "10.0.0.3"  # all hops ours: the first
    assert forwarded_client("nonsense, 1.2.3.4", nets) == "1.2.3.4"
    assert forwarded_client("1.2.3.4, nonsense", nets) is None
    assert forwarded_client("", nets) is None


def test_a_bad_trusted_proxy_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="SMARTSTART_TRUSTED_PROXIES"):
        Settings(_env_file=None, trusted_proxies="10.0.0.1, not-an-ip")  # type: ignore[call-arg]


# -- response headers and redirects (item 14) ----------------------------------------


def test_every_response_says_nosniff_and_authenticated_json_is_not_stored(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    public = client.get("/healthz")
    assert public.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in public.headers.get("cache-control", "")
    for resp in (
        client.get("/api/users", headers=admin_headers),
        client.get("/api/auth/me", headers=admin_headers),
        client.get("/api/users/00000000-0000-0000-0000-000000000000", headers=admin_headers),
        client.get("/api/auth/me", headers={"Authorization": "Bearer nope"}),
    ):
        assert resp.headers["x-content-type-options"] == "nosniff", resp.url
        assert resp.headers.get_list("cache-control") == ["no-store"], resp.url
    assert client.get("/nowhere").headers["x-content-type-options"] == "nosniff"


def test_redirects_never_echo_the_host_header(client: TestClient) -> None:
    resp = client.get("/api/users/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert resp.status_code in (307, 308), resp.text
    assert resp.headers["location"] == "/api/users"
    assert resp.headers["x-content-type-options"] == "nosniff"


# -- CSRF bound to the session (item 15) ---------------------------------------------


def test_a_csrf_pair_from_another_session_is_refused(fast: TestClient, make_user: Any) -> None:
    attacker = fast.post(
        "/api/auth/login", json={"identifier": make_user()["email"], "password": PASSWORD}
    ).json()
    victim_user = make_user()
    victim = fast.post(
        "/api/auth/login", json={"identifier": victim_user["email"], "password": PASSWORD}
    ).json()
    # The victim's session cookie with a CSRF cookie and header the attacker obtained.
    fast.cookies.set("smartstart_session", victim["token"])
    fast.cookies.set("smartstart_csrf", attacker["csrf_token"])
    refused = fast.post("/api/auth/logout", headers={"X-CSRF-Token": attacker["csrf_token"]})
    error = assert_error(refused, 403, "forbidden")
    assert error["details"] == {"reason": "csrf"}
    assert fast.get("/api/auth/me").json()["user"]["id"] == victim_user["id"]

    fast.cookies.set("smartstart_csrf", victim["csrf_token"])
    ok = fast.post("/api/auth/logout", headers={"X-CSRF-Token": victim["csrf_token"]})
    assert ok.status_code == 204
    # Bearer requests need no CSRF token at all.
    fast.cookies.clear()
    resp = fast.post("/api/auth/logout", headers={"Authorization": f"Bearer {attacker['token']}"})
    assert resp.status_code == 204


# -- through a real server socket (uvicorn's own header handling) ----------------------


def test_a_real_server_refuses_huge_headers_and_ignores_forwarded_for_by_default(
    serve: Callable[..., Any],  # noqa: F811 - the fixture imported above
    db: psycopg.Connection[Any],
    make_user: Any,
) -> None:
    _, base, _ = serve("--workers", "1")
    user = make_user()
    before = db.execute("SELECT count(*) FROM audit_log").fetchone()
    resp = httpx.post(
        f"{base}/api/auth/login",
        json={"identifier": user["email"], "password": "wrong password"},
        headers={"User-Agent": "x" * (4 * 1024 * 1024)},
        timeout=30,
    )
    assert_error(resp, 431, "headers_too_large")
    assert db.execute("SELECT count(*) FROM audit_log").fetchone() == before

    resp = httpx.post(
        f"{base}/api/auth/login",
        json={"identifier": user["email"], "password": PASSWORD},
        headers={"X-Forwarded-For": "203.0.113.9"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    row = db.execute(
        'SELECT host(ip::inet) FROM "Session" WHERE id = %s', [resp.json()["session_id"]]
    ).fetchone()
    assert row == ("127.0.0.1",)
