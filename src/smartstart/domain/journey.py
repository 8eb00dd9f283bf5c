"""Onboarding journeys: stages, users' progress through them, and the XP they earn.

The database does the bookkeeping that raw SQL must not be able to break: one state
per (user, stage), `startedAt`/`completedAt` following the status, the stage's XP
added to `"User".xp` exactly once ever when a state becomes COMPLETED (however often
it is set, by this module or by the guide's `UPDATE "UserJourneyState"`), and the
level following XP. This module adds the rules of the journey on top.

Progress rules (also in docs/api.md, "Journeys"):

- start: NOT_STARTED or SKIPPED -> IN_PROGRESS; already IN_PROGRESS is a no-op;
  a COMPLETED stage cannot be restarted (409).
- complete: allowed when the stage is IN_PROGRESS, or when the previous active stage
  (by order) is COMPLETED or SKIPPED for that user; the first active stage can always be
  completed. Otherwise 409. Completing a COMPLETED stage is a no-op that returns the
  state and awards nothing.
- skip: allowed unless COMPLETED (409); already SKIPPED is a no-op.
- Only active stages take progress (409 for an inactive one).
- A no-op writes nothing and records no audit row; every call that changes a state
  records exactly one ("journey.start", "journey.complete", "journey.skip").

Concurrency: each transition locks the state row (SELECT ... FOR UPDATE, after the row
is created race-free as NOT_STARTED with INSERT ... ON CONFLICT ("userId", "stageId")
DO NOTHING) and changes it with an UPDATE, so of N concurrent completes one changes the
state and the others see COMPLETED and do nothing; the trigger awards the XP once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, TypedDict, cast

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import dict_row

from smartstart.domain import audit
from smartstart.domain.audit import Actor
from smartstart.domain.authorize import authorize
from smartstart.domain.errors import Conflict, Invalid
from smartstart.domain.resolve import resolve_user

# Stages live in `stages`; re-exported so callers keep `journey.<name>`.
from smartstart.domain.stages import (
    DESCRIPTION_MAX,
    ID_MAX,
    NAME_MAX,
    ORDER_MAX,
    STAGE_RESOURCE,
    XP_REWARD_MAX,
    StageChanges,
    StageDeletePlan,
    StageRow,
    create_stage,
    deactivate_stage,
    delete_stage,
    list_stages,
    plan_stage_delete,
    reorder_stages,
    resolve_stage,
    stage_usage,
    update_stage,
)

__all__ = [
    "JOURNEY_RESOURCE",
    "START",
    "COMPLETE",
    "SKIP",
    "ACTIONS",
    "StageProgress",
    "JourneyUser",
    "UserJourney",
    "StateRow",
    "ProgressResult",
    "journey",
    "start",
    "complete",
    "skip",
    "progress",
    "DESCRIPTION_MAX",
    "ID_MAX",
    "NAME_MAX",
    "ORDER_MAX",
    "STAGE_RESOURCE",
    "XP_REWARD_MAX",
    "StageChanges",
    "StageDeletePlan",
    "StageRow",
    "create_stage",
    "deactivate_stage",
    "delete_stage",
    "list_stages",
    "plan_stage_delete",
    "reorder_stages",
    "resolve_stage",
    "stage_usage",
    "update_stage",
]

JOURNEY_RESOURCE = "journey"  # resource id: the user whose journey changed


class StageProgress(TypedDict):
    """One active stage of a user's journey, with the user's state of it."""

    stageId: str
    name: str
    description: str | None
    order: int
    xpReward: int
    status: str
    startedAt: datetime | None
    completedAt: datetime | None
    xpAwarded: bool


class JourneyUser(TypedDict):
    """Whose journey it is (the faces decide which of these a caller may see)."""

    id: str
    email: str
    username: str
    name: str | None
    xp: int
    level: str


class UserJourney(TypedDict):
    """A user's journey: every active stage in order, and how many are completed."""

    user: JourneyUser
    stages: list[StageProgress]
    completed: int
    total: int


class StateRow(TypedDict):
    """A "UserJourneyState" row."""

    id: str
    userId: str
    stageId: str
    status: str
    startedAt: datetime | None
    completedAt: datetime | None
    xpAwardedAt: datetime | None
    createdAt: datetime
    updatedAt: datetime


class ProgressResult(TypedDict):
    """The outcome of start/complete/skip: the state now, and what it changed."""

    userId: str
    stageId: str
    stage: str
    status: str
    startedAt: datetime | None
    completedAt: datetime | None
    changed: bool
    xpAwarded: int
    xp: int
    level: str


_STATE_COLUMNS = (
    'id, "userId", "stageId", status, "startedAt", "completedAt", "xpAwardedAt",'
    ' "createdAt", "updatedAt"'
)
_UPDATABLE: Final = ("name", "description", "order", "xpReward", "active")
START, COMPLETE, SKIP = "start", "complete", "skip"
ACTIONS: Final = (START, COMPLETE, SKIP)
_TARGET = {START: "IN_PROGRESS", COMPLETE: "COMPLETED", SKIP: "SKIPPED"}
_PAST = {START: "started", COMPLETE: "completed", SKIP: "skipped"}

# -- progress ---------------------------------------------------------------------------


def journey(conn: psycopg.Connection[Any], ref: str) -> UserJourney:
    """A user's journey: every active stage in order with the user's state of it."""
    user = resolve_user(conn, ref)
    user_id = user["id"]
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            'SELECT s.id AS "stageId", s.name, s.description, s."order", s."xpReward",'
            ' COALESCE(j.status, \'NOT_STARTED\') AS status, j."startedAt", j."completedAt",'
            ' (j."xpAwardedAt" IS NOT NULL) AS "xpAwarded"'
            ' FROM "JourneyStage" s LEFT JOIN "UserJourneyState" j'
            ' ON j."stageId" = s.id AND j."userId" = %s'
            ' WHERE s.active ORDER BY s."order"',
            [user_id],
        ).fetchall()
    stages = cast(list[StageProgress], rows)
    done = sum(1 for s in stages if s["status"] == "COMPLETED")
    return {
        "user": {
            "id": user["id"],
            "email": user["email"],
            "username": user["username"],
            "name": user["name"],
            "xp": user["xp"],
            "level": user["level"],
        },
        "stages": stages,
        "completed": done,
        "total": len(stages),
    }


def _state(conn: psycopg.Connection[Any], user_id: str, stage_id: str) -> StateRow | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f'SELECT {_STATE_COLUMNS} FROM "UserJourneyState"'
            ' WHERE "userId" = %s AND "stageId" = %s FOR UPDATE',
            [user_id, stage_id],
        ).fetchone()
    return cast(StateRow | None, row)


def _previous_done(conn: psycopg.Connection[Any], user_id: str, stage: StageRow) -> bool:
    """True when stage is the first active one or the active one before it is done."""
    prev = conn.execute(
        'SELECT id FROM "JourneyStage" WHERE active AND "order" < %s ORDER BY "order" DESC LIMIT 1',
        [stage["order"]],
    ).fetchone()
    if prev is None:
        return True
    # Shared lock: the previous state cannot be reopened while this completion commits.
    row = conn.execute(
        'SELECT status FROM "UserJourneyState" WHERE "userId" = %s AND "stageId" = %s FOR SHARE',
        [user_id, prev[0]],
    ).fetchone()
    return row is not None and row[0] in ("COMPLETED", "SKIPPED")


def _check(
    conn: psycopg.Connection[Any],
    action: str,
    status: str,
    user_id: str,
    stage: StageRow,
) -> bool:
    """Whether action changes a state now in status (False: a no-op); 409 when not allowed."""
    name = stage["name"]
    target = _TARGET[action]
    if status == target:
        return False
    if status == "COMPLETED":
        raise Conflict(
            f"stage {name!r} is already completed; it cannot be {_PAST[action]} again",
            details={"status": status, "reason": "completed"},
        )
    if action == COMPLETE and status != "IN_PROGRESS" and not _previous_done(conn, user_id, stage):
        raise Conflict(
            f"stage {name!r} cannot be completed yet: start it first, or complete or skip"
            " the previous stage",
            details={"status": status, "reason": "previous_stage_not_done"},
        )
    return True


def _transition(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, stage_ref: str, action: str
) -> ProgressResult:
    user = resolve_user(conn, user_ref)
    user_id = user["id"]
    if user_id != actor.user_id:
        # One's own journey needs no permission; another's, journey:manage and rank.
        authorize(conn, actor, "journey:manage", user_id)
    # Lock order: stage (shared, so its xpReward cannot change under us), then the state
    # row, then the trigger's UPDATE of "User": the same for every caller, so no deadlock.
    stage = resolve_stage(conn, stage_ref, "FOR SHARE")
    stage_id = stage["id"]
    if not stage["active"]:
        raise Conflict(
            f"stage {stage['name']!r} is inactive and takes no progress",
            details={"reason": "inactive"},
        )
    before = _state(conn, user_id, stage_id)
    if before is None:
        # Decide before writing, so a refused call leaves no row behind.
        _check(conn, action, "NOT_STARTED", user_id, stage)
        # Created as NOT_STARTED and changed by the UPDATE below: the transition is then
        # decided on the locked row whoever created it, so a concurrent duplicate is a no-op.
        conn.execute(
            'INSERT INTO "UserJourneyState" ("userId", "stageId") VALUES (%s, %s)'
            ' ON CONFLICT ("userId", "stageId") DO NOTHING',
            [user_id, stage_id],
        )
        before = _state(conn, user_id, stage_id)
        assert before is not None  # inserted now or committed by a concurrent call
    after = before
    changed = _check(conn, action, before["status"], user_id, stage)
    if changed:
        try:
            with conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute(
                    f'UPDATE "UserJourneyState" SET status = %s WHERE id = %s'
                    f" RETURNING {_STATE_COLUMNS}",
                    [_TARGET[action], before["id"]],
                ).fetchone()
        except pgerrors.NumericValueOutOfRange:
            raise Conflict(
                "the stage's XP would take the user past the largest XP total",
                details={"reason": "xp_overflow"},
            ) from None
        assert row is not None  # the row is locked by _state
        after = cast(StateRow, row)
    # The trigger stamps xpAwardedAt in the same statement that adds the XP, once ever.
    awarded = stage["xpReward"] if before["xpAwardedAt"] is None and after["xpAwardedAt"] else 0
    if changed:
        user = resolve_user(conn, user_id)
        audit.record(
            conn,
            actor,
            f"journey.{action}",
            resource=JOURNEY_RESOURCE,
            resource_id=user_id,
            stageId=stage_id,
            stage=stage["name"],
            before={"status": before["status"]},
            after={"status": after["status"], "xpAwarded": awarded, "xp": user["xp"]},
        )
    return {
        "userId": user_id,
        "stageId": stage_id,
        "stage": stage["name"],
        "status": after["status"],
        "startedAt": after["startedAt"],
        "completedAt": after["completedAt"],
        "changed": changed,
        "xpAwarded": awarded,
        "xp": user["xp"],
        "level": user["level"],
    }


def start(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, stage_ref: str
) -> ProgressResult:
    """Mark a stage IN_PROGRESS for a user (from NOT_STARTED or SKIPPED)."""
    return _transition(conn, actor, user_ref, stage_ref, START)


def complete(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, stage_ref: str
) -> ProgressResult:
    """Complete a stage (see the module docstring for when); its XP is awarded once ever."""
    return _transition(conn, actor, user_ref, stage_ref, COMPLETE)


def skip(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, stage_ref: str
) -> ProgressResult:
    """Skip a stage that is not completed; it then counts as done for the next one."""
    return _transition(conn, actor, user_ref, stage_ref, SKIP)


def progress(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, stage_ref: str, action: str
) -> ProgressResult:
    """start, complete or skip by name (the API's and CLI's single entry point)."""
    if action not in ACTIONS:
        raise Invalid(f"unknown journey action {action!r}; one of {', '.join(ACTIONS)}")
    return _transition(conn, actor, user_ref, stage_ref, action)
