"""The OpenAPI document: plain unique schema names, stable operation ids, one name per path
parameter, and bodies and media types as they are sent."""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from smartstart.api import contract
from smartstart.api.app import ROUTE_MODULES, create_app
from smartstart.config import Settings

OPERATION_ID = re.compile(r"^[a-z]+_[a-z_]+$")
SCHEMA_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings())


@pytest.fixture(scope="module")
def spec(app: FastAPI) -> dict[str, Any]:
    return dict(TestClient(app).get("/openapi.json").json())


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def refs(node: Any) -> Iterator[str]:
    """Every $ref in a piece of the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


# -- schema names -----------------------------------------------------------------------


def test_schema_names_are_plain_and_unique(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    # FastAPI names two models of one name after their modules (smartstart__api__...):
    # generators then drop one, or make SmartstartApiRoutesRbacPermissionOut.
    assert [n for n in schemas if not SCHEMA_NAME.match(n)] == []
    titles = Counter(s.get("title", name) for name, s in schemas.items())
    assert [t for t, n in titles.items() if n > 1] == []
    assert all(s.get("title", n) == n for n, s in schemas.items())
    defined = {f"#/components/schemas/{n}" for n in schemas}
    assert set(refs(spec)) - defined == set()


# -- operation ids and path parameters -------------------------------------------------


def test_every_operation_has_a_stable_resource_action_id(
    app: FastAPI, spec: dict[str, Any]
) -> None:
    ids = [op.get("operationId", "") for _, _, op in operations(spec)]
    assert [i for i in ids if not OPERATION_ID.match(i)] == []
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    # Set by the route itself, not made up from its path and method.
    routes = [
        r
        for name in ROUTE_MODULES
        for r in importlib.import_module(f"smartstart.api.routes.{name}").router.routes
        if isinstance(r, APIRoute)
    ] + [r for r in app.routes if isinstance(r, APIRoute) and r.include_in_schema]
    assert len(routes) == len(ids)
    assert [r.path for r in routes if not r.operation_id] == []


def test_a_path_change_keeps_the_operation_ids(app: FastAPI, spec: dict[str, Any]) -> None:
    # The same routes with every path changed (under another prefix): the same ids.
    renamed = FastAPI(generate_unique_id_function=contract.operation_id)
    own = APIRouter()
    own.routes.extend(r for r in app.routes if isinstance(r, APIRoute))
    renamed.include_router(own, prefix="/v2")
    for name in ROUTE_MODULES:
        module = importlib.import_module(f"smartstart.api.routes.{name}")
        renamed.include_router(module.router, prefix="/v2")
    moved = {
        (m, op["operationId"])
        for item in renamed.openapi()["paths"].values()
        for m, op in item.items()
    }
    assert all(p.startswith("/v2/") for p in renamed.openapi()["paths"])
    assert moved == {(m, op["operationId"]) for _, m, op in operations(spec)}


def test_a_route_without_an_id_gets_one_from_its_tag_and_name_not_its_path() -> None:
    app = FastAPI(generate_unique_id_function=contract.operation_id)

    @app.get("/api/things/{thing_id}/parts", tags=["things"])
    def list_parts(thing_id: str) -> list[str]:
        return []

    (operation,) = app.openapi()["paths"]["/api/things/{thing_id}/parts"].values()
    assert operation["operationId"] == "things_list_parts"


def test_one_name_per_path_parameter_of_a_resource(spec: dict[str, Any]) -> None:
    # The segment before a parameter names its resource: /api/users/{user_id}/roles/{role_id}
    names: dict[str, set[str]] = {}
    for path in spec["paths"]:
        segments = path.strip("/").split("/")
        for before, segment in zip(segments, segments[1:], strict=False):
            if segment.startswith("{") and not before.startswith("{"):
                names.setdefault(before, set()).add(segment.strip("{}"))
    assert {r: n for r, n in names.items() if len(n) > 1} == {}
    assert names["users"] == {"user_id"}
    assert names["roles"] == {"role_id"}
    assert names["permissions"] == {"permission_id"}
    for path, _, operation in operations(spec):
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), path


# -- what is sent -------------------------------------------------------------------------


def test_metrics_are_declared_as_the_text_they_are(
    spec: dict[str, Any], client: TestClient
) -> None:
    declared = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(declared) == ["text/plain"]
    sent = client.get("/metrics").headers["content-type"]
    assert sent.split(";")[0] == "text/plain"


def test_readyz_503_body_is_the_declared_shape(
    spec: dict[str, Any], client: TestClient, db: psycopg.Connection[Any]
) -> None:
    responses = spec["paths"]["/readyz"]["get"]["responses"]
    for status in ("200", "503"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Readiness"}
    db.execute("UPDATE alembic_version SET version_num = 'elsewhere'")
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    declared = spec["components"]["schemas"]["Readiness"]
    assert set(body) <= set(declared["properties"])
    assert set(declared["required"]) <= set(body)
    ready = contract.Readiness.model_validate(body)
    assert ready.status == "unavailable" and ready.reason and "elsewhere" in ready.reason


def test_status_and_level_are_the_same_enums_in_queries_and_responses(
    spec: dict[str, Any],
) -> None:
    schemas = spec["components"]["schemas"]

    def ref(node: dict[str, Any]) -> str | None:
        options = node.get("anyOf", [node])
        found = [o["$ref"] for o in options if "$ref" in o]
        return found[0].rsplit("/", 1)[-1] if found else None

    query = {
        p["name"]: ref(p["schema"])
        for p in spec["paths"]["/api/users"]["get"]["parameters"]
        if p["name"] in ("status", "level")
    }
    assert query == {"status": "UserStatus", "level": "UserLevel"}
    account = schemas["UserAccount"]["properties"]
    assert (ref(account["status"]), ref(account["level"])) == ("UserStatus", "UserLevel")
    for model, field, enum in [
        ("UserBrief", "status", "UserStatus"),
        ("CheckedUser", "status", "UserStatus"),
        ("JourneyUser", "level", "UserLevel"),
        ("JourneyStep", "status", "StageStatus"),
        ("Progress", "status", "StageStatus"),
        ("Progress", "level", "UserLevel"),
    ]:
        assert ref(schemas[model]["properties"][field]) == enum, (model, field)
    assert schemas["UserStatus"]["enum"] == ["ACTIVE", "INACTIVE", "SUSPENDED", "PENDING"]
