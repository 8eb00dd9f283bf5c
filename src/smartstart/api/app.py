"""The Brain: SmartStart's HTTP service (API, and later the dashboard)."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from importlib import resources
from typing import Any

import psycopg
from fastapi import FastAPI, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smartstart import __version__, web
from smartstart.api import access, contract, errors, fastlane, semantics
from smartstart.api import metrics as metrics_setup
from smartstart.api.compression import GZip
from smartstart.api.deps import CSRF_HEADER, public
from smartstart.api.edge import Edge
from smartstart.api.healthmetrics import HealthGauges
from smartstart.config import Settings, get_settings
from smartstart.db import migrate
from smartstart.domain.permissions import PermissionCache

MAX_BODY_BYTES = 1024 * 1024
POOL_TIMEOUT = 5.0  # seconds a request waits for a database connection before a 503
# Routers, by module under smartstart.api.routes; each module exposes `router`. FastAPI
# tries routes one by one, in this order: the routers of the hot reads come first.
ROUTE_MODULES: tuple[str, ...] = (
    "users",
    "rbac",
    "auth",
    "journey",
    "audit",
    "analytics",
    "dbadmin",
    "backups",
)


@lru_cache
def _head() -> str | None:
    return migrate.head_revision()


def readiness(settings: Settings) -> tuple[bool, dict[str, Any]]:
    """Database reachable and schema at the latest revision."""
    head = _head()
    try:
        with psycopg.connect(settings.url_for(), connect_timeout=3) as conn:
            versioned = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
            row = (
                conn.execute("SELECT version_num FROM alembic_version").fetchone()
                if versioned and versioned[0]
                else None
            )
            # Scheduled jobs whose last slot failed for good (services/scheduler.py).
            failed = _failed_jobs(conn, settings) if row and row[0] == head else []
    except psycopg.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        from smartstart.pg import restoring

        mark = restoring.current(settings.home_dir)
        if mark is not None:
            reason = f"restoring: {mark.what}, since {mark.since} ({reason})"
        return False, {"status": "unavailable", "reason": f"database unreachable: {reason}"}
    current = row[0] if row else None
    if current != head:
        return False, {
            "status": "unavailable",
            "reason": f"schema at {current or 'no revision'}, expected {head}: "
            "run `smartstart db migrate`",
            "revision": current,
            "head": head,
        }
    body: dict[str, Any] = {"status": "ready", "revision": current}
    from smartstart.api.server import worker_state

    workers = worker_state(settings)  # under a supervisor: its workers alive of expected
    if workers is not None:
        body["workers"] = workers
        if workers.get("alive", 0) < workers.get("expected", 0):
            body["status"] = "degraded"
    if failed:
        body["status"] = "degraded"
        body["jobs"] = failed
    return True, body


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def pool_conninfo(settings: Settings) -> str:
    """Where the Brain's pools connect: the embedded cluster's Unix socket when it has one."""
    url = settings.url_for()
    if not settings.embedded or settings.pg_host not in LOOPBACK:
        return url
    # Same server, same credentials; a socket costs less per query than loopback TCP
    # (no TCP stack on either side), which the hot path feels.
    socket_dir = settings.home_dir / "run"
    if not (socket_dir / f".s.PGSQL.{settings.pg_port}").exists():
        return url
    return make_conninfo(url, host=str(socket_dir))


def _failed_jobs(conn: psycopg.Connection[Any], settings: Settings) -> list[dict[str, Any]]:
    from smartstart.services import scheduler

    return [
        {
            "job": r["job"],
            "slot": r["slot"].isoformat(),
            "attempt": r["attempt"],
            "error": r["error"],
        }
        for r in scheduler.failures(scheduler.latest_runs(conn), settings)
    ]


def session_options(settings: Settings) -> str:
    """Server settings of the Brain's connections: bounded waits for locks and statements."""
    # Set once per connection, not per transaction: no round trip on the hot path. Any
    # options of SMARTSTART_DATABASE_URL are kept (ours come last and win).
    parts = [str(conninfo_to_dict(settings.url_for()).get("options") or "")]
    if settings.api_lock_timeout_ms:
        parts.append(f"-c lock_timeout={settings.api_lock_timeout_ms}")
    if settings.api_statement_timeout_ms:
        parts.append(f"-c statement_timeout={settings.api_statement_timeout_ms}")
    return " ".join(p for p in parts if p)


class BodyLimit:
    """Refuse request bodies over a size with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._reject(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # FastAPI re-raises an HTTPException met while reading the body, and
                    # our handler gives it the API's error shape.
                    raise StarletteHTTPException(413, self.message)
            return message

        await self.app(scope, limited, send)

    @property
    def message(self) -> str:
        return f"request bodies are limited to {self.limit} bytes"

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = errors.error_response(413, "payload_too_large", self.message)
        await response(scope, receive, send)


class Metrics:
    """Count requests and time them per route template (plain ASGI: no per-request task)."""

    def __init__(
        self, app: ASGIApp, requests: Counter, latency: Histogram, routes: FastAPI
    ) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency
        self.routes = routes
        self.plain: dict[Any, str] | None = None

    def _template(self, scope: Scope) -> str:
        """The template of a route that is no APIRoute (/openapi.json, /docs/static)."""
        if self.plain is None:  # once the route table is complete
            self.plain = {
                (r.app if isinstance(r, Mount) else getattr(r, "endpoint", None)): (
                    f"{r.path}/{{path}}" if isinstance(r, Mount) else r.path
                )
                for r in self.routes.routes
                if hasattr(r, "path")
            }
        endpoint = scope.get("endpoint")
        return self.plain.get(endpoint, "<unmatched>") if endpoint is not None else "<unmatched>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or self._template(scope)
            method = scope.get("method", "")
            self.latency.labels(template, method).observe(time.perf_counter() - start)
            self.requests.labels(template, method, str(status)).inc()


def _install_metrics(app: FastAPI) -> None:
    registry, own = metrics_setup.registries()
    registry.register(HealthGauges(app.state.settings))
    requests = Counter(
        "smartstart_http_requests",
        "HTTP requests by route template, method and status",
        ["route", "method", "status"],
        registry=own,
    )
    latency = Histogram(
        "smartstart_http_request_duration_seconds",
        "HTTP request latency by route template and method",
        ["route", "method"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        registry=own,
    )

    app.add_middleware(Metrics, requests=requests, latency=latency, routes=app)

    @app.get(
        "/metrics",
        operation_id="metrics_get",
        tags=["health"],
        response_class=Response,
        responses=contract.METRICS_RESPONSES,
        summary="Prometheus metrics: requests and latency per route (all workers), process, "
        "Python and build",
        dependencies=[public],
    )
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _install_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the files the swagger-ui-py package ships."""
    static = resources.files("swagger_ui") / "static"
    app.mount("/docs/static", StaticFiles(directory=str(static)), name="docs-static")

    @app.get("/docs", include_in_schema=False, dependencies=[public])
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="SmartStart Brain — API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )


def _install_cors(app: FastAPI, settings: Settings) -> None:
    """CORS for SMARTSTART_CORS_ORIGINS; with none set, no middleware at all."""
    origins = settings.cors_origin_list()
    if not origins:
        return
    app.add_middleware(
        semantics.CORS,
        allow_origins=origins,
        # Sessions ride on a cookie or a bearer token; a wildcard origin gets neither.
        allow_credentials="*" not in origins,
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", CSRF_HEADER],
        expose_headers=["Location", "Retry-After"],
        max_age=600,
    )


def create_app(
    settings: Settings | None = None, *, pool_size: int = 10, pool_timeout: float = POOL_TIMEOUT
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conninfo = pool_conninfo(settings)
        pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"connect_timeout": 5, "options": session_options(settings)},
            timeout=pool_timeout,
            name="brain",
        )
        # Authentication and the hot read routes: no worker thread, no transaction.
        apool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={
                "connect_timeout": 5,
                "autocommit": True,
                "options": session_options(settings),
            },
            timeout=pool_timeout,
            name="brain-async",
        )
        await run_in_threadpool(pool.open)
        app.state.pool = pool
        jobs = None
        if settings.scheduler_on:  # every worker runs one; the one holding the lock leads
            from smartstart.services.jobs import make_scheduler

            jobs = make_scheduler(settings)
            jobs.start()
        # get_conn waits for one of these on the event loop, never in a worker thread.
        app.state.conn_slots = asyncio.Semaphore(pool_size)
        try:
            await apool.open()
            app.state.apool = apool
            try:
                yield
            finally:
                await apool.close()
        finally:
            if jobs is not None:
                await run_in_threadpool(jobs.stop)
            await run_in_threadpool(pool.close)

    app = FastAPI(
        title="SmartStart Brain",
        version=__version__,
        description="Users, RBAC, journeys, XP and the audit log of the SmartStart Platform.",
        lifespan=lifespan,
        generate_unique_id_function=contract.operation_id,
        docs_url=None,  # served below from local files: no CDN, works offline
        redoc_url=None,
    )
    _install_docs(app)
    app.state.settings = settings
    app.state.permission_cache = PermissionCache()
    app.state.last_active = {}
    errors.install(app)
    errors.document_errors(app)
    semantics.install(app)  # HEAD, Allow on 405, Location on 201, 415: inside the metrics
    _install_metrics(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(GZip)
    _install_cors(app, settings)
    app.add_middleware(Edge, settings=settings)  # outermost: before anything reads a header

    @app.get(
        "/healthz",
        operation_id="health_live",
        tags=["health"],
        summary="The process is alive",
        dependencies=[public],
    )
    async def healthz() -> contract.Liveness:
        return contract.Liveness(status="ok")

    @app.get(
        "/readyz",
        operation_id="health_ready",
        tags=["health"],
        summary="The database is reachable and the schema is at the latest revision",
        response_model=contract.Readiness,
        responses=contract.READINESS_RESPONSES,
        dependencies=[public],
    )
    async def readyz() -> JSONResponse:
        ok, body = await run_in_threadpool(readiness, settings)
        return JSONResponse(body, status_code=200 if ok else 503)

    for name in ROUTE_MODULES:
        app.include_router(importlib.import_module(f"smartstart.api.routes.{name}").router)
    access.document_access(app)
    fastlane.install(app)
    web.install(app)  # after every API route: an API request never tries a web page's
    return app
