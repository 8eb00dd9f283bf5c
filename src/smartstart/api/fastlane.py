"""A short way through FastAPI's router for the two benchmarked reads.

FastAPI spends about a fifth of a hot read routing (it tries routes one by one, twice per
included router) and solving dependencies. The fast lane sits where the router's own
middleware stack goes, inside every middleware of the app, and answers
`GET /api/users/{user_id}` and `GET /api/authz/check?user=…&permission=…` by calling the
routes' own access dependencies and endpoint functions: the same access rule, audit of a
denial, errors (raised to the app's exception handlers, as from the route), headers and
body. Anything else, including every request whose query FastAPI would have to validate
or could read differently (a parameter repeated, unknown or out of bounds, `explain`),
goes through FastAPI as before.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from smartstart.api.deps import Require, RequireRiding, current_principal
from smartstart.api.routes import rbac as rbac_routes
from smartstart.api.routes import users as users_routes
from smartstart.domain import rbac
from smartstart.domain.resolve import UserRow

Serve = Callable[[Request], Awaitable[Any]]


class Lane:
    """One route served without FastAPI's routing and dependency solving."""

    def __init__(self, app: FastAPI, path: str, serve: Serve) -> None:
        routes = _flat(app)
        found = [
            i
            for i, r in enumerate(routes)
            if getattr(r, "path", None) == path and "GET" in (getattr(r, "methods", None) or ())
        ]
        if len(found) != 1:
            raise RuntimeError(f"fast lane: no single GET route {path!r}")
        self.route = routes[found[0]]
        self.serve = serve
        # Routes FastAPI would try first that could take a path of this form: a request
        # one of them matches goes through FastAPI.
        literal = path.split("{", 1)[0]
        self.earlier = [
            r
            for r in routes[: found[0]]
            if (p := str(getattr(r, "path", "")).split("{", 1)[0]).startswith(literal)
            or literal.startswith(p)
        ]

    def match(self, scope: Scope) -> Scope | None:
        """The route's child scope when FastAPI would route `scope` to it; else None."""
        match, child = self.route.matches(scope)
        if match is not Match.FULL:
            return None
        for other in self.earlier:
            if other.matches(scope)[0] is Match.FULL:
                return None
        return typing.cast(Scope, child)


class FastLane:
    """The router's middleware: the lanes first, FastAPI's routing for everything else."""

    def __init__(self, app: ASGIApp, lanes: list[Lane]) -> None:
        self.app = app
        self.lanes = lanes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            for lane in self.lanes:
                child = lane.match(scope)
                if child is None:
                    continue
                scope.update(child)
                original = getattr(lane.route, "original_route", lane.route)
                scope["route"] = original if isinstance(original, APIRoute) else lane.route
                request = Request(scope, receive)
                response = await lane.serve(request)
                if response is not None:
                    await response(scope, receive, send)
                    return
                break  # the lane declined: FastAPI routes it (validation, errors)
        await self.app(scope, receive, send)


def _dependency(annotated: Any) -> Any:
    """The dependency object of an `Annotated[T, Depends(...)]` alias."""
    return typing.get_args(annotated)[1].dependency


_read_one: RequireRiding[UserRow] = _dependency(users_routes.ReadOne)
_user_reader: Require = _dependency(rbac_routes.UserReader)
_CHECK_KEYS = frozenset({"user", "permission"})


async def _get_user(request: Request) -> Any:
    read = await _read_one(request)
    return await users_routes.get_user(
        request=request, read=read, user_id=request.path_params["user_id"]
    )


async def _authz_check(request: Request) -> Any:
    items = request.query_params.multi_items()
    if len(items) != 2 or {k for k, _ in items} != _CHECK_KEYS:
        return None
    params = dict(items)
    user, permission = params["user"], params["permission"]
    # The route's own bounds; "\n" aside, where Python's `$` and pydantic's differ.
    if not 0 < len(user) <= rbac.MAX_REF_LENGTH or len(permission) > 81:
        return None
    if "\n" in permission or not rbac.PERMISSION_NAME_RE.match(permission):
        return None
    principal = await _user_reader(request, await current_principal(request))
    return await rbac_routes.authz_check(
        request=request, principal=principal, user=user, permission=permission, explain=False
    )


def install(app: FastAPI) -> None:
    """Serve the hot reads through the fast lane (call once all routes are added)."""
    lanes = [
        Lane(app, "/api/users/{user_id}", _get_user),
        Lane(app, "/api/authz/check", _authz_check),
    ]
    app.router.middleware_stack = FastLane(app.router.middleware_stack, lanes)


def _flat(app: FastAPI) -> list[Any]:
    """The app's routes in the order FastAPI tries them, included routers flattened."""
    out: list[Any] = []
    for route in app.routes:
        if hasattr(route, "effective_route_contexts"):
            out.extend(route.effective_route_contexts())
        else:
            out.append(route)
    return out
