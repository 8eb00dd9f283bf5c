"""/api/auth: sign in and out, who am I, one's own sessions and password, throttle reset.

Login returns the session token twice: in the body for API clients (`Authorization:
Bearer`) and as an HttpOnly, SameSite=Lax cookie for the dashboard, with a readable
CSRF cookie whose value cookie-authenticated writes echo in `X-CSRF-Token`, and a
device cookie (`smartstart_device`, sent back only to the login route) that exempts
this device from the account locks others' failures cause (see `domain.throttle`).
Login runs in the anonymous lane (`api.lanes`): bcrypt in a worker thread with no
database connection held. The other endpoints are sync `def` in the threadpool.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from smartstart.api import lanes
from smartstart.api.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    ConnDep,
    SettingsDep,
    actor_for,
    authenticated,
    client_ip,
    csrf_token,
    public,
    require,
)
from smartstart.api.paging import Cursor, Limit
from smartstart.api.schemas import UserAccount
from smartstart.config import Settings
from smartstart.domain import auth, throttle
from smartstart.domain.errors import Invalid
from smartstart.domain.paging import DEFAULT_LIMIT
from smartstart.domain.sessions import Principal

router = APIRouter(prefix="/api/auth", tags=["auth"])

SignedIn = Annotated[Principal, authenticated]
UserAdmin = Annotated[Principal, require("users:write")]
SessionId = Annotated[str, Path(min_length=1, max_length=64)]
DEVICE_COOKIE = "smartstart_device"
LOGIN_PATH = "/api/auth/login"


# -- models ------------------------------------------------------------------------


class LoginRequest(BaseModel):
    """Credentials: `identifier` (email or username), or `email`, or `username`."""

    model_config = ConfigDict(extra="forbid")

    identifier: str | None = Field(default=None, min_length=1, max_length=320)
    email: str | None = Field(default=None, min_length=1, max_length=320)
    username: str | None = Field(default=None, min_length=1, max_length=320)
    # Longer than the policy allows, so a too-long guess is a wrong password, not a 422
    # that would tell it apart.
    password: str = Field(min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _one_identifier(self) -> LoginRequest:
        given = [v for v in (self.identifier, self.email, self.username) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of identifier, email or username")
        return self

    @property
    def who(self) -> str:
        return self.identifier or self.email or self.username or ""


class LoginResponse(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`")
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme, not a secret
    expires_at: datetime
    session_id: str
    csrf_token: str = Field(
        description="Also set as the `smartstart_csrf` cookie; cookie-authenticated "
        "writes send it in the `X-CSRF-Token` header"
    )
    user: UserAccount


class HeldPermission(BaseModel):
    """One of the signed-in user's effective permissions."""

    name: str
    roles: list[str] = Field(description="The roles this permission comes from")


class SessionInfo(BaseModel):
    id: str
    via: str = Field(description="bearer or cookie")


class MeResponse(BaseModel):
    user: UserAccount
    roles: list[str]
    permissions: list[HeldPermission]
    session: SessionInfo


class SessionOut(BaseModel):
    id: str
    createdAt: datetime
    expiresAt: datetime
    lastSeenAt: datetime
    ip: str | None
    userAgent: str | None
    revokedAt: datetime | None
    state: Literal["active", "revoked", "expired", "idle"]
    current: bool = Field(description="The session this request was made with")


class SessionPage(BaseModel):
    items: list[SessionOut]
    next_cursor: str | None


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


# -- helpers -----------------------------------------------------------------------


def _set_session_cookies(response: Response, settings: Settings, token: str) -> str:
    """Set the session and CSRF cookies; returns the CSRF token (bound to this session)."""
    csrf = csrf_token(settings, token)
    max_age = int(settings.session_lifetime_hours * 3600)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=max_age,
        path="/",
        httponly=False,  # the dashboard's script reads it to echo it in X-CSRF-Token
        samesite="lax",
        secure=settings.cookie_secure,
    )
    return csrf


def _set_device_cookie(response: Response, settings: Settings, device: str) -> None:
    response.set_cookie(
        DEVICE_COOKIE,
        device,
        max_age=int(throttle.DEVICE_LIFETIME.total_seconds()),
        path=LOGIN_PATH,  # the only route that reads it
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
    )


def _clear_session_cookies(response: Response, settings: Settings) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(
            name,
            path="/",
            httponly=name == SESSION_COOKIE,
            samesite="lax",
            secure=settings.cookie_secure,
        )


def _session_response(
    response: Response,
    settings: Settings,
    token: str,
    session: Mapping[str, Any],
    user: Mapping[str, Any],
) -> LoginResponse:
    csrf = _set_session_cookies(response, settings, token)
    response.headers["Cache-Control"] = "no-store"
    return LoginResponse(
        token=token,
        expires_at=session["expiresAt"],
        session_id=session["id"],
        csrf_token=csrf,
        user=UserAccount(**user),
    )


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Unknown user or wrong password (the same answer for both)"},
    403: {"description": "The password is right but the account is not ACTIVE"},
    422: {"description": "The request is malformed"},
    429: {"description": "Throttled after repeated failures; see Retry-After"},
    503: {"description": "Too many sign-ins in progress (`busy`); see Retry-After"},
}


_SIGNED_IN: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid session"},
    403: {"description": "Cookie-authenticated write without the X-CSRF-Token header"},
}


# -- routes ------------------------------------------------------------------------


@router.post(
    "/login",
    operation_id="auth_login",
    summary="Sign in with email or username and password",
    response_model=LoginResponse,
    responses=_ERRORS,
    dependencies=[public],
)
async def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    settings: SettingsDep,
) -> LoginResponse:
    async with lanes.anonymous(request).slot():
        signed = await run_in_threadpool(
            auth.login,
            lanes.transactions(request),
            body.who,
            body.password,
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent"),
            settings=settings,
            device=request.cookies.get(DEVICE_COOKIE),
        )
    _set_device_cookie(response, settings, signed.device)
    return _session_response(response, settings, signed.token, signed.session, signed.user)


@router.post(
    "/logout",
    operation_id="auth_logout",
    summary="Sign out: end this session and clear the cookies",
    status_code=204,
    response_class=Response,
    responses=_SIGNED_IN,
)
def logout(request: Request, principal: SignedIn, conn: ConnDep, settings: SettingsDep) -> Response:
    auth.logout(conn, actor_for(request, principal), principal.session_id)
    response = Response(status_code=204)
    _clear_session_cookies(response, settings)
    return response


@router.get(
    "/me",
    operation_id="auth_me",
    summary="The signed-in user, roles and effective permissions",
    responses={401: _SIGNED_IN[401]},
)
def me(principal: SignedIn, conn: ConnDep) -> MeResponse:
    data = auth.me(conn, principal.user_id)
    return MeResponse(
        user=UserAccount(**data["user"]),
        roles=data["roles"],
        permissions=[HeldPermission(name=n, roles=r) for n, r in data["permissions"].items()],
        session=SessionInfo(id=principal.session_id, via=principal.via),
    )


@router.get(
    "/sessions",
    operation_id="sessions_list",
    summary="One's own sessions, newest first",
    responses={401: _SIGNED_IN[401]},
)
def list_sessions(
    principal: SignedIn,
    conn: ConnDep,
    settings: SettingsDep,
    include_ended: Annotated[
        bool, Query(description="Also list revoked, expired and idle sessions")
    ] = False,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> SessionPage:
    page = auth.list_user_sessions(
        conn,
        principal.user_id,
        settings,
        include_ended=include_ended,
        limit=limit,
        cursor=cursor,
    )
    return SessionPage(
        items=[
            SessionOut(
                **{k: v for k, v in r.items() if k != "userId"},
                current=r["id"] == principal.session_id,
            )
            for r in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.delete(
    "/sessions/{session_id}",
    operation_id="sessions_revoke",
    summary="End one of one's own sessions (404 for anyone else's)",
    status_code=204,
    response_class=Response,
    responses={**_SIGNED_IN, 404: {"description": "No such session of yours"}},
)
def revoke_session(
    session_id: SessionId,
    request: Request,
    principal: SignedIn,
    conn: ConnDep,
    settings: SettingsDep,
) -> Response:
    auth.revoke_session(conn, actor_for(request, principal), session_id, user_id=principal.user_id)
    response = Response(status_code=204)
    if session_id == principal.session_id:
        _clear_session_cookies(response, settings)
    return response


@router.post(
    "/password",
    operation_id="auth_change_password",
    summary="Change one's own password (the current one required); ends every session "
    "and returns a new one",
    response_model=LoginResponse,
    responses={
        **_SIGNED_IN,
        422: {"description": "Wrong current password, or the new one breaks the policy"},
        429: {"description": "Too many wrong current passwords; see Retry-After"},
    },
)
def change_password(
    body: PasswordChange,
    request: Request,
    response: Response,
    principal: SignedIn,
    conn: ConnDep,
    settings: SettingsDep,
) -> LoginResponse:
    token, session = auth.change_own_password(
        conn,
        actor_for(request, principal),
        principal.user_id,
        body.current_password,
        body.new_password,
        settings,
        refusals=auth.apart(conn),
    )
    user = auth.me(conn, principal.user_id)["user"]
    return _session_response(response, settings, token, session, user)


@router.delete(
    "/throttle",
    operation_id="auth_clear_throttle",
    summary="Lift the login throttle of an account and/or a client address",
    status_code=204,
    response_class=Response,
    responses={
        401: _SIGNED_IN[401],
        403: {"description": "Without users:write, or a cookie write without X-CSRF-Token"},
    },
)
def clear_throttle(
    request: Request,
    principal: UserAdmin,
    conn: ConnDep,
    email: Annotated[
        str | None,
        Query(min_length=1, max_length=320, description="The account's email or username"),
    ] = None,
    ip: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> Response:
    if email is None and ip is None:
        raise Invalid("give email and/or ip", details={"field": "email"})
    auth.clear_throttle(conn, actor_for(request, principal), email=email, ip=ip)
    return Response(status_code=204)
