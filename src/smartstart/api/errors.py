"""One error shape for the whole API: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
import psycopg.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from smartstart.domain import guards
from smartstart.domain.errors import DomainError, TooManyRequests
from smartstart.errors import SmartStartError

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
    431: "headers_too_large",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. not_found, conflict")
    message: str = Field(description="One sentence for a person")
    details: dict[str, Any] = Field(description="Structured context, e.g. the conflicting field")


class ErrorResponse(BaseModel):
    """The body of every error the API returns."""

    error: ErrorDetail


ERROR_RESPONSES = {
    "400": "Malformed request (e.g. the body is not JSON)",
    "401": "No valid session",
    "403": "The session lacks the permission this endpoint requires (or CSRF check failed)",
    "404": "No such resource",
    "409": "Conflicts with the current state (e.g. a unique value is taken, or the rows are "
    "locked by another transaction)",
    "413": "The request body is too large",
    "422": "The request is invalid: details.errors lists each problem",
    "429": "Too many attempts: retry after Retry-After seconds",
    "431": "The request headers are too large",
    "503": "The database is unavailable or too slow: retry after Retry-After seconds",
}


def document_errors(app: FastAPI) -> None:
    """Make the OpenAPI document describe the error shape the API really returns."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in (
            ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
            .pop("$defs", {})
            .items()
        ):
            schemas[name] = definition
        schemas["ErrorResponse"] = ErrorResponse.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        schemas["ErrorResponse"].pop("$defs", None)
        ref = {"$ref": "#/components/schemas/ErrorResponse"}
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                for code, description in ERROR_RESPONSES.items():
                    entry = responses.setdefault(code, {"description": description})
                    # FastAPI's own 422 body is replaced; a route declaring its own body for
                    # a status (/readyz's 503) keeps it.
                    if code == "422" or "content" not in entry:
                        entry["content"] = {"application/json": {"schema": ref}}
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# Marks a response whose request may run again (see api/edge.py); never reaches a client.
RETRY_HEADER = "x-smartstart-retry"


class NulInput(StarletteHTTPException):
    """A NUL character in a request body (raised while the body is read)."""

    def __init__(self) -> None:
        super().__init__(422, "the request's body contains a NUL character")


class StaleConnection(psycopg.OperationalError):
    """A pooled connection the server dropped (a restart), met before anything committed."""


async def refresh_pools(app: FastAPI) -> None:
    """Make both pools test their idle connections and replace the dead ones."""
    pool = getattr(app.state, "pool", None)
    if pool is not None:
        await run_in_threadpool(pool.check)
    apool = getattr(app.state, "apool", None)
    if apool is not None:
        await apool.check()


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        out.append(
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


RESTORING_RETRY_AFTER = 5  # seconds: a swap takes a few (a stop, two renames, a start)


def restoring_response(
    request: Request, headers: Mapping[str, str] | None = None
) -> JSONResponse | None:
    """503 `restoring` when the database is out of reach because a restore is swapping it
    in (pg.restoring's marker); None otherwise. Only the error path reads the marker."""
    from smartstart.pg import restoring

    settings = getattr(request.app.state, "settings", None)
    mark = None if settings is None else restoring.current(settings.home_dir)
    if mark is None:
        return None
    return error_response(
        503,
        "restoring",
        f"the database is being restored ({mark.what}); try again shortly",
        {"reason": mark.kind, "since": mark.since, "retry_after": RESTORING_RETRY_AFTER},
        headers={"Retry-After": str(RESTORING_RETRY_AFTER), **(headers or {})},
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        headers = None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        elif exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return error_response(exc.status, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(psycopg.errors.CheckViolation)
    async def check_violation(_: Request, exc: Exception) -> JSONResponse:
        # The database's own last-SUPER_ADMIN check (at commit, whatever the route did).
        if guards.is_last_super_admin_error(exc):
            return error_response(409, "last_super_admin", guards.LAST_SUPER_ADMIN_MESSAGE)
        raise exc

    @app.exception_handler(SmartStartError)
    async def smartstart_error(_: Request, exc: SmartStartError) -> JSONResponse:
        return error_response(503, exc.code, str(exc))

    @app.exception_handler(StaleConnection)
    async def stale_connection(request: Request, exc: Exception) -> JSONResponse:
        await refresh_pools(request.app)
        return restoring_response(request, {RETRY_HEADER: "stale"}) or error_response(
            503,
            "database_unavailable",
            "the database connection was lost; try again shortly",
            headers={"Retry-After": "5", RETRY_HEADER: "stale"},
        )

    @app.exception_handler(psycopg.errors.DeadlockDetected)
    @app.exception_handler(psycopg.errors.SerializationFailure)
    async def transaction_conflict(_: Request, exc: Exception) -> JSONResponse:
        reason = (
            "deadlock"
            if isinstance(exc, psycopg.errors.DeadlockDetected)
            else "serialization_failure"
        )
        return error_response(
            409,
            "transaction_conflict",
            "the change collided with a concurrent one (retried); try again",
            {"reason": reason},
            headers={RETRY_HEADER: "conflict"},
        )

    @app.exception_handler(psycopg.errors.LockNotAvailable)
    async def locked(request: Request, _: Exception) -> JSONResponse:
        waited = request.app.state.settings.api_lock_timeout_ms
        return error_response(
            409,
            "locked",
            f"the rows this request needs are locked by another transaction (waited {waited} ms);"
            " try again",
            {"reason": "lock_timeout", "lock_timeout_ms": waited},
        )

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def too_slow(request: Request, _: Exception) -> JSONResponse:
        limit = request.app.state.settings.api_statement_timeout_ms
        return error_response(
            503,
            "statement_timeout",
            f"the database did not answer within {limit} ms; try again shortly",
            {"reason": "statement_timeout", "statement_timeout_ms": limit},
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(NulInput)
    async def nul_input(_: Request, exc: NulInput) -> JSONResponse:
        return error_response(
            422, "invalid", str(exc.detail), {"reason": "nul_byte", "where": "body"}
        )

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return restoring_response(request) or error_response(
            503,
            "database_unavailable",
            "the database is unavailable; try again shortly",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _jsonable_errors(exc.errors())
        malformed = any(e["type"] == "json_invalid" for e in errors)
        if malformed:
            return error_response(400, "malformed_json", "the request body is not valid JSON")
        return error_response(422, "invalid", "the request is invalid", {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # A browser that asked for a page that does not exist gets the web app's 404 page
        # (set by smartstart.web); the API's paths keep the JSON shape.
        page = getattr(request.app.state, "html_not_found", None)
        if (
            exc.status_code == 404
            and page is not None
            and not request.url.path.startswith("/api/")
            and "text/html" in request.headers.get("accept", "")
        ):
            return page(request)  # type: ignore[no-any-return]
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, headers=exc.headers)
