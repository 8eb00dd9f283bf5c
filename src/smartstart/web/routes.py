"""The web app's route table: (path, endpoint, methods)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path

from smartstart.web import (
    admin,
    admin_users,
    analytics,
    backups,
    dbconsole,
    dbpages,
    member,
    signin,
)

Endpoint = Callable[[Request], Awaitable[Response]]
GET, POST = ("GET",), ("POST",)

ROUTES: list[tuple[str, Endpoint, tuple[str, ...]]] = [
    ("/", signin.home, GET),
    ("/login", signin.login_form, GET),
    ("/login", signin.login, POST),
    ("/logout", signin.logout, POST),
    ("/journey", member.my_journey, GET),
    ("/journey/{stage}/{action}", member.journey_action, POST),
    ("/profile", member.profile, GET),
    ("/profile", member.profile_save, POST),
    ("/profile/password", member.password_change, POST),
    ("/profile/sessions/{session}/revoke", member.session_revoke, POST),
    ("/admin", admin.overview_page, GET),
    ("/admin/users", admin_users.user_list, GET),
    ("/admin/users/{user}", admin_users.user_detail, GET),
    ("/admin/users/{user}/{action}", admin_users.user_action, POST),
    ("/admin/roles", admin.roles_page, GET),
    ("/admin/roles/grant", admin.roles_change, POST),
    ("/admin/journeys", admin.journeys_page, GET),
    ("/admin/journeys", admin.stage_create, POST),
    ("/admin/journeys/{stage}", admin.stage_save, POST),
    ("/admin/journeys/{stage}/move", admin.stage_move, POST),
    ("/admin/audit", admin.audit_page, GET),
    ("/analytics", analytics.analytics_page, GET),
    ("/analytics/{name}.csv", analytics.analytics_csv, GET),
    ("/admin/database", dbconsole.database_page, GET),
    ("/admin/database/queries/{pid}/{kind}", dbconsole.query_signal, POST),
    ("/admin/database/check", dbpages.database_check, POST),
    ("/admin/backups", dbpages.backups_page, GET),
    ("/admin/backups", dbpages.backup_create, POST),
    ("/admin/backups/verify", dbpages.backup_verify, POST),
    ("/admin/backups/files/{name}", backups.backup_download, GET),
    ("/admin/backups/files/{name}/manifest", backups.manifest_download, GET),
    ("/admin/backups/restore", backups.restore_form, GET),
    ("/admin/backups/restore", backups.restore, POST),
    ("/admin/backups/prune", backups.prune_page, GET),
    ("/admin/backups/prune", backups.prune, POST),
    ("/admin/data", dbpages.data_page, GET),
    ("/admin/data/{table}", dbpages.table_page, GET),
]

# The pages a browser opens (GET), with the permission each needs (None: signed in).
PAGES: dict[str, str | None] = {
    "/journey": None,
    "/profile": None,
    "/admin": "users:read",
    "/admin/users": "users:read",
    "/admin/roles": "roles:read",
    "/admin/journeys": "journey:manage",
    "/admin/audit": "audit:read",
    "/analytics": "analytics:read",
    "/admin/database": "db:read",
    "/admin/backups": "db:read",
    "/admin/data": "db:read",
}


_GET_PATHS = [compile_path(path)[0] for path, _, methods in ROUTES if "GET" in methods]


def is_page(path: str) -> bool:
    """Whether a GET of this path is one of the web app's pages."""
    return any(regex.match(path) for regex in _GET_PATHS)
