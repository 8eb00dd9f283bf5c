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

from collections.abc import Mapping, Sequence
from typing import Any, Final

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.rows import dict_row

from smartstart.config import Settings
from smartstart.domain import audit, paging
from smartstart.domain.audit import Actor
from smartstart.domain.authorize import authorize
from smartstart.domain.errors import Conflict, Invalid, NotFound
from smartstart.domain.resolve import resolve_user

NAME_MAX = 100
DESCRIPTION_MAX = 2000
XP_REWARD_MAX = 1_000_000
ORDER_MAX = 1_000_000
ID_MAX = 128

STAGE_RESOURCE = "journey_stage"
JOURNEY_RESOURCE = "journey"  # resource id: the user whose journey changed

_STAGE_COLUMNS = sql.SQL(
    'id, name, description, "order", "xpReward", active, "createdAt", "updatedAt"'
)
_STATE_COLUMNS = (
    'id, "userId", "stageId", status, "startedAt", "completedAt", "xpAwardedAt",'
    ' "createdAt", "updatedAt"'
)
_UPDATABLE: Final = ("name", "description", "order", "xpReward", "active")
# Serialises everything that assigns stage orders (create, order changes, reorder).
_ORDER_LOCK = "SELECT pg_advisory_xact_lock(hashtext('smartstart.journey_stage_order'))"

START, COMPLETE, SKIP = "start", "complete", "skip"
ACTIONS: Final = (START, COMPLETE, SKIP)
_TARGET = {START: "IN_PROGRESS", COMPLETE: "COMPLETED", SKIP: "SKIPPED"}
_PAST = {START: "started", COMPLETE: "completed", SKIP: "skipped"}


# -- lookups ----------------------------------------------------------------------------


def _usable_id(value: str) -> bool:
    # Ids are text; one that cannot exist (too long, NUL) is simply not found, never a 500.
    return 0 < len(value) <= ID_MAX and "\x00" not in value


def resolve_stage(conn: psycopg.Connection[Any], ref: str, lock: str = "") -> dict[str, Any]:
    """One stage by id or by name (exact, else case-insensitive when unambiguous).

    `lock` ("FOR UPDATE", "FOR SHARE") locks the stage until the end of the transaction.
    """
    if not _usable_id(ref):
        raise NotFound(f"no journey stage with id or name {ref[:ID_MAX]!r}")
    query = sql.SQL(
        'SELECT {} FROM "JourneyStage" WHERE id = %s OR lower(name) = lower(%s)'
        " ORDER BY (id = %s) DESC, (name = %s) DESC"
    ).format(_STAGE_COLUMNS)
    if lock:
        query += sql.SQL(" " + lock)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, [ref, ref, ref, ref]).fetchall()
    if not rows:
        raise NotFound(f"no journey stage with id or name {ref!r}")
    if len(rows) > 1 and rows[0]["id"] != ref and rows[0]["name"] != ref:
        names = ", ".join(repr(r["name"]) for r in rows)
        raise Invalid(f"{ref!r} matches several stages ({names}); give the exact name or id")
    return rows[0]


def _stages(conn: psycopg.Connection[Any], include_inactive: bool) -> list[dict[str, Any]]:
    """Every stage by order (the whole, short list: for the faces after a reorder)."""
    query = sql.SQL('SELECT {} FROM "JourneyStage"').format(_STAGE_COLUMNS)
    if not include_inactive:
        query += sql.SQL(" WHERE active")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query + sql.SQL(' ORDER BY "order"')).fetchall()


def list_stages(
    conn: psycopg.Connection[Any],
    *,
    settings: Settings,
    include_inactive: bool = False,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> paging.Page[dict[str, Any]]:
    """A page of stages by order (unique: the whole key), active only unless include_inactive."""
    limit = paging.check_limit(limit)
    keyset = paging.Keyset("stages", ("int",), {"include_inactive": include_inactive})
    after = keyset.after(settings, cursor)
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    if not include_inactive:
        clauses.append(sql.SQL("active"))
    if after is not None:
        clauses.append(sql.SQL('"order" > %s'))
        params.extend(after)
    query = sql.SQL('SELECT {} FROM "JourneyStage"').format(_STAGE_COLUMNS)
    if clauses:
        query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses)
    query += sql.SQL(' ORDER BY "order" LIMIT %s')
    params.append(limit + 1)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    return keyset.page(settings, rows, limit, lambda r: (r["order"],))


# -- stages -----------------------------------------------------------------------------


def _clean(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validated stage fields (the API validates too; this guards the CLI and callers)."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in _UPDATABLE:
            raise Invalid(f"unknown stage field {key!r}", details={"field": key})
        if key == "name":
            if not isinstance(value, str) or not value.strip():
                raise Invalid("the stage name must not be empty", details={"field": "name"})
            value = value.strip()
            if len(value) > NAME_MAX or "\x00" in value:
                raise Invalid(
                    f"the stage name is limited to {NAME_MAX} characters",
                    details={"field": "name"},
                )
        elif key == "description":
            if value is not None and (
                not isinstance(value, str) or len(value) > DESCRIPTION_MAX or "\x00" in value
            ):
                raise Invalid(
                    f"the description is text of at most {DESCRIPTION_MAX} characters",
                    details={"field": "description"},
                )
        elif key == "order":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ORDER_MAX:
                raise Invalid(
                    f"order is a whole number from 1 to {ORDER_MAX}", details={"field": "order"}
                )
        elif key == "xpReward":
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 0 <= value <= XP_REWARD_MAX
            ):
                raise Invalid(
                    f"xpReward is a whole number from 0 to {XP_REWARD_MAX}",
                    details={"field": "xpReward"},
                )
        elif key == "active" and not isinstance(value, bool):
            raise Invalid("active is true or false", details={"field": "active"})
        out[key] = value
    return out


def _conflict_from(e: pgerrors.UniqueViolation, values: Mapping[str, Any]) -> Conflict:
    constraint = e.diag.constraint_name or ""
    if constraint == "JourneyStage_order_key":
        return Conflict(
            f"another stage already has order {values.get('order')}; pick a free one or use"
            " reorder to move stages",
            field="order",
        )
    return Conflict(f"a stage named {values.get('name')!r} already exists", field="name")


def _write_stage(
    conn: psycopg.Connection[Any], query: sql.Composed, params: Sequence[Any], values: Any
) -> dict[str, Any]:
    # The order constraint is deferred (so reorder can swap); checked now, a taken order is
    # a 409 here instead of an error at commit.
    conn.execute('SET CONSTRAINTS "JourneyStage_order_key" IMMEDIATE')
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(query, params).fetchone()
    except pgerrors.UniqueViolation as e:
        raise _conflict_from(e, values) from None
    conn.execute('SET CONSTRAINTS "JourneyStage_order_key" DEFERRED')
    assert row is not None
    return row


def create_stage(
    conn: psycopg.Connection[Any],
    actor: Actor,
    *,
    name: str,
    order: int | None = None,
    xp_reward: int = 0,
    description: str | None = None,
    active: bool = True,
) -> dict[str, Any]:
    """A new stage (order defaults to after the last one); 409 on a taken name or order."""
    authorize(conn, actor, "journey:manage")
    values = _clean(
        {
            "name": name,
            "description": description,
            "xpReward": xp_reward,
            "active": active,
            **({"order": order} if order is not None else {}),
        }
    )
    conn.execute(_ORDER_LOCK)
    if "order" not in values:
        next_order = conn.execute('SELECT COALESCE(max("order"), 0) + 1 FROM "JourneyStage"')
        values["order"] = next_order.fetchone()[0]  # type: ignore[index]
    columns = list(values)
    row = _write_stage(
        conn,
        sql.SQL('INSERT INTO "JourneyStage" ({}) VALUES ({}) RETURNING {}').format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            _STAGE_COLUMNS,
        ),
        [values[c] for c in columns],
        values,
    )
    audit.record(
        conn,
        actor,
        "journey_stage.create",
        resource=STAGE_RESOURCE,
        resource_id=row["id"],
        after=_public_stage(row),
    )
    return row


def _public_stage(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("name", "description", "order", "xpReward", "active")}


def update_stage(
    conn: psycopg.Connection[Any], actor: Actor, ref: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Change name/description/order/xpReward/active (no-op when nothing differs)."""
    # A new xpReward applies to completions from now on; XP already awarded stays.
    values = _clean(changes)
    authorize(conn, actor, "journey:manage")
    if "order" in values:
        conn.execute(_ORDER_LOCK)
    before = resolve_stage(conn, ref, "FOR UPDATE")
    stage_id = before["id"]
    values = {k: v for k, v in values.items() if before[k] != v}
    if not values:
        return before
    after = _write_stage(
        conn,
        sql.SQL('UPDATE "JourneyStage" SET {} WHERE id = %s RETURNING {}').format(
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values),
            _STAGE_COLUMNS,
        ),
        [*values.values(), stage_id],
        {**_public_stage(before), **values},
    )
    # Activation changes get their own action names, whichever face made them.
    verb = "update"
    if list(values) == ["active"]:
        verb = "activate" if values["active"] else "deactivate"
    audit.record(
        conn,
        actor,
        f"journey_stage.{verb}",
        resource=STAGE_RESOURCE,
        resource_id=stage_id,
        before={k: before[k] for k in values},
        after={k: after[k] for k in values},
    )
    return after


def deactivate_stage(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> dict[str, Any]:
    """Hide a stage from journeys, keeping its history (no-op when already inactive)."""
    return update_stage(conn, actor, ref, {"active": False})


def stage_usage(conn: psycopg.Connection[Any], stage_id: str) -> int:
    """How many journey states reference the stage (a stage with any cannot be deleted)."""
    row = conn.execute(
        'SELECT count(*) FROM "UserJourneyState" WHERE "stageId" = %s', [stage_id]
    ).fetchone()
    return int(row[0]) if row else 0


def _in_use(name: str, states: int) -> Conflict:
    return Conflict(
        f"stage {name!r} has {states} journey state(s) and cannot be deleted;"
        " deactivate it instead (its history stays)",
        details={"states": states, "suggestion": "deactivate"},
    )


def delete_stage(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> dict[str, Any]:
    """Delete a stage no journey state references; 409 (suggesting deactivate) otherwise."""
    authorize(conn, actor, "journey:manage")
    before = resolve_stage(conn, ref, "FOR UPDATE")
    stage_id = before["id"]
    states = stage_usage(conn, stage_id)
    if states:
        raise _in_use(before["name"], states)
    try:
        conn.execute('DELETE FROM "JourneyStage" WHERE id = %s', [stage_id])
    except pgerrors.ForeignKeyViolation:
        # A state was created between the count and the delete.
        raise _in_use(before["name"], stage_usage(conn, stage_id) or 1) from None
    audit.record(
        conn,
        actor,
        "journey_stage.delete",
        resource=STAGE_RESOURCE,
        resource_id=stage_id,
        before=_public_stage(before),
    )
    return before


def reorder_stages(
    conn: psycopg.Connection[Any], actor: Actor, stage_refs: Sequence[str]
) -> list[dict[str, Any]]:
    """Give the stages orders 1..N in the order of stage_refs (ids or names), at once."""
    # stage_refs lists every active stage once; inactive ones may be listed too, and those
    # left out keep their relative order after the listed ones.
    authorize(conn, actor, "journey:manage")
    conn.execute(_ORDER_LOCK)
    stage_ids = [_stage_id(conn, ref) for ref in stage_refs]
    current = conn.execute('SELECT id, active FROM "JourneyStage" ORDER BY "order" FOR UPDATE')
    rows = current.fetchall()
    known = {r[0] for r in rows}
    seen: set[str] = set()
    repeated: set[str] = set()
    for sid in stage_ids:
        (repeated if sid in seen else seen).add(sid)
    duplicates = sorted(repeated)
    unknown = sorted(set(stage_ids) - known)
    missing = [r[0] for r in rows if r[1] and r[0] not in seen]
    if duplicates or unknown or missing:
        raise Invalid(
            "give every active stage exactly once, by id",
            details={"duplicates": duplicates, "unknown": unknown[:50], "missing": missing},
        )
    final = [*stage_ids, *(r[0] for r in rows if r[0] not in seen)]
    before = [r[0] for r in rows]
    if final != before:
        # One statement: the deferred unique constraint lets stages swap places.
        conn.execute(
            'UPDATE "JourneyStage" s SET "order" = v.n'
            " FROM unnest(%s::text[]) WITH ORDINALITY AS v(id, n)"
            ' WHERE s.id = v.id AND s."order" <> v.n',
            [final],
        )
        audit.record(
            conn,
            actor,
            "journey_stage.reorder",
            resource=STAGE_RESOURCE,
            before=before,
            after=final,
        )
    return _stages(conn, include_inactive=True)


def _stage_id(conn: psycopg.Connection[Any], ref: str) -> str:
    """The id of the stage ref names; an unknown ref stays as it is (reported as unknown)."""
    try:
        return str(resolve_stage(conn, ref)["id"])
    except NotFound:
        return ref


# -- progress ---------------------------------------------------------------------------


def journey(conn: psycopg.Connection[Any], ref: str) -> dict[str, Any]:
    """A user's journey: every active stage in order with the user's state of it."""
    user = resolve_user(conn, ref)
    user_id = user["id"]
    with conn.cursor(row_factory=dict_row) as cur:
        stages = cur.execute(
            'SELECT s.id AS "stageId", s.name, s.description, s."order", s."xpReward",'
            ' COALESCE(j.status, \'NOT_STARTED\') AS status, j."startedAt", j."completedAt",'
            ' (j."xpAwardedAt" IS NOT NULL) AS "xpAwarded"'
            ' FROM "JourneyStage" s LEFT JOIN "UserJourneyState" j'
            ' ON j."stageId" = s.id AND j."userId" = %s'
            ' WHERE s.active ORDER BY s."order"',
            [user_id],
        ).fetchall()
    done = sum(1 for s in stages if s["status"] == "COMPLETED")
    return {
        "user": {k: user[k] for k in ("id", "email", "username", "name", "xp", "level")},
        "stages": stages,
        "completed": done,
        "total": len(stages),
    }


def _state(conn: psycopg.Connection[Any], user_id: str, stage_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f'SELECT {_STATE_COLUMNS} FROM "UserJourneyState"'
            ' WHERE "userId" = %s AND "stageId" = %s FOR UPDATE',
            [user_id, stage_id],
        ).fetchone()


def _previous_done(conn: psycopg.Connection[Any], user_id: str, stage: Mapping[str, Any]) -> bool:
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
    stage: Mapping[str, Any],
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
) -> dict[str, Any]:
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
        after = row
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
) -> dict[str, Any]:
    """Mark a stage IN_PROGRESS for a user (from NOT_STARTED or SKIPPED)."""
    return _transition(conn, actor, user_ref, stage_ref, START)


def complete(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, stage_ref: str
) -> dict[str, Any]:
    """Complete a stage (see the module docstring for when); its XP is awarded once ever."""
    return _transition(conn, actor, user_ref, stage_ref, COMPLETE)


def skip(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, stage_ref: str
) -> dict[str, Any]:
    """Skip a stage that is not completed; it then counts as done for the next one."""
    return _transition(conn, actor, user_ref, stage_ref, SKIP)


def progress(
    conn: psycopg.Connection[Any], actor: Actor, user_ref: str, stage_ref: str, action: str
) -> dict[str, Any]:
    """start, complete or skip by name (the API's and CLI's single entry point)."""
    if action not in ACTIONS:
        raise Invalid(f"unknown journey action {action!r}; one of {', '.join(ACTIONS)}")
    return _transition(conn, actor, user_ref, stage_ref, action)
