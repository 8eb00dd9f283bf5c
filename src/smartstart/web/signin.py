"""The sign-in form and sign-out: the API's own login (throttles, audit, bcrypt off the
event loop in the anonymous lane) and its session and CSRF cookies."""

from __future__ import annotations

import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from smartstart import signing
from smartstart.api import lanes
from smartstart.api.deps import client_ip, current_principal
from smartstart.api.routes.auth import (
    DEVICE_COOKIE,
    _clear_session_cookies,
    _set_session_cookies,
)
from smartstart.config import Settings
from smartstart.domain import auth, throttle
from smartstart.domain.errors import DomainError, Unauthorized
from smartstart.web.core import View, _local, error_page, page, read_form, redirect
from smartstart.web.render import render

LOGIN_PATH = "/login"
# Before there is a session, a login form is bound to its browser by a random cookie
# (double submit): another site cannot sign a visitor in to an account of its choosing.
LOGIN_COOKIE = "smartstart_login"
LOGIN_PURPOSE = "web-login"
MAX_IDENTIFIER = 320
MAX_PASSWORD = 1024


def _login_token(settings: Settings, nonce: str) -> str:
    return signing.mac(settings, LOGIN_PURPOSE, nonce.encode()).hex()


def _form(request: Request, status: int = 200, error: str | None = None, who: str = "") -> Response:
    settings: Settings = request.app.state.settings
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
    response = render(
        request,
        "login.html",
        status=status,
        error=error,
        who=who,
        login_csrf=_login_token(settings, nonce),
        next=_local(request.query_params.get("next"), "/"),
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=3600,
        path=LOGIN_PATH,
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
    )
    return response


async def login_form(request: Request) -> Response:
    """GET /login: the form (or straight on, when already signed in)."""
    try:
        await current_principal(request)
    except DomainError:
        return _form(request)
    return redirect(_local(request.query_params.get("next"), "/"))


async def login(request: Request) -> Response:
    """POST /login: sign in and go on to `next`."""
    settings: Settings = request.app.state.settings
    try:
        form = await read_form(request)
    except DomainError as e:
        return _form(request, 422, e.message)
    who = form.get("identifier", "").strip()
    password = form.get("password", "")
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not secrets.compare_digest(form.get("csrf", ""), _login_token(settings, nonce)):
        return _form(request, 403, "The sign-in form expired; please try again.", who[:100])
    if not who or not password:
        return _form(request, 422, "Enter your email or username and your password.", who[:100])
    if len(who) > MAX_IDENTIFIER or len(password) > MAX_PASSWORD:
        return _form(request, 401, auth.INVALID_CREDENTIALS, who[:100])
    try:
        async with lanes.anonymous(request).slot():
            signed = await run_in_threadpool(
                auth.login,
                lanes.transactions(request),
                who,
                password,
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
                settings=settings,
                device=request.cookies.get(DEVICE_COOKIE),
            )
    except Unauthorized:
        return _form(request, 401, auth.INVALID_CREDENTIALS, who)
    except DomainError as e:
        return _form(request, e.status, e.message, who)
    response = redirect(_local(form.get("next"), "/"))
    _set_session_cookies(response, settings, signed.token)
    response.set_cookie(
        DEVICE_COOKIE,
        signed.device,
        max_age=int(throttle.DEVICE_LIFETIME.total_seconds()),
        path=LOGIN_PATH,
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
    )
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH)
    return response


@page()
def logout(view: View) -> Response:
    """POST /logout: end this session and clear the cookies."""
    auth.logout(view.conn, view.actor, view.principal.session_id)
    response = redirect(LOGIN_PATH)
    _clear_session_cookies(response, view.settings)
    return response


async def home(request: Request) -> Response:
    """GET /: operators to the overview, everyone else to their journey."""
    try:
        principal = await current_principal(request)
    except Unauthorized:
        return redirect(LOGIN_PATH)
    except DomainError as e:
        return error_page(request, e.status, "Error", e.message)
    return redirect("/admin" if "users:read" in principal.permissions else "/journey")
