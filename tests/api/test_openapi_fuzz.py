"""Schema-driven fuzzing of the whole API (Schemathesis): no 5xx, responses match the spec.

Bounded: a few generated cases per operation, so the module runs well under two
minutes. Each operation gets a fresh seeded database and a fresh admin session.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from smartstart.api.app import create_app
from smartstart.config import Settings
from smartstart.domain import sessions

MAX_EXAMPLES = 12


@pytest.fixture(scope="module")
def api_schema() -> Any:
    """The app's OpenAPI schema as it serves it: loaded once, not once per operation (~1 s)."""
    return schemathesis.openapi.from_asgi(
        "/openapi.json",
        create_app(Settings(_env_file=None)),  # type: ignore[call-arg]
    )


@pytest.fixture
def app(seeded_settings: Settings) -> Iterator[Any]:
    """An app on this test's own database, lifespan started: the one each case is sent to."""
    app = create_app(seeded_settings)
    with TestClient(app):
        yield app


@pytest.fixture
def admin_token(seeded_settings: Settings) -> str:
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT id FROM \"User\" WHERE email = 'admin@alicesolutionsgroup.com'"
        ).fetchone()
        assert row is not None
        token, _ = sessions.create(conn, row[0], lifetime=timedelta(hours=1))
    return token


def _operations() -> list[tuple[str, str]]:
    spec = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    return [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]


CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.response_schema_conformance,
]


@pytest.mark.parametrize(("method", "path"), _operations())
def test_api_never_fails_on_generated_input(
    method: str, path: str, api_schema: Any, app: Any, admin_token: str
) -> None:
    operation = api_schema[path][method]
    headers = {"Authorization": f"Bearer {admin_token}"}

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        response = case.call(headers=headers, app=app)
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
        case.validate_response(response, checks=CHECKS)

    check()
