"""The Brain: SmartStart's HTTP service (API, and later the dashboard)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import psycopg
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from smartstart import __version__
from smartstart.config import Settings, get_settings
from smartstart.db import migrate


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
    except psycopg.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
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
    return True, {"status": "ready", "revision": current}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="SmartStart Brain", version=__version__)
    app.state.settings = settings

    @app.get("/healthz", tags=["health"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="The database is reachable and the schema is at the latest revision",
        responses={503: {"description": "Not ready; `reason` says why"}},
    )
    async def readyz() -> JSONResponse:
        ok, body = await run_in_threadpool(readiness, settings)
        return JSONResponse(body, status_code=200 if ok else 503)

    return app
