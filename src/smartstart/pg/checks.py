"""What a health check is (a unit returning its numbers) and the helpers checks share."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

Scalar = str | int | float | bool | None
Detail = Mapping[str, Scalar]
Worse = Literal["higher", "lower"]


@dataclass(frozen=True)
class Measurement:
    """What one check measured: the number it is judged by, and the rows behind it."""

    metric: float | None
    unit: str
    details: tuple[Detail, ...] = ()
    # Set when the check cannot measure here (an extension missing, a privilege lacking):
    # what is needed, said instead of failing.
    unavailable: str | None = None
    # The fix for the worst row, when the check can name one (SQL or a command).
    fix: str | None = None
    # Measured, but only what this role may see: what it needs to see everything.
    limited: str | None = None


@dataclass(frozen=True)
class Check:
    """A check as data: its name, what it measures, and how its metric is read."""

    name: str
    title: str
    run: Callable[[psycopg.Connection[Any]], Measurement]
    worse: Worse = "higher"
    # Default thresholds (None: never graded on that level); a judgement may override them.
    warn: float | None = None
    crit: float | None = None
    # A metric below the floor is CRIT whatever the direction (e.g. no SUPER_ADMIN at all).
    floor: float | None = None
    advice: str = ""
    tags: tuple[str, ...] = field(default=())


def rows(conn: psycopg.Connection[Any], query: str, params: Sequence[Any] = ()) -> list[Detail]:
    """The rows of a query as plain mappings of scalars."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [{k: _scalar(v) for k, v in r.items()} for r in cur.fetchall()]


def _scalar(value: object) -> Scalar:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def ident(*parts: Scalar) -> str:
    """A (qualified) SQL identifier for a recommendation, quoted as PostgreSQL does."""
    return ".".join('"' + str(p).replace('"', '""') + '"' for p in parts)


def num(value: Scalar) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def server_version(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.server_version)


def led_by(
    found: Sequence[Detail], key: str, unit: str, fix: Callable[[Detail], str]
) -> Measurement:
    """Judged by the first row (the query orders the worst first); zero when there is none."""
    if not found:
        return Measurement(0.0, unit, ())
    return Measurement(num(found[0][key]), unit, tuple(found), fix=fix(found[0]))


def counted(found: Sequence[Detail], unit: str, fix: Callable[[Detail], str]) -> Measurement:
    """Judged by how many rows were found; the fix is the first one's."""
    return Measurement(float(len(found)), unit, tuple(found), fix=fix(found[0]) if found else None)


def sees_all_sessions(conn: psycopg.Connection[Any]) -> bool:
    """Whether this role sees other roles' sessions and queries (pg_read_all_stats)."""
    (r,) = rows(
        conn,
        "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS yes "
        "FROM pg_roles WHERE rolname = current_user",
    )
    return bool(r["yes"])


def own_sessions_only(conn: psycopg.Connection[Any]) -> str | None:
    """None when this role sees every session; else what it needs to (said, not failed)."""
    if sees_all_sessions(conn):
        return None
    return (
        f"sees only the sessions and query texts of role {conn.info.user!r}: other roles' need "
        f"pg_read_all_stats (as a superuser: GRANT pg_monitor TO {ident(conn.info.user)};)"
    )
