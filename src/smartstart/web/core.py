"""The web app's plumbing: who is viewing, one transaction per page, forms, CSRF, errors.

A page is a plain function `(View) -> Response` run in a worker thread with a pooled
connection in one transaction (committed when it returns, rolled back when it raises),
like an API route's. `page(...)` turns it into a Starlette endpoint that:

- signs the viewer in from the session cookie through the API's own `current_principal`
  (sessions, idle timeout, permission cache); without a live session a GET is sent to
  the login form and a POST refused;
- checks a write's CSRF token, sent as the form field `csrf`, with the API's own check
  (the field is presented to it as the `X-CSRF-Token` header it reads);
- refuses a page the viewer lacks the permission for with `authorize` (the denial is
  audited, as the API's) and a 403 page;
- renders a domain error as a page with its status; a write's refusal (422/409) goes back
  to the page it came from with the message shown there;
- when the database is unreachable, says so on a 503 page (naming a restore when one is
  switching the database in place), and after a restore has ended the pools' connections,
  has the request run once more on fresh ones, as the API does.

A page whose work must hold no pooled connection (a restore ends every session on the
database) returns `Afterwards(work)`: work runs once the transaction has committed and
the connection is back in the pool.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import psycopg
from psycopg_pool import PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from smartstart import signing
from smartstart.api.deps import (
    CSRF_HEADER,
    SESSION_COOKIE,
    actor_for,
    csrf_token,
    current_principal,
    get_conn,
)
from smartstart.api.errors import RETRY_HEADER, StaleConnection, refresh_pools
from smartstart.config import Settings
from smartstart.domain.actor import Actor
from smartstart.domain.authorize import authorize
from smartstart.domain.errors import DomainError, Forbidden, Unauthorized
from smartstart.domain.sessions import Principal
from smartstart.errors import SmartStartError
from smartstart.web.render import render

FLASH_COOKIE = "smartstart_flash"
FLASH_PURPOSE = "web-flash"
MAX_FIELD = 100_000  # characters of one form field; the domain's own limits are far lower
MAX_FIELDS = 200
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class View:
    """What a page function gets: the request, its connection, the viewer and the form."""

    request: Request
    conn: psycopg.Connection[Any]
    principal: Principal
    settings: Settings
    form: Mapping[str, str] = field(default_factory=dict)

    @property
    def actor(self) -> Actor:
        return actor_for(self.request, self.principal)

    def can(self, permission: str) -> bool:
        return permission in self.principal.permissions

    def require(self, permission: str) -> None:
        """Refuse (403, audited) unless the viewer holds the permission."""
        authorize(self.conn, self.actor, permission)

    def query(self, name: str, default: str | None = None) -> str | None:
        value = self.request.query_params.get(name)
        return value if value not in (None, "") else default

    def field(self, name: str, default: str = "") -> str:
        return self.form.get(name, default)

    def render(self, template: str, **context: Any) -> HTMLResponse:
        status = int(context.pop("status", 200))
        return render(self.request, template, status=status, principal=self.principal, **context)

    def pages(
        self, path: str, kept: Mapping[str, str], next_cursor: str | None
    ) -> dict[str, str | None]:
        """The links of a listing's next page (the domain's cursor) and of its first."""
        return {
            "next_url": f"{path}?{urlencode({**kept, 'cursor': next_cursor})}"
            if next_cursor
            else None,
            "first_url": f"{path}?{urlencode(kept)}" if self.query("cursor") else None,
        }

    def done(self, to: str, message: str) -> Response:
        """After a write: back to a page (POST/redirect/GET), with a message shown there."""
        return flash(self.request, redirect(to), message, "ok")


class Afterwards(Response):
    """A page's answer made after its transaction, by work holding no pooled connection."""

    def __init__(self, work: Callable[[], Response]) -> None:
        super().__init__(status_code=500)
        self.work = work


def redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303)


def _local(path: str | None, default: str) -> str:
    """A path on this site (an open redirect is never followed)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return default
    parts = urlsplit(path)
    return default if parts.scheme or parts.netloc else path


def flash(request: Request, response: Response, message: str, kind: str) -> Response:
    """A one-time message for the next page the browser shows (signed, so never forged)."""
    settings: Settings = request.app.state.settings
    payload = json.dumps({"m": message[:500], "k": kind}).encode()
    response.set_cookie(
        FLASH_COOKIE,
        signing.sign(settings, FLASH_PURPOSE, payload),
        max_age=60,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
    )
    return response


def take_flash(request: Request) -> tuple[str, str] | None:
    """The pending message (text, kind), if any."""
    token = request.cookies.get(FLASH_COOKIE)
    if not token:
        return None
    payload = signing.unsign(request.app.state.settings, FLASH_PURPOSE, token)
    if payload is None:
        return None
    try:
        data = json.loads(payload)
        return str(data["m"]), str(data["k"])
    except (ValueError, KeyError, TypeError):
        return None


def error_page(
    request: Request, status: int, title: str, message: str, principal: Principal | None = None
) -> HTMLResponse:
    return render(
        request, "error.html", status=status, principal=principal, title=title, message=message
    )


_TITLES = {
    401: "Signed out",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    422: "Not accepted",
    429: "Too many attempts",
    503: "Unavailable",
}


async def read_form(request: Request) -> dict[str, str]:
    """The form's fields (URL-encoded; the last value of each); anything else is refused."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = await request.body()  # BodyLimit (api.app) caps it at a megabyte
    if not body:
        return {}
    if media != "application/x-www-form-urlencoded":
        raise DomainError("send the form as application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise DomainError("the form could not be read") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        if len(value) > MAX_FIELD:
            raise DomainError(f"the field {key[:40]!r} is too long")
        out[key] = value
    return out


async def _principal(request: Request, form: Mapping[str, str]) -> Principal:
    if request.method == "GET" or request.method == "HEAD":
        return await current_principal(request)
    # The form's token is presented to the API's CSRF check as the header it reads.
    sent = form.get("csrf", "")
    headers = [(k, v) for k, v in request.scope["headers"] if k != CSRF_HEADER.lower().encode()]
    headers.append((CSRF_HEADER.lower().encode(), sent.encode("latin-1", "replace")))
    return await current_principal(Request({**request.scope, "headers": headers}))


def login_redirect(request: Request) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(f"/login?next={quote(here, safe='/')}")


def page(permission: str | None = None) -> Callable[[Callable[[View], Response]], Endpoint]:
    """Make `fn` an endpoint for signed-in viewers holding `permission` (None: anyone)."""

    def wrap(fn: Callable[[View], Response]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            writing = request.method not in ("GET", "HEAD")
            principal: Principal | None = None
            try:
                form = await read_form(request) if writing else {}
                principal = await _principal(request, form)
                return await _run(request, principal, form, permission, fn)
            except Unauthorized:
                if writing:
                    return error_page(
                        request, 401, "Signed out", "Your session has ended: sign in again."
                    )
                return login_redirect(request)
            except Forbidden as e:
                if e.details.get("reason") == "csrf":
                    message = "This form has expired or did not come from this site: reload it."
                    return error_page(request, 403, "Form refused", message, principal)
                return error_page(request, 403, "Not allowed", e.message, principal)
            except DomainError as e:
                back = _page_behind(request)
                if writing and e.status in (409, 422, 400) and back:
                    return flash(request, redirect(back), e.message, "error")
                title = _TITLES.get(e.status, "Error")
                return error_page(request, e.status, title, e.message, principal)
            except StaleConnection:
                # A restore (or a restart) ended the pooled connections: replace them and
                # let the edge run this request once more (it drops this answer unsent).
                await refresh_pools(request.app)
                response = await _unavailable(request, principal)
                response.headers[RETRY_HEADER] = "stale"
                return response
            except (PoolTimeout, psycopg.OperationalError):
                return await _unavailable(request, principal)
            except SmartStartError as e:
                return error_page(request, 503, "Unavailable", str(e), principal)

        endpoint.__name__ = fn.__name__
        endpoint.__doc__ = fn.__doc__
        return endpoint

    return wrap


async def _unavailable(request: Request, principal: Principal | None) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    if await run_in_threadpool(_restoring, settings):
        title = "Restore in progress"
        message = (
            "A backup is being restored and is switching into place of the database: "
            "this page works again in a few seconds. Reload it then."
        )
    else:
        title = "Unavailable"
        message = "The database is unavailable or too slow; try again shortly."
    response = error_page(request, 503, title, message, principal)
    response.headers["Retry-After"] = "5"
    return response


def _restoring(settings: Settings) -> bool:
    """Whether a restore or prune holds its server-wide lock (asked only when unreachable)."""
    from smartstart.db.backups import admin_conninfo
    from smartstart.pg.restore import LOCK_KEY

    try:
        with psycopg.connect(admin_conninfo(settings), autocommit=True, connect_timeout=2) as c:
            row = c.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                " AND granted AND ((classid::bigint << 32) | objid::bigint) = %s)",
                [LOCK_KEY],
            ).fetchone()
    except (psycopg.Error, SmartStartError, OSError):
        return False
    return bool(row and row[0])


def _page_behind(request: Request) -> str | None:
    """The page the form was on (its Referer), when that is a page of ours one can GET;
    None for a confirmation, which is the answer to a POST and cannot be reloaded."""
    from smartstart.web.routes import is_page

    back = request.headers.get("referer")
    if not back:
        return None
    parts = urlsplit(back)
    target = _local(parts.path + (f"?{parts.query}" if parts.query else ""), "")
    return target if target and is_page(parts.path) else None


async def _run(
    request: Request,
    principal: Principal,
    form: Mapping[str, str],
    permission: str | None,
    fn: Callable[[View], Response],
) -> Response:
    settings: Settings = request.app.state.settings
    async with asynccontextmanager(get_conn)(request) as conn:

        def call() -> Response:
            view = View(request, conn, principal, settings, form)
            if permission is not None:
                view.require(permission)
            return fn(view)

        response = await run_in_threadpool(call)
    if isinstance(response, Afterwards):
        try:
            response = await run_in_threadpool(response.work)
        finally:
            await refresh_pools(request.app)  # the work may have replaced the database
    if request.cookies.get(FLASH_COOKIE) and request.method != "POST":
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def session_csrf(request: Request) -> str:
    """The CSRF token of the viewer's session (what forms carry)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    return csrf_token(request.app.state.settings, token) if token else ""
