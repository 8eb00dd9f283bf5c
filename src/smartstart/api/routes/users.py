"""/api/users: accounts, their status, passwords, XP and reputation; /me for one's own profile."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, cast

import psycopg
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from smartstart.api.deps import (
    ConnDep,
    RequireRiding,
    Ridden,
    SettingsDep,
    actor_for,
    authenticated,
    require,
)
from smartstart.api.paging import Cursor, Limit
from smartstart.api.responses import trusted_json
from smartstart.api.schemas import UserAccount, UserLevel, UserStatus
from smartstart.domain import resolve, users, xp
from smartstart.domain.actor import Actor
from smartstart.domain.paging import DEFAULT_LIMIT
from smartstart.domain.resolve import UserRow
from smartstart.domain.sessions import Principal

router = APIRouter(prefix="/api/users", tags=["users"])

Status = UserStatus
Level = UserLevel
Sort = Literal["createdAt", "email", "username", "xp", "lastActive"]
Name = Annotated[str | None, Field(max_length=users.MAX_NAME_LENGTH)]
Amount = Annotated[int, Field(strict=True, ge=-users.INT4_MAX, le=users.INT4_MAX)]
Reason = Annotated[str, Field(min_length=1, max_length=users.MAX_REASON_LENGTH)]
OptReason = Annotated[str | None, Field(max_length=users.MAX_REASON_LENGTH)]

Reader = Annotated[Principal, require("users:read")]
Writer = Annotated[Principal, require("users:write")]
Deleter = Annotated[Principal, require("users:delete")]
Me = Annotated[Principal, authenticated]
# GET /api/users/{id}: the user's row (by id) rides in the session lookup's statement.
ReadOne = Annotated[
    Ridden[UserRow],
    Depends(RequireRiding("users:read", lambda r: resolve.user_rider(r.path_params["user_id"]))),
]

Responses = dict[int | str, dict[str, Any]]  # OpenAPI's extra responses of a route
_NOT_FOUND: Responses = {404: {"description": "No such user"}}
_WRITE_ERRORS: Responses = {
    **_NOT_FOUND,
    403: {"description": "Missing permission, or the user holds permissions you lack (Denied)"},
    409: {"description": "Taken email/username (details.field), or the last SUPER_ADMIN"},
}


class UserAccountPage(BaseModel):
    items: list[UserAccount]
    next_cursor: str | None  # pass as `cursor` (with the same sort and order) for the next page


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=users.MAX_EMAIL_LENGTH)
    username: str = Field(max_length=50)
    # The policy (12 to 128 characters, not a common password) is checked by the domain.
    password: str = Field(max_length=1024)
    name: Name = None
    firstName: Name = None
    lastName: Name = None
    role: str = Field("MEMBER", max_length=users.MAX_NAME_LENGTH)
    status: Status = UserStatus.ACTIVE


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(None, max_length=users.MAX_EMAIL_LENGTH)
    username: str | None = Field(None, max_length=50)
    name: Name = None
    firstName: Name = None
    lastName: Name = None
    role: str | None = Field(None, max_length=users.MAX_NAME_LENGTH)
    status: Status | None = None


class ProfileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str | None = Field(None, max_length=50)
    name: Name = None
    firstName: Name = None
    lastName: Name = None


class PasswordSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(max_length=1024)


class CounterAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount
    reason: Reason


class XpSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    xp: Annotated[int, Field(strict=True, ge=0, le=users.INT4_MAX)]
    reason: OptReason = None


class ReputationSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reputation: Amount
    reason: OptReason = None


# /me comes before /{user_id}: otherwise "me" would be taken for an id.
@router.get(
    "/me", operation_id="users_me_get", summary="Your own profile", response_model=UserAccount
)
def get_me(principal: Me, conn: ConnDep) -> UserRow:
    return resolve.resolve_user(conn, principal.user_id)


@router.patch(
    "/me",
    operation_id="users_me_update",
    summary="Change your own profile (names, username)",
    response_model=UserAccount,
    responses={409: {"description": "Username taken (details.field)"}},
)
def update_me(request: Request, principal: Me, conn: ConnDep, body: ProfileUpdate) -> UserRow:
    changes = cast(users.ProfileChanges, body.model_dump(exclude_unset=True))
    return users.update_profile(conn, actor_for(request, principal), principal.user_id, changes)


@router.get(
    "",
    operation_id="users_list",
    summary="List users: search, filter, sort, paginate",
    response_model=UserAccountPage,
)
def list_users(
    _: Reader,
    conn: ConnDep,
    settings: SettingsDep,
    q: Annotated[
        str | None,
        Query(
            max_length=users.MAX_SEARCH_LENGTH,
            description="Case-insensitive substring of email, username or name (3 or more"
            " characters; 2: a prefix of the email or username; 1: refused, 422)",
        ),
    ] = None,
    role: Annotated[
        str | None,
        Query(max_length=users.MAX_NAME_LENGTH, description="Users holding this role"),
    ] = None,
    status: Status | None = None,
    level: Level | None = None,
    sort: Sort = "createdAt",
    order: Literal["asc", "desc"] = "desc",
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> UserAccountPage:
    page = users.list_users(
        conn,
        users.UserFilter(q=q, role=role, status=status, level=level),
        settings=settings,
        sort=sort,
        order=order,
        limit=limit,
        cursor=cursor,
    )
    return UserAccountPage(
        items=[UserAccount(**u) for u in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/{user_id}",
    operation_id="users_get",
    summary="One user, by id, email or username",
    response_model=UserAccount,
    responses=_NOT_FOUND,
)
async def get_user(request: Request, read: ReadOne, user_id: str) -> Response:
    # The hot read path: by id, one statement on the event loop. An email or a username
    # (a miss by id) takes a second round trip.
    if read.row is not None:
        return trusted_json(read.row)
    async with request.app.state.apool.connection() as conn:
        return trusted_json(await resolve.aresolve_user(conn, user_id))


@router.post(
    "",
    operation_id="users_create",
    summary="Create a user",
    status_code=201,
    response_model=UserAccount,
    responses={
        403: {"description": "Missing permission, or the role grants permissions you lack"},
        409: {"description": "Email (any case) or username taken: details.field names it"},
    },
)
def create_user(
    request: Request, settings: SettingsDep, principal: Writer, conn: ConnDep, body: UserCreate
) -> UserRow:
    return users.create(
        conn,
        actor_for(request, principal),
        email=body.email,
        username=body.username,
        password=body.password,
        name=body.name,
        first_name=body.firstName,
        last_name=body.lastName,
        role=body.role,
        status=body.status,
        rounds=settings.bcrypt_rounds,
    )


@router.patch(
    "/{user_id}",
    operation_id="users_update",
    summary="Change a user's email, username, names, role or status",
    response_model=UserAccount,
    responses=_WRITE_ERRORS,
)
def update_user(
    request: Request, principal: Writer, conn: ConnDep, user_id: str, body: UserUpdate
) -> UserRow:
    changes = cast(users.UserChanges, body.model_dump(exclude_unset=True))
    return users.update(conn, actor_for(request, principal), user_id, changes)


Change = Callable[[psycopg.Connection[Any], Actor, str], UserRow]


def _post(
    path: str, route: Callable[..., UserRow], name: str, summary: str, errors: Responses
) -> None:
    """Register a POST route that answers with the changed user (for the factories below)."""
    # `name` is also the operation's: users_<name>.
    router.add_api_route(
        path,
        route,
        methods=["POST"],
        name=name,
        operation_id=f"users_{name}",
        summary=summary,
        response_model=UserAccount,
        responses=errors,
    )


def _status_route(verb: str, summary: str, change: Change) -> None:
    """POST /{user_id}/<verb>: one status change (suspend, activate, deactivate)."""

    def route(request: Request, principal: Writer, conn: ConnDep, user_id: str) -> UserRow:
        return change(conn, actor_for(request, principal), user_id)

    _post(f"/{{user_id}}/{verb}", route, verb, summary, _WRITE_ERRORS)


_status_route("suspend", "Suspend a user (ends their sessions)", users.suspend)
_status_route("activate", "Activate a user", users.activate)
_status_route(
    "deactivate",
    "Deactivate a user (ends their sessions; reversible, unlike delete)",
    users.deactivate,
)


@router.put(
    "/{user_id}/password",
    operation_id="users_set_password",
    summary="Reset another user's password (ends their sessions; yours: POST /api/auth/password)",
    status_code=204,
    response_class=Response,
    responses={**_WRITE_ERRORS, 422: {"description": "Password too short/long or common"}},
)
def set_password(
    request: Request,
    settings: SettingsDep,
    principal: Writer,
    conn: ConnDep,
    user_id: str,
    body: PasswordSet,
) -> Response:
    users.set_password(
        conn,
        actor_for(request, principal),
        user_id,
        body.password,
        rounds=settings.bcrypt_rounds,
    )
    return Response(status_code=204)


@router.delete(
    "/{user_id}",
    operation_id="users_delete",
    summary="Delete a user for good (sessions, journey and role assignments go with it)",
    status_code=204,
    response_class=Response,
    responses=_WRITE_ERRORS,
)
def delete_user(request: Request, principal: Deleter, conn: ConnDep, user_id: str) -> Response:
    users.delete(conn, actor_for(request, principal), user_id)
    return Response(status_code=204)


def _add_route(counter: xp.Counter, summary: str, errors: Responses) -> None:
    """POST /{user_id}/<counter>: add to XP or reputation (negative to take)."""

    def route(
        request: Request, principal: Writer, conn: ConnDep, user_id: str, body: CounterAdd
    ) -> UserRow:
        actor = actor_for(request, principal)
        return xp.add(conn, actor, user_id, counter, body.amount, body.reason)

    _post(f"/{{user_id}}/{counter}", route, f"add_{counter}", summary, errors)


_add_route(
    "xp",
    "Add XP (negative to take); the level follows",
    {**_WRITE_ERRORS, 422: {"description": "XP would go below 0"}},
)
_add_route("reputation", "Add reputation (negative to take)", _WRITE_ERRORS)


# The two setters differ in their body (the field is named after the counter).
@router.put(
    "/{user_id}/xp",
    operation_id="users_set_xp",
    summary="Set XP",
    response_model=UserAccount,
    responses=_WRITE_ERRORS,
)
def set_xp(
    request: Request, principal: Writer, conn: ConnDep, user_id: str, body: XpSet
) -> UserRow:
    return xp.set_xp(conn, actor_for(request, principal), user_id, body.xp, body.reason)


@router.put(
    "/{user_id}/reputation",
    operation_id="users_set_reputation",
    summary="Set reputation",
    response_model=UserAccount,
    responses=_WRITE_ERRORS,
)
def set_reputation(
    request: Request, principal: Writer, conn: ConnDep, user_id: str, body: ReputationSet
) -> UserRow:
    actor = actor_for(request, principal)
    return xp.set_reputation(conn, actor, user_id, body.reputation, body.reason)
