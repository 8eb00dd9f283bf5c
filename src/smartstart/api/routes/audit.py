"""GET /api/audit: the audit log, filtered and paginated."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from smartstart.api.deps import ConnDep, SettingsDep, require
from smartstart.api.paging import Cursor, Limit
from smartstart.domain import audit
from smartstart.domain.paging import DEFAULT_LIMIT

router = APIRouter(prefix="/api/audit", tags=["audit"])


class AuditEntry(BaseModel):
    id: int
    actor: str | None
    actorEmail: str | None = Field(description="The acting user's email (None: not a user)")
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
    operation_id="audit_list",
    summary="List audit entries, newest first",
    response_model=AuditPage,
    dependencies=[require("audit:read")],
)
def list_audit(
    conn: ConnDep,
    settings: SettingsDep,
    actor: str | None = None,
    action: Annotated[
        str | None, Query(description="Exact action, or a prefix ending in *")
    ] = None,
    resource: str | None = None,
    resource_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> AuditPage:
    filters = audit.AuditFilter(actor, action, resource, resource_id, since, until)
    page = audit.list_entries(conn, filters, settings=settings, limit=limit, cursor=cursor)
    return AuditPage(
        items=[AuditEntry(**r) for r in page.items],
        next_cursor=page.next_cursor,
    )
