"""Every route of the app, called without a session, without its permission and with it.

Generated from the route table: a new route that declares no access (public,
authenticated or a permission) fails here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.api.access import access_of, api_routes
from smartstart.api.app import create_app
from smartstart.api.deps import Public, Require
from smartstart.config import Settings
from smartstart.domain import sessions

_app = create_app(Settings(_env_file=None))  # type: ignore[call-arg] - route table only


ROUTES = api_routes(_app)
CASES = [(method, r) for r in ROUTES for method in sorted(r.methods - {"HEAD"})]


def case_id(case: tuple[str, Any]) -> str:
    return f"{case[0]} {case[1].path}"


def test_every_route_declares_its_access() -> None:
    undeclared = [case_id(c) for c in CASES if not access_of(c[1])]
    assert undeclared == [], "routes without public/authenticated/require(...)"


def test_no_route_mixes_public_and_protected() -> None:
    mixed = [
        case_id(c)
        for c in CASES
        if any(isinstance(a, Public) for a in access_of(c[1]))
        and any(isinstance(a, Require) for a in access_of(c[1]))
    ]
    assert mixed == []


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)


@pytest.fixture
def session_with(
    db: psycopg.Connection[Any],
) -> Iterator[Callable[[set[str]], dict[str, str]]]:
    """Bearer headers of a fresh user whose only role grants exactly these permissions."""
    made: list[str] = []

    def make(perms: set[str]) -> dict[str, str]:
        n = uuid.uuid4().hex[:10]
        role = f"MATRIX_{n}".upper()
        db.execute('INSERT INTO "Role" (name) VALUES (%s)', [role])
        for perm in perms:
            db.execute(
                'INSERT INTO "RolePermission" ("roleId", "permissionId")'
                ' SELECT r.id, p.id FROM "Role" r, "Permission" p'
                " WHERE r.name = %s AND p.name = %s",
                [role, perm],
            )
        row = db.execute(
            'INSERT INTO "User" (email, username, password, role)'
            " VALUES (%s, %s, '$2b$04$abcdefghijklmnopqrstuv', %s) RETURNING id",
            [f"m{n}@example.com", f"m{n}", role],
        ).fetchone()
        assert row is not None
        made.append(row[0])
        token, _ = sessions.create(db, row[0], lifetime=timedelta(hours=1))
        return {"Authorization": f"Bearer {token}"}

    yield make


def call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> int:
    kwargs: dict[str, Any] = {"headers": headers}
    if method in {"POST", "PUT", "PATCH"}:
        kwargs["json"] = {}
    return client.request(method, concrete(path), **kwargs).status_code


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_route_access(
    case: tuple[str, Any],
    client: TestClient,
    session_with: Callable[[set[str]], dict[str, str]],
) -> None:
    method, route = case
    markers = access_of(route)
    assert markers, f"{case_id(case)} declares no access"
    if any(isinstance(m, Public) for m in markers):
        assert call(client, method, route.path, {}) not in (401, 403)
        return
    perms = {m.permission for m in markers if isinstance(m, Require) and m.permission}
    assert call(client, method, route.path, {}) == 401
    if perms:
        # a user holding every other permission, but not one of these
        for missing in perms:
            assert call(client, method, route.path, session_with(perms - {missing})) == 403
    assert call(client, method, route.path, session_with(perms)) not in (401, 403)


def test_openapi_documents_every_operation_and_its_access() -> None:
    spec = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    missing = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if not op.get("summary") or "x-access" not in op:
                missing.append(f"{method.upper()} {path}")
    assert missing == []
    users_get = spec["paths"]["/api/users/{user_id}"]["get"]
    assert users_get["x-access"] == "requires `users:read`"
    assert spec["paths"]["/healthz"]["get"]["x-access"] == "public"
    assert spec["paths"]["/api/auth/me"]["get"]["x-access"] == "signed-in user"


def test_no_protected_route_takes_a_connection_before_its_401(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A token-less flood must not tie up the pool: authentication comes first.
    taken: list[str] = []
    pool = client.app.state.pool  # type: ignore[attr-defined]
    original = pool.getconn

    def counting(*args: Any, **kwargs: Any) -> Any:
        taken.append("conn")
        return original(*args, **kwargs)

    monkeypatch.setattr(pool, "getconn", counting)
    for method, route in CASES:
        if any(isinstance(m, Public) for m in access_of(route)):
            continue
        before = len(taken)
        assert call(client, method, route.path, {}) == 401
        assert len(taken) == before, f"{case_id((method, route))} took a connection"
