"""The audit log: who did what, to which resource, before/after, from where, when."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, cast

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from smartstart.config import Settings
from smartstart.domain import paging
from smartstart.domain.actor import Actor as Actor  # re-exported for callers
from smartstart.netaddr import ip_or_none

# Never written to the audit log, at any depth.
SECRET_KEYS = frozenset(
    {"password", "newPassword", "currentPassword", "token", "tokenHash", "secret", "csrf"}
)


# Bounds: every row has a bounded size whatever a client sends (a 4 MB User-Agent, a
# deeply nested body). Strings are cut with a marker saying how much was dropped;
# containers keep their first MAX_ITEMS entries and stop at MAX_DEPTH.
MAX_USER_AGENT = 512  # characters, as in "Session"."userAgent"
MAX_COLUMN = 512  # characters of actor, action, resource, resourceId and ip
MAX_VALUE = 4096  # characters of any one string in details
MAX_ITEMS = 100  # entries of any one object or array in details
MAX_DEPTH = 6  # nesting of details
MAX_DETAILS = 32768  # characters of every string in one row's details, together
MAX_NODES = 2000  # values in one row's details
_BIG_INT = 2**63


def clip(text: str, limit: int) -> str:
    """text cut to at most limit characters (a marker says how many were dropped), with
    what PostgreSQL would refuse (NUL, lone surrogates) replaced."""
    if len(text) > limit:
        keep = max(0, limit - len(f"…[{len(text)} more characters]"))
        text = text[:keep] + f"…[{len(text) - keep} more characters]"
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode(errors="replace").decode()
    return text


class _Bounder:
    """Redacts secrets and bounds one row's details (a budget shared by its values)."""

    def __init__(self) -> None:
        self.chars = MAX_DETAILS
        self.nodes = MAX_NODES

    def text(self, value: str, limit: int = MAX_VALUE) -> str:
        out = clip(value, max(32, min(limit, self.chars)))
        self.chars = max(0, self.chars - len(out))
        return out

    def value(self, value: Any, depth: int = 0) -> Any:
        self.nodes -= 1
        if self.nodes < 0:
            return "…[omitted]"
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            # past int8, as text; str() of a huge int is slow (and refused past 4300 digits)
            if -_BIG_INT < value < _BIG_INT:
                return value
            return (
                str(value) if value.bit_length() < 256 else f"…[{value.bit_length()}-bit integer]"
            )
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)  # jsonb has no NaN
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, Mapping):
            if depth >= MAX_DEPTH:
                return f"…[object of {len(value)} entries nested too deep]"
            out: dict[str, Any] = {}
            for i, (k, v) in enumerate(value.items()):
                if i == MAX_ITEMS:
                    out["…"] = f"[{len(value) - MAX_ITEMS} more entries]"
                    break
                key = self.text(str(k), 128)
                out[key] = "***" if k in SECRET_KEYS else self.value(v, depth + 1)
            return out
        if isinstance(value, list | tuple | set | frozenset):
            if depth >= MAX_DEPTH:
                return f"…[array of {len(value)} entries nested too deep]"
            items = [self.value(v, depth + 1) for v in itertools.islice(value, MAX_ITEMS)]
            if len(value) > MAX_ITEMS:
                items.append(f"…[{len(value) - MAX_ITEMS} more entries]")
            return items
        return self.text(str(value))


def redact(value: Any) -> Any:
    """A copy of value with secret fields masked, and every string and container bounded."""
    return _Bounder().value(value)


def _column(value: str | None) -> str | None:
    return None if value is None else clip(value, MAX_COLUMN)


INSERT_SQL = (
    'INSERT INTO audit_log (actor, action, resource, "resourceId", details, ip)'
    " VALUES (%s, %s, %s, %s, %s, %s)"
)


def _insert(
    actor: Actor,
    action: str,
    resource: str | None,
    resource_id: str | None,
    before: Any,
    after: Any,
    details: dict[str, Any],
) -> tuple[str, list[Any]]:
    """The INSERT of one audit row: query and parameters."""
    body: dict[str, Any] = {}
    if actor.user_agent and "userAgent" not in details:
        # first: the budget of a huge row runs out on what comes last
        body["userAgent"] = clip(actor.user_agent, MAX_USER_AGENT)
    body.update(details)
    if before is not None:
        body["before"] = before
    if after is not None:
        body["after"] = after
    return INSERT_SQL, [
        _column(actor.label),
        _column(action),
        _column(resource),
        _column(resource_id),
        Jsonb(redact(body)),
        ip_or_none(actor.ip),
    ]


def record(
    conn: psycopg.Connection[Any],
    actor: Actor,
    action: str,
    *,
    resource: str | None = None,
    resource_id: str | None = None,
    before: Any = None,
    after: Any = None,
    **details: Any,
) -> None:
    """Append one audit row (in the caller's transaction, so it commits with the change)."""
    conn.execute(*_insert(actor, action, resource, resource_id, before, after, details))


async def arecord(
    conn: psycopg.AsyncConnection[Any],
    actor: Actor,
    action: str,
    *,
    resource: str | None = None,
    resource_id: str | None = None,
    before: Any = None,
    after: Any = None,
    **details: Any,
) -> None:
    """`record` on an async connection."""
    await conn.execute(*_insert(actor, action, resource, resource_id, before, after, details))


class AuditEntry(TypedDict):
    """One audit row as listed, with the acting user's email (None when the actor is not
    a user, or no longer exists)."""

    id: int
    actor: str | None
    actorEmail: str | None
    action: str
    resource: str | None
    resourceId: str | None
    details: dict[str, object]  # JSON, bounded and redacted when written
    ip: str | None
    createdAt: datetime


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    resource: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_entries(
    conn: psycopg.Connection[Any],
    filters: AuditFilter,
    *,
    settings: Settings,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> paging.Page[AuditEntry]:
    """A page of entries, newest first."""
    limit = paging.check_limit(limit)
    keyset = paging.Keyset(
        "audit",
        ("int",),
        {
            "actor": filters.actor,
            "action": filters.action,
            "resource": filters.resource,
            "resource_id": filters.resource_id,
            "since": filters.since.isoformat() if filters.since else None,
            "until": filters.until.isoformat() if filters.until else None,
        },
    )
    after = keyset.after(settings, cursor)
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("a.actor", filters.actor),
        ("a.resource", filters.resource),
        ('a."resourceId"', filters.resource_id),
    ):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if filters.action is not None:
        # "users.*" matches every users action
        if filters.action.endswith("*"):
            clauses.append("a.action LIKE %s")
            params.append(filters.action[:-1].replace("%", r"\%").replace("_", r"\_") + "%")
        else:
            clauses.append("a.action = %s")
            params.append(filters.action)
    if filters.since is not None:
        clauses.append('a."createdAt" >= %s')
        params.append(filters.since)
    if filters.until is not None:
        clauses.append('a."createdAt" < %s')
        params.append(filters.until)
    if after is not None:
        clauses.append("a.id < %s")
        params.extend(after)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    with conn.cursor(row_factory=dict_row) as cur:
        # Joined on the primary key: never adds or drops an entry, one lookup per row shown.
        # The LIMIT is written in the statement: as a parameter, a generic plan assumes a
        # tenth of the log is wanted and sorts it instead of walking the id index (65-190
        # ms against 1-5 ms at 5,000,000 entries). Never prepared either: each page is
        # planned for its filters' values.
        query = sql.SQL(
            'SELECT a.id, a.actor, u.email AS "actorEmail", a.action, a.resource,'
            ' a."resourceId", a.details, a.ip, a."createdAt"'
            ' FROM audit_log a LEFT JOIN "User" u ON u.id = a.actor'
            f" {where} ORDER BY a.id DESC LIMIT {{}}"
        ).format(sql.Literal(limit + 1))
        cur.execute(query, params, prepare=False)
        rows = cast(list[AuditEntry], cur.fetchall())
    return keyset.page(settings, rows, limit, lambda r: (r["id"],))
