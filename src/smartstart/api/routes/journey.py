"""/api/journey and /api/users/{id}/journey: stages, one's own and others' progress."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from smartstart.api.deps import ConnDep, SettingsDep, actor_for, authenticated, require
from smartstart.api.paging import Cursor, Limit
from smartstart.api.schemas import StageAction, StageStatus, UserLevel
from smartstart.domain import journey
from smartstart.domain.authorize import authorize, permits
from smartstart.domain.paging import DEFAULT_LIMIT
from smartstart.domain.sessions import Principal

router = APIRouter(tags=["journey"])

StageId = Annotated[
    str, Path(min_length=1, max_length=journey.ID_MAX, description="Stage id or name")
]
UserId = Annotated[
    str, Path(min_length=1, max_length=320, description="User id, email or username")
]
Action = Annotated[
    StageAction,
    Path(description="start (-> IN_PROGRESS), complete (-> COMPLETED) or skip (-> SKIPPED)"),
]
Name = Annotated[str, Field(min_length=1, max_length=journey.NAME_MAX)]
Description = Annotated[str | None, Field(max_length=journey.DESCRIPTION_MAX)]
Order = Annotated[int, Field(ge=1, le=journey.ORDER_MAX)]
XpReward = Annotated[int, Field(ge=0, le=journey.XP_REWARD_MAX)]


class Stage(BaseModel):
    id: str
    name: str
    description: str | None
    order: int
    xpReward: int
    active: bool
    createdAt: datetime
    updatedAt: datetime


class StagePage(BaseModel):
    items: list[Stage]
    next_cursor: str | None  # pass as `cursor` for the next page


class StageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = None
    order: Order | None = Field(default=None, description="Defaults to after the last stage")
    xpReward: XpReward = 0
    active: bool = True


class StageUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description = None
    order: Order | None = None
    xpReward: XpReward | None = None
    active: bool | None = None


class StageOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage_ids: list[Annotated[str, Field(min_length=1, max_length=journey.ID_MAX)]] = Field(
        max_length=1000,
        description="Every active stage id once, in the new order (inactive ones optional)",
    )


class StageList(BaseModel):
    items: list[Stage]


class JourneyUser(BaseModel):
    id: str
    email: str | None = Field(description="Null unless you may read users (users:read)")
    username: str | None = Field(description="Null unless you may read users (users:read)")
    name: str | None
    xp: int
    level: UserLevel


class JourneyStep(BaseModel):
    stageId: str
    name: str
    description: str | None
    order: int
    xpReward: int
    status: StageStatus
    startedAt: datetime | None
    completedAt: datetime | None
    xpAwarded: bool


class Journey(BaseModel):
    user: JourneyUser
    stages: list[JourneyStep]
    completed: int
    total: int


class Progress(BaseModel):
    userId: str
    stageId: str
    stage: str
    status: StageStatus
    startedAt: datetime | None
    completedAt: datetime | None
    changed: bool = Field(description="False when the call was a no-op (nothing written)")
    xpAwarded: int = Field(description="XP this call added (0 on a no-op or repeat)")
    xp: int = Field(description="The user's XP after the call")
    level: UserLevel = Field(description="The user's level after the call")


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown user or stage"},
    409: {"description": "Not allowed in the current state (see the message)"},
}


# -- stages -----------------------------------------------------------------------------


@router.get(
    "/api/journey/stages",
    operation_id="stages_list",
    summary="List journey stages by order",
    response_model=StagePage,
)
def list_stages(
    request: Request,
    principal: Annotated[Principal, require("journey:read")],
    conn: ConnDep,
    settings: SettingsDep,
    include_inactive: Annotated[
        bool, Query(description="Also inactive stages (needs journey:manage)")
    ] = False,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> StagePage:
    if include_inactive:
        authorize(conn, actor_for(request, principal), "journey:manage")
    page = journey.list_stages(
        conn, settings=settings, include_inactive=include_inactive, limit=limit, cursor=cursor
    )
    return StagePage(items=[Stage(**r) for r in page.items], next_cursor=page.next_cursor)


@router.get(
    "/api/journey/stages/{stage_id}",
    operation_id="stages_get",
    summary="One journey stage, by id or name",
    response_model=Stage,
    responses={404: _ERRORS[404]},
    dependencies=[require("journey:read")],
)
def get_stage(conn: ConnDep, stage_id: StageId) -> Stage:
    return Stage(**journey.resolve_stage(conn, stage_id))


@router.post(
    "/api/journey/stages",
    operation_id="stages_create",
    summary="Create a journey stage",
    status_code=201,
    response_model=Stage,
    responses={409: {"description": "The name or order is taken (details.field)"}},
)
def create_stage(
    request: Request,
    principal: Annotated[Principal, require("journey:manage")],
    conn: ConnDep,
    body: StageCreate,
) -> Stage:
    row = journey.create_stage(
        conn,
        actor_for(request, principal),
        name=body.name,
        order=body.order,
        xp_reward=body.xpReward,
        description=body.description,
        active=body.active,
    )
    return Stage(**row)


@router.put(
    "/api/journey/stages/order",
    operation_id="stages_reorder",
    summary="Reorder stages: the ids in their new order get orders 1..N",
    response_model=StageList,
    responses={422: {"description": "Ids missing, unknown or repeated (details say which)"}},
)
def reorder_stages(
    request: Request,
    principal: Annotated[Principal, require("journey:manage")],
    conn: ConnDep,
    body: StageOrder,
) -> StageList:
    rows = journey.reorder_stages(conn, actor_for(request, principal), body.stage_ids)
    return StageList(items=[Stage(**r) for r in rows])


@router.patch(
    "/api/journey/stages/{stage_id}",
    operation_id="stages_update",
    summary="Update a stage (name, description, order, xpReward, active)",
    response_model=Stage,
    responses={**_ERRORS, 409: {"description": "The name or order is taken (details.field)"}},
)
def update_stage(
    request: Request,
    principal: Annotated[Principal, require("journey:manage")],
    conn: ConnDep,
    stage_id: StageId,
    body: StageUpdate,
) -> Stage:
    # Only the fields sent; null clears the description and is refused for the others.
    changes = body.model_dump(exclude_unset=True)
    row = journey.update_stage(conn, actor_for(request, principal), stage_id, changes)
    return Stage(**row)


@router.delete(
    "/api/journey/stages/{stage_id}",
    operation_id="stages_delete",
    summary="Delete a stage that no user has progress in (else 409: deactivate it)",
    status_code=204,
    response_class=Response,
    responses=_ERRORS,
)
def delete_stage(
    request: Request,
    principal: Annotated[Principal, require("journey:manage")],
    conn: ConnDep,
    stage_id: StageId,
) -> Response:
    journey.delete_stage(conn, actor_for(request, principal), stage_id)
    return Response(status_code=204)


# -- one's own journey ------------------------------------------------------------------


@router.get(
    "/api/journey/me",
    operation_id="journey_get_mine",
    summary="My journey: every active stage with my state",
    response_model=Journey,
)
def my_journey(principal: Annotated[Principal, authenticated], conn: ConnDep) -> Journey:
    return Journey(**journey.journey(conn, principal.user_id))


@router.post(
    "/api/journey/me/stages/{stage_id}/{action}",
    operation_id="journey_progress_mine",
    summary="Start, complete or skip a stage of my journey",
    response_model=Progress,
    responses=_ERRORS,
)
def my_progress(
    request: Request,
    principal: Annotated[Principal, authenticated],
    conn: ConnDep,
    stage_id: StageId,
    action: Action,
) -> Progress:
    result = journey.progress(
        conn, actor_for(request, principal), principal.user_id, stage_id, action
    )
    return Progress(**result)


# -- other users' journeys --------------------------------------------------------------


@router.get(
    "/api/users/{user_id}/journey",
    operation_id="journey_get",
    summary="A user's journey: every active stage with their state",
    response_model=Journey,
    responses={404: _ERRORS[404]},
)
def user_journey(
    request: Request,
    principal: Annotated[Principal, require("journey:read")],
    conn: ConnDep,
    user_id: UserId,
) -> Journey:
    shown = Journey(**journey.journey(conn, user_id))
    # Who the user is (email, username, name) is for those who may read users, or themselves.
    if shown.user.id != principal.user_id and not permits(
        actor_for(request, principal), "users:read"
    ):
        shown.user = shown.user.model_copy(update={"email": None, "username": None, "name": None})
    return shown


@router.post(
    "/api/users/{user_id}/journey/{stage_id}/{action}",
    operation_id="journey_progress",
    summary="Start, complete or skip a stage of a user's journey",
    response_model=Progress,
    responses=_ERRORS,
)
def user_progress(
    request: Request,
    principal: Annotated[Principal, require("journey:manage")],
    conn: ConnDep,
    user_id: UserId,
    stage_id: StageId,
    action: Action,
) -> Progress:
    result = journey.progress(conn, actor_for(request, principal), user_id, stage_id, action)
    return Progress(**result)
