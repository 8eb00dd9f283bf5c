"""The audit log: who did what, to which resource, before/after, from where, when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from smartstart.domain.actor import Actor as Actor  # re-exported for callers

# Never written to the audit log, at any depth.
SECRET_KEYS = frozenset(
    {"password", "newPassword", "currentPassword", "token", "tokenHash", "secret", "csrf"}
)


def redact(value: Any) -> Any:
    """A copy of value with secret fields masked."""
    if isinstance(value, dict):
        return {k: ("***" if k in SECRET_KEYS else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


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
    body: dict[str, Any] = dict(details)
    if before is not None:
        body["before"] = before
    if after is not None:
        body["after"] = after
    if actor.user_agent:
        body.setdefault("userAgent", actor.user_agent)
    return INSERT_SQL, [actor.label, action, resource, resource_id, Jsonb(redact(body)), actor.ip]


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
    limit: int = 50,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first; page with before_id (the last id of the previous page)."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("actor", filters.actor),
        ("resource", filters.resource),
        ('"resourceId"', filters.resource_id),
    ):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if filters.action is not None:
        # "users.*" matches every users action
        if filters.action.endswith("*"):
            clauses.append("action LIKE %s")
            params.append(filters.action[:-1].replace("%", r"\%").replace("_", r"\_") + "%")
        else:
            clauses.append("action = %s")
            params.append(filters.action)
    if filters.since is not None:
        clauses.append('"createdAt" >= %s')
        params.append(filters.since)
    if filters.until is not None:
        clauses.append('"createdAt" < %s')
        params.append(filters.until)
    if before_id is not None:
        clauses.append("id < %s")
        params.append(before_id)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            'SELECT id, actor, action, resource, "resourceId", details, ip, "createdAt"'
            f" FROM audit_log {where} ORDER BY id DESC LIMIT %s",
            [*params, limit],
        )
        return cur.fetchall()
