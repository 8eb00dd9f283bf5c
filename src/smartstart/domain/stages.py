"""Journey stages: the ordered steps of onboarding, and their XP rewards.

Stages resolve by id or name; orders are unique (a deferred constraint, so a reorder can
swap them) and every change is audited (`journey_stage.*`). Deleting a stage any journey
state references is refused (deactivate it instead): `plan_stage_delete` says which
beforehand, for a face's --dry-run and confirmation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypedDict, cast

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.rows import dict_row

from smartstart.config import Settings
from smartstart.domain import audit, paging
from smartstart.domain.audit import Actor
from smartstart.domain.authorize import authorize
from smartstart.domain.errors import Conflict, Invalid, NotFound

NAME_MAX = 100
DESCRIPTION_MAX = 2000
XP_REWARD_MAX = 1_000_000
ORDER_MAX = 1_000_000
ID_MAX = 128

STAGE_RESOURCE = "journey_stage"


class StageRow(TypedDict):
    """A journey stage."""

    id: str
    name: str
    description: str | None
    order: int
    xpReward: int
    active: bool
    createdAt: datetime
    updatedAt: datetime


class StageChanges(TypedDict, total=False):
    """The fields of a stage one may change (any subset)."""

    name: str
    description: str | None
    order: int
    xpReward: int
    active: bool


@dataclass(frozen=True)
class StageDeletePlan:
    """What deleting a stage would do: nothing when journey states reference it."""

    stage: StageRow
    states: int  # journey states referencing it

    @property
    def deletable(self) -> bool:
        return self.states == 0


_STAGE_COLUMNS = sql.SQL(
    'id, name, description, "order", "xpReward", active, "createdAt", "updatedAt"'
)
_UPDATABLE: Final = ("name", "description", "order", "xpReward", "active")
# Serialises everything that assigns stage orders (create, order changes, reorder).
_ORDER_LOCK = "SELECT pg_advisory_xact_lock(hashtext('smartstart.journey_stage_order'))"

# -- lookups ----------------------------------------------------------------------------


def _usable_id(value: str) -> bool:
    # Ids are text; one that cannot exist (too long, NUL) is simply not found, never a 500.
    return 0 < len(value) <= ID_MAX and "\x00" not in value


def resolve_stage(conn: psycopg.Connection[Any], ref: str, lock: str = "") -> StageRow:
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
    return cast(StageRow, rows[0])


def _stages(conn: psycopg.Connection[Any], include_inactive: bool) -> list[StageRow]:
    """Every stage by order (the whole, short list: for the faces after a reorder)."""
    query = sql.SQL('SELECT {} FROM "JourneyStage"').format(_STAGE_COLUMNS)
    if not include_inactive:
        query += sql.SQL(" WHERE active")
    with conn.cursor(row_factory=dict_row) as cur:
        return cast(list[StageRow], cur.execute(query + sql.SQL(' ORDER BY "order"')).fetchall())


def list_stages(
    conn: psycopg.Connection[Any],
    *,
    settings: Settings,
    include_inactive: bool = False,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> paging.Page[StageRow]:
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
        rows = cast(list[StageRow], cur.execute(query, params).fetchall())
    return keyset.page(settings, rows, limit, lambda r: (r["order"],))


# -- stages -----------------------------------------------------------------------------


def _clean(changes: Mapping[str, object]) -> dict[str, Any]:
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
) -> StageRow:
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
    return cast(StageRow, row)


def create_stage(
    conn: psycopg.Connection[Any],
    actor: Actor,
    *,
    name: str,
    order: int | None = None,
    xp_reward: int = 0,
    description: str | None = None,
    active: bool = True,
) -> StageRow:
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


def _public_stage(row: StageRow) -> dict[str, Any]:
    return {
        "name": row["name"],
        "description": row["description"],
        "order": row["order"],
        "xpReward": row["xpReward"],
        "active": row["active"],
    }


def update_stage(
    conn: psycopg.Connection[Any], actor: Actor, ref: str, changes: Mapping[str, object]
) -> StageRow:
    """Change name/description/order/xpReward/active (no-op when nothing differs)."""
    # A new xpReward applies to completions from now on; XP already awarded stays.
    values = _clean(changes)
    authorize(conn, actor, "journey:manage")
    if "order" in values:
        conn.execute(_ORDER_LOCK)
    before = resolve_stage(conn, ref, "FOR UPDATE")
    stage_id = before["id"]
    old: Mapping[str, Any] = before
    values = {k: v for k, v in values.items() if old[k] != v}
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
    new: Mapping[str, Any] = after
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
        before={k: old[k] for k in values},
        after={k: new[k] for k in values},
    )
    return after


def deactivate_stage(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> StageRow:
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


def plan_stage_delete(conn: psycopg.Connection[Any], ref: str) -> StageDeletePlan:
    """What `delete_stage` would do now (it checks again when it runs)."""
    stage = resolve_stage(conn, ref)
    return StageDeletePlan(stage, stage_usage(conn, stage["id"]))


def delete_stage(conn: psycopg.Connection[Any], actor: Actor, ref: str) -> StageRow:
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
) -> list[StageRow]:
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
