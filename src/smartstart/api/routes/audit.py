"""GET /api/audit: the audit log, filtered and paginated."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from smartstart.api.deps import ConnDep, require
from smartstart.domain import audit

router = APIRouter(prefix="/api/audit", tags=["audit"])


class AuditEntry(BaseModel):
    id: int
    actor: str | None
    action: str
    resource: str | None
    resourceId: str | None
    details: dict[str, Any]
    ip: str | None
    createdAt: datetime


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None  # pass as `cursor` for the next (older) page


@router.get(
    "",
    summary="List audit entries, newest first",
    response_model=AuditPage,
    dependencies=[require("audit:read")],
)
def list_audit(
    conn: ConnDep,
    actor: str | None = None,
    action: Annotated[
        str | None, Query(description="Exact action, or a prefix ending in *")
    ] = None,
    resource: str | None = None,
    resource_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}$")] = None,
) -> AuditPage:
    filters = audit.AuditFilter(actor, action, resource, resource_id, since, until)
    rows = audit.list_entries(
        conn, filters, limit=limit + 1, before_id=int(cursor) if cursor else None
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(
        items=[AuditEntry(**r) for r in rows],
        next_cursor=str(rows[-1]["id"]) if more and rows else None,
    )
