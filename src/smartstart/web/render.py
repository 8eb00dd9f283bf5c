"""Templates (Jinja2, autoescaped), the navigation each viewer may see, and the headers
every page carries (a Content-Security-Policy with no inline script or style)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from smartstart import __version__
from smartstart.domain.sessions import Principal

# Scripts and styles only from /static; forms only to this site; never framed.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str
    permission: str | None  # None: every signed-in user
    section: str


NAV: tuple[NavItem, ...] = (
    NavItem("My journey", "/journey", None, "Me"),
    NavItem("Profile", "/profile", None, "Me"),
    NavItem("Overview", "/admin", "users:read", "Operate"),
    NavItem("Users", "/admin/users", "users:read", "Operate"),
    NavItem("Roles & permissions", "/admin/roles", "roles:read", "Operate"),
    NavItem("Journeys", "/admin/journeys", "journey:manage", "Operate"),
    NavItem("Audit log", "/admin/audit", "audit:read", "Operate"),
    NavItem("Analytics", "/analytics", "analytics:read", "Insights"),
    NavItem("Database", "/admin/database", "db:read", "Database"),
    NavItem("Backups", "/admin/backups", "db:read", "Database"),
    NavItem("Data browser", "/admin/data", "db:read", "Database"),
)


def nav_for(principal: Principal | None) -> list[tuple[str, list[NavItem]]]:
    """The navigation sections and links this viewer may open (the others are not shown)."""
    if principal is None:
        return []
    sections: dict[str, list[NavItem]] = {}
    for item in NAV:
        if item.permission is None or item.permission in principal.permissions:
            sections.setdefault(item.section, []).append(item)
    return list(sections.items())


def _ago(value: datetime | str | None) -> str:
    """'3 min ago', for a timestamp (aware datetime or ISO text)."""
    if value is None:
        return "never"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    seconds = (datetime.now(UTC) - value).total_seconds()
    if seconds < 0:
        seconds = -seconds
        suffix = "from now"
    else:
        suffix = "ago"
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{int(seconds // span)} {unit} {suffix}"
    return "just now"


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _size(n: int | float | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _number(n: int | float | None) -> str:
    if n is None:
        return "—"
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.2f}"


@lru_cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("smartstart.web", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(ago=_ago, when=_when, size=_size, number=_number)
    env.globals["version"] = __version__
    return env


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    principal: Principal | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page: the template with the viewer, their navigation, CSRF token and message."""
    from smartstart.web.core import session_csrf, take_flash

    held = principal.permissions if principal is not None else frozenset()
    html = (
        environment()
        .get_template(template)
        .render(
            viewer=principal,
            can=lambda permission: permission in held,
            nav=nav_for(principal),
            path=request.url.path,
            csrf=session_csrf(request) if principal is not None else "",
            flash=take_flash(request),
            **context,
        )
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)
