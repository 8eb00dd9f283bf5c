"""The web app the Brain serves at `/`: members' journey and profile, the operators' console.

Server-rendered (Jinja2), every asset from this package (`static/`), no script or style
inline (see `render.CSP`). Its routes are plain Starlette routes appended after the API's,
so an API request never meets them (no middleware of its own, nothing on the hot path).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from smartstart.web import routes
from smartstart.web.core import error_page


def install(app: FastAPI) -> None:
    """Add the web app's pages and static files to the Brain."""
    app.router.routes.append(
        Mount("/static", StaticFiles(packages=[("smartstart.web", "static")]), name="web-static")
    )
    for path, endpoint, methods in routes.ROUTES:
        app.router.routes.append(Route(path, endpoint, methods=list(methods)))
    app.state.html_not_found = not_found


def not_found(request: Request) -> Response:
    """The page a browser gets for a path that is neither a page nor an API route."""
    return error_page(request, 404, "Not found", "There is no page at this address.")
