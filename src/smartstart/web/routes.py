"""The web app's route table: (path, endpoint, methods)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from smartstart.web import member, signin

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
]
