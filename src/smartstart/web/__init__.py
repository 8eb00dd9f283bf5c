"""The web app the Brain serves at `/`: members' journey and profile, the operators' console.

Server-rendered (Jinja2), every asset from this package (`static/`), no script or style
inline (see `render.CSP`). Its routes are plain Starlette routes appended after the API's,
so an API request never meets them (no middleware of its own, nothing on the hot path).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from smartstart.web import routes


def install(app: FastAPI) -> None:
    """Add the web app's pages and static files to the Brain."""
    app.router.routes.append(
        Mount("/static", StaticFiles(packages=[("smartstart.web", "static")]), name="web-static")
    )
    for path, endpoint, methods in routes.ROUTES:
        app.router.routes.append(Route(path, endpoint, methods=list(methods)))
