"""HTTP semantics the route table implies (RFC 9110), and that FastAPI leaves out.

- HEAD is answered wherever GET is, with GET's headers and no body;
- a 405 lists in `Allow` every method of the path, not only those of the first route
  that matched it (`DELETE /api/users` said `Allow: GET`, though POST creates users);
- a 201 says where the new resource lives (`Location`: the collection's path and its id);
- a body that is not JSON, sent to a route that reads JSON, is a 415 in the API's error
  shape (FastAPI validated the raw text and answered 422).

One pure ASGI middleware; a GET pays one comparison, and only a HEAD, a 201 or a
request with a body that is not JSON pays more.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi import params as fastapi_params
from fastapi.responses import Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smartstart.api import errors
from smartstart.api.access import api_routes

_FORWARD = ("route", "endpoint", "path_params")  # what routing told the HEAD's inner scope


def is_json(content_type: bytes) -> bool:
    """application/json, or a +json type such as application/problem+json."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class RouteTable:
    """Methods per path and the routes that read a JSON body, from the app's routes."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._paths: list[tuple[re.Pattern[str], frozenset[str]]] | None = None
        self._json: list[tuple[re.Pattern[str], frozenset[str]]] | None = None

    def _build(self) -> None:
        paths: list[tuple[re.Pattern[str], frozenset[str]]] = []
        reads_json: list[tuple[re.Pattern[str], frozenset[str]]] = []
        for route in [*api_routes(self.app), *self.app.routes]:
            methods = getattr(route, "methods", None)
            regex = getattr(route, "path_regex", None)
            if not methods or regex is None or isinstance(route, Mount):
                continue
            methods = frozenset(methods | ({"HEAD"} if "GET" in methods else set()))
            paths.append((regex, methods))
            body = getattr(route, "body_field", None)
            dependant = getattr(route, "dependant", None)
            if body is not None and dependant is not None:
                forms = any(
                    isinstance(p.field_info, fastapi_params.Form) for p in dependant.body_params
                )
                if not forms:
                    reads_json.append((regex, methods))
        self._paths, self._json = paths, reads_json

    def allowed(self, path: str) -> list[str]:
        """Every method some route answers at this path, sorted."""
        if self._paths is None:
            self._build()
        assert self._paths is not None
        found: set[str] = set()
        for regex, methods in self._paths:
            if regex.match(path):
                found |= methods
        return sorted(found)

    def reads_json(self, method: str, path: str) -> bool:
        if self._json is None:
            self._build()
        assert self._json is not None
        return any(method in methods and regex.match(path) for regex, methods in self._json)


def install_allow(app: FastAPI, table: RouteTable) -> None:
    """Make every 405's `Allow` list all the path's methods (after errors.install)."""
    handler: Any = app.exception_handlers[StarletteHTTPException]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 405:
            allowed = table.allowed(request.url.path)
            if allowed:
                exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
        response: Response = await handler(request, exc)
        return response

    app.exception_handlers[StarletteHTTPException] = http_error


class Semantics:
    """HEAD as GET without a body, Location on 201, 415 for a body that is not JSON."""

    def __init__(self, app: ASGIApp, table: RouteTable) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "GET":
            await self.app(scope, receive, send)
        elif method == "HEAD":
            await self._head(scope, receive, send)
        elif method == "POST":
            if await self._refused(scope, receive, send, method):
                return
            await self.app(scope, receive, self._locating(scope, send))
        else:
            if await self._refused(scope, receive, send, method):
                return
            await self.app(scope, receive, send)

    async def _head(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The server's scope keeps HEAD, so it sends no body and expects none.
        inner = {**scope, "method": "GET"}

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        try:
            await self.app(inner, receive, headers_only)
        finally:
            for key in _FORWARD:  # the metrics outside count it under its route
                if key in inner:
                    scope[key] = inner[key]

    async def _refused(self, scope: Scope, receive: Receive, send: Send, method: str) -> bool:
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
                break
        if content_type is None or is_json(content_type):
            return False
        if not self.table.reads_json(method, scope["path"]):
            return False
        media = content_type.split(b";", 1)[0].strip().decode("latin-1")
        response = errors.error_response(
            415,
            "unsupported_media_type",
            f"this route reads JSON: send Content-Type: application/json, not {media}",
            {"content_type": media[:100], "expected": "application/json"},
        )
        try:
            # Read (and drop) the body first: a NUL in it, or too much of it, is refused
            # by the middlewares outside while it is read, and that answer comes first.
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False) and message["type"] == "http.request"
        except errors.NulInput as exc:
            response = errors.error_response(
                422, "invalid", str(exc.detail), {"reason": "nul_byte", "where": "body"}
            )
        except StarletteHTTPException as exc:
            if exc.status_code != 413:  # BodyLimit's, the only other one raised while reading
                raise
            response = errors.error_response(413, "payload_too_large", str(exc.detail))
        await response(scope, receive, send)
        return True

    def _locating(self, scope: Scope, send: Send) -> Send:
        start: Message | None = None

        async def locating_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] != 201:
                    await send(message)
                    return
                start = message  # held until the body names the new resource
                return
            if start is not None:
                held, start = start, None
                held["headers"] = _with_location(held.get("headers", []), scope, message)
                await send(held)
            await send(message)

        return locating_send


def _with_location(raw: Any, scope: Scope, body: Message) -> list[tuple[bytes, bytes]]:
    """The 201's headers with `Location`: the collection's path and the new resource's id."""
    headers: list[tuple[bytes, bytes]] = list(raw)
    if any(name == b"location" for name, _ in headers):
        return headers
    try:
        created = json.loads(body.get("body", b""))
    except ValueError:
        return headers
    if not isinstance(created, dict) or created.get("id") is None:
        return headers
    path = scope.get("root_path", "") + scope["path"].rstrip("/")
    location = f"{path}/{quote(str(created['id']), safe='')}"
    headers.append((b"location", location.encode("latin-1")))
    return headers


class CORS(CORSMiddleware):
    """Starlette's CORS middleware, with a refused preflight in the API's error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        reason = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        return errors.error_response(
            400,
            "cors_refused",
            f"CORS preflight refused: {reason} not allowed (SMARTSTART_CORS_ORIGINS)",
            {"origin": request_headers.get("origin", "")[:200]},
        )


def document(app: FastAPI) -> None:
    """Declare `Location` on every 201, and the 415 of every operation that reads JSON."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                if "201" in responses:
                    responses["201"].setdefault("headers", {})["Location"] = {
                        "description": "The new resource's URL",
                        "schema": {"type": "string"},
                    }
                if "application/json" in operation.get("requestBody", {}).get("content", {}):
                    responses.setdefault("415", {"description": "The body is not JSON"})[
                        "content"
                    ] = {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorResponse"}
                        }
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    """The middleware, the 405 handler and their docs; call after errors.document_errors."""
    table = RouteTable(app)
    install_allow(app, table)
    document(app)
    app.add_middleware(Semantics, table=table)
