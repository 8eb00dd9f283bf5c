"""XP and reputation: add (atomic, within range) or set, each change audited with a reason.

XP is at least 0 and its level follows by trigger; reputation may be negative.
Both are int4 columns: a change that would leave the range is refused, and
changes nothing. Every function takes the caller's connection and never commits.
"""

from __future__ import annotations

from typing import Any, Literal

import psycopg
from psycopg import sql

from smartstart.db.vocabulary import level_for
from smartstart.domain import userfields as fields
from smartstart.domain.actor import Actor
from smartstart.domain.authorize import authorize
from smartstart.domain.errors import Invalid
from smartstart.domain.resolve import UserRow, resolve_user

Conn = psycopg.Connection[Any]
Counter = Literal["xp", "reputation"]
INT4_MAX = fields.INT4_MAX
# The range each counter keeps (the columns are int4; XP is never negative).
RANGES: dict[Counter, tuple[int, int]] = {"xp": (0, INT4_MAX), "reputation": (-INT4_MAX, INT4_MAX)}


def _audited(counter: Counter, row: UserRow | dict[str, int]) -> dict[str, object]:
    """What the audit row keeps of a counter's change: the value, and for XP its level."""
    if counter == "xp":
        xp = int(row["xp"])
        return {"xp": xp, "level": row.get("level", level_for(xp))}
    return {"reputation": row["reputation"]}


def add(conn: Conn, actor: Actor, ref: str, counter: Counter, amount: int, reason: str) -> UserRow:
    """counter += amount in one statement (concurrent additions are never lost)."""
    low, high = RANGES[counter]
    amount = fields.integer(amount, "amount", -INT4_MAX, INT4_MAX)
    if amount == 0:
        raise Invalid("amount must not be 0", details={"field": "amount"})
    why = fields.reason(reason, required=True)
    user_id = resolve_user(conn, ref)["id"]
    authorize(conn, actor, "users:write", user_id)
    col = sql.Identifier(counter)
    # The bound check in WHERE keeps the row (and the int4 column) in range without an
    # error: a refused addition changes nothing and is told apart from a missing user.
    query = sql.SQL(
        'UPDATE "User" SET {col} = {col} + %(a)s WHERE id = %(id)s'
        " AND {col}::bigint + %(a)s BETWEEN %(low)s AND %(high)s RETURNING {ret}"
    ).format(col=col, ret=fields.RETURNING)
    after = fields.fetch_user(conn, query, {"a": amount, "id": user_id, "low": low, "high": high})
    if after is None:
        current = resolve_user(conn, user_id)[counter]
        raise Invalid(
            f"{counter} would leave its range ({low} to {high}): it is {current}",
            details={"field": "amount", counter: current},
        )
    before = _audited(counter, {counter: after[counter] - amount})
    after_image = _audited(counter, after)
    action = f"users.add_{counter}"
    fields.record(conn, actor, action, user_id, before, after_image, amount=amount, reason=why)
    return after


def set_(
    conn: Conn, actor: Actor, ref: str, counter: Counter, value: int, reason: str | None = None
) -> UserRow:
    """counter = value, the old value read from the same locked row."""
    low, high = RANGES[counter]
    value = fields.integer(value, counter, low, high)
    why = fields.reason(reason, required=False)
    before = resolve_user(conn, ref, lock=True)
    user_id = before["id"]
    authorize(conn, actor, "users:write", user_id)
    after = fields.update_row(conn, user_id, {counter: value})
    images = _audited(counter, before), _audited(counter, after)
    fields.record(conn, actor, f"users.set_{counter}", user_id, *images, reason=why)
    return after


def add_xp(conn: Conn, actor: Actor, ref: str, amount: int, reason: str) -> UserRow:
    """Add (or with a negative amount, take) XP atomically; Invalid if xp would go below 0."""
    return add(conn, actor, ref, "xp", amount, reason)


def set_xp(conn: Conn, actor: Actor, ref: str, xp: int, reason: str | None = None) -> UserRow:
    """Set XP (≥ 0); the level follows by trigger."""
    return set_(conn, actor, ref, "xp", xp, reason)


def add_reputation(conn: Conn, actor: Actor, ref: str, amount: int, reason: str) -> UserRow:
    """Add (or take) reputation atomically; reputation may be negative."""
    return add(conn, actor, ref, "reputation", amount, reason)


def set_reputation(
    conn: Conn,
    actor: Actor,
    ref: str,
    reputation: int,
    reason: str | None = None,
) -> UserRow:
    """Set reputation."""
    return set_(conn, actor, ref, "reputation", reputation, reason)
