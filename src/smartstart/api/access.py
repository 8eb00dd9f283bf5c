"""Who may call each route, read from the route table (for the docs and the tests)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from smartstart.api.deps import Public, Require


def api_routes(app: FastAPI) -> list[Any]:
    """Every endpoint: plain routes and those of included routers (as FastAPI resolves them)."""
    out: list[Any] = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            out.append(route)
        elif hasattr(route, "effective_route_contexts"):
            out.extend(ctx for ctx in route.effective_route_contexts() if ctx.methods)
    return out


def access_of(route: Any) -> list[Public | Require]:
    """The access markers a route declares, at any depth of its dependencies."""
    found: list[Public | Require] = []

    def walk(dependant: Any) -> None:
        for dep in dependant.dependencies:
            if isinstance(dep.call, Public | Require):
                found.append(dep.call)
            walk(dep)

    walk(route.dependant)
    return found


def describe(markers: list[Public | Require]) -> str:
    """One phrase for the docs: public, signed in, or the permissions required."""
    if not markers or any(isinstance(m, Public) for m in markers):
        return "public"
    perms = sorted({m.permission for m in markers if isinstance(m, Require) and m.permission})
    return "requires " + ", ".join(f"`{p}`" for p in perms) if perms else "signed-in user"


def document_access(app: FastAPI) -> None:
    """Add each operation's access rule to its OpenAPI description and `x-access`."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        # Read when the spec is first asked for, not at start-up: resolving every route's
        # dependencies costs ~0.1 s, paid by each app (every test's) that never serves it.
        rules = {
            (path, method.lower()): describe(access_of(route))
            for route in api_routes(app)
            for path in [route.path]
            for method in route.methods
        }
        schema = generate()
        schema.setdefault("components", {})["securitySchemes"] = {
            "session": {
                "type": "http",
                "scheme": "bearer",
                "description": "The token from POST /api/auth/login",
            }
        }
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                rule = rules.get((path, method))
                if rule is None:
                    continue
                operation["x-access"] = rule
                if rule != "public":
                    operation["security"] = [{"session": []}]
                text = operation.get("description", "")
                operation["description"] = f"Access: {rule}.\n\n{text}".strip()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
