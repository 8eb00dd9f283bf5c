"""RFC 9110 over the whole route table: HEAD, Allow on 405, Location on 201; 415; gzip; CORS."""

from __future__ import annotations

import gzip
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from smartstart.api.access import api_routes
from smartstart.api.app import create_app
from smartstart.config import Settings

_app = create_app(Settings(_env_file=None))  # the route table only: no database
ROUTES = [*api_routes(_app), *(r for r in _app.routes if type(r).__name__ == "Route")]
PATHS = sorted({r.path for r in ROUTES})
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)


def methods_at(path: str) -> set[str]:
    """Every method the route table answers at a concrete path (HEAD with GET)."""
    found: set[str] = set()
    for route in ROUTES:
        if route.path_regex.match(path):
            found |= set(route.methods)
    return found | ({"HEAD"} if "GET" in found else set())


def error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body


def test_head_is_answered_wherever_get_is(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # One test over the whole table (not one per path): each would cost a fresh database.
    walked = 0
    for path in PATHS:
        url = concrete(path)
        if "GET" not in methods_at(url):
            continue
        got = client.get(url, headers=admin_headers)
        head = client.head(url, headers=admin_headers)
        assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
        assert head.content == b"", path
        assert head.headers.get("content-type") == got.headers.get("content-type"), path
        if "content-length" in got.headers and "content-encoding" not in got.headers:
            assert head.headers["content-length"] == str(len(got.content)), path
        walked += 1
    assert walked >= 20


def test_head_healthz(client: TestClient) -> None:
    response = client.head("/healthz")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == str(len(b'{"status":"ok"}'))


def test_a_405_allows_every_method_of_the_path(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    for path in PATHS:
        url = concrete(path)
        allowed = methods_at(url)
        for method in sorted({"GET", *WRITES} - allowed):
            response = client.request(method, url, headers=admin_headers)
            error(response, 405, "method_not_allowed")
            assert set(response.headers["allow"].split(", ")) == allowed, (method, path)


def test_delete_on_the_users_collection_allows_get_head_and_post(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.delete("/api/users", headers=admin_headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"


CREATES: dict[str, dict[str, Any]] = {
    "/api/users": {
        "email": "located@example.com",
        "username": "located",
        "password": "a long enough passphrase 42",
    },
    "/api/roles": {"name": "LOCATED_ROLE"},
    "/api/permissions": {"name": "located:read"},
    "/api/journey/stages": {"name": "Located stage"},
    "/api/admin/backups": {"note": "located"},
}


def test_every_create_route_is_covered() -> None:
    creates = {r.path for r in api_routes(_app) if getattr(r, "status_code", None) == 201}
    assert creates == set(CREATES), "a new 201 route: add a body for it to CREATES"


@pytest.mark.parametrize("path", sorted(CREATES))
def test_a_201_says_where_the_new_resource_is(
    client: TestClient, admin_headers: dict[str, str], path: str
) -> None:
    response = client.post(path, json=CREATES[path], headers=admin_headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["location"] == f"{path}/{created['id']}"
    if "GET" in methods_at(response.headers["location"]):
        fetched = client.get(response.headers["location"], headers=admin_headers)
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["id"] == created["id"]


JSON_WRITES = [
    (method, r.path)
    for r in api_routes(_app)
    if r.body_field is not None
    for method in sorted(set(r.methods) & set(WRITES))
]


def test_a_body_that_is_not_json_is_a_415(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    assert len(JSON_WRITES) >= 10
    for method, path in JSON_WRITES:
        response = client.request(
            method,
            concrete(path),
            content=b'{"name": "x"}',
            headers={**admin_headers, "Content-Type": "text/plain"},
        )
        error(response, 415, "unsupported_media_type")
        assert response.json()["error"]["details"]["content_type"] == "text/plain", path


def test_a_nul_or_too_much_comes_before_the_415(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    plain = {**admin_headers, "Content-Type": "text/plain"}
    nul = client.post("/api/roles", content=b"name=a%00b\x00", headers=plain)
    error(nul, 422, "invalid")
    assert nul.json()["error"]["details"]["reason"] == "nul_byte"
    huge = client.post("/api/roles", content=b"x" * (2 * 1024 * 1024), headers=plain)
    error(huge, 413, "payload_too_large")


def test_json_with_a_charset_or_a_json_suffix_is_read(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = client.post(
            "/api/roles",
            content=b'{"name": "ROLE_%d"}' % len(content_type),
            headers={**admin_headers, "Content-Type": content_type},
        )
        assert response.status_code == 201, response.text


def test_large_responses_are_gzipped_small_ones_not(
    client: TestClient, admin_headers: dict[str, str], make_user: Callable[..., Any]
) -> None:
    for _ in range(30):
        make_user()
    raw = {**admin_headers, "Accept-Encoding": "gzip"}
    page = client.get("/api/users?limit=500", headers=raw)
    assert page.status_code == 200
    assert page.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in page.headers["vary"].lower()
    assert len(page.json()["items"]) >= 30  # httpx decoded it
    plain = client.get("/api/users?limit=500", headers={**admin_headers, "Accept-Encoding": ""})
    assert "content-encoding" not in plain.headers
    assert plain.json() == page.json()
    assert int(page.headers["content-length"]) < len(plain.content) / 3
    small = client.get("/healthz", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers
    refused = client.get("/openapi.json", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers
    streamed = client.get("/docs/static/swagger-ui.css", headers={"Accept-Encoding": "gzip"})
    assert streamed.headers["content-encoding"] == "gzip"
    assert b"swagger-ui" in streamed.content


def test_gzip_body_is_a_valid_gzip_stream(client: TestClient) -> None:
    with client.stream("GET", "/openapi.json", headers={"Accept-Encoding": "gzip"}) as response:
        compressed = b"".join(response.iter_raw())
    assert response.headers["content-length"] == str(len(compressed))
    assert gzip.decompress(compressed).startswith(b'{"openapi"')


ORIGIN = "https://app.example.com"


def test_cors_is_off_by_default(client: TestClient) -> None:
    preflight = client.options(
        "/api/users", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert (
        "access-control-allow-origin"
        not in client.get("/healthz", headers={"Origin": ORIGIN}).headers
    )


def test_cors_origins_setting(seeded_settings: Settings, admin_headers: dict[str, str]) -> None:
    settings = seeded_settings.model_copy(
        update={"cors_origins": f"{ORIGIN}, http://localhost:3000"}
    )
    with TestClient(create_app(settings)) as c:
        preflight = c.options(
            "/api/users",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, x-csrf-token",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert preflight.headers["access-control-allow-credentials"] == "true"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "x-csrf-token" in preflight.headers["access-control-allow-headers"].lower()
        simple = c.get("/api/users?limit=1", headers={**admin_headers, "Origin": ORIGIN})
        assert simple.status_code == 200
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        other = c.get("/healthz", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in other.headers
        refused = c.options(
            "/api/users",
            headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in refused.headers
        error(refused, 400, "cors_refused")
        assert "origin" in refused.json()["error"]["message"]


@pytest.mark.parametrize("value", ["app.example.com", "https://app.example.com/path", "ftp://x"])
def test_a_cors_origin_that_is_no_origin_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="SMARTSTART_CORS_ORIGINS"):
        Settings(_env_file=None, cors_origins=value)


def test_the_openapi_document_declares_location_and_415() -> None:
    paths = _app.openapi()["paths"]
    for path in CREATES:
        assert "Location" in paths[path]["post"]["responses"]["201"]["headers"]
    for method, path in JSON_WRITES:
        assert "415" in paths[path][method.lower()]["responses"], (method, path)
