"""Operators' pages: Overview, Roles & permissions, Journeys (stages) and the Audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.responses import Response

from smartstart.domain import analytics, audit, journey, overview, rbac
from smartstart.domain.authorize import decide
from smartstart.domain.errors import Invalid
from smartstart.web import analytics as web_analytics
from smartstart.web import dbpages
from smartstart.web.core import View, page

AUDIT_PAGE = 50


@page("users:read")
def overview_page(view: View) -> Response:
    """GET /admin: users, sessions, database size, health, the last backup, registrations."""
    # The user counts come from analytics' summaries (a few thousand rows whatever the
    # number of users), not from counting "User": "new" is the last 7 UTC days, today's too.
    chart, new = web_analytics.registrations_week(view)
    by_status = {s.name: s.users for s in analytics.statuses(view.conn).statuses}
    idle = timedelta(minutes=view.settings.session_idle_minutes)
    counts = {
        "total": sum(by_status.values()),
        "active": by_status.get("ACTIVE", 0),
        "new": new,
        **overview.sessions_and_size(view.conn, idle=idle),
    }
    return view.render(
        "overview.html",
        title="Overview",
        counts=counts,
        health=dbpages.latest_health(view) if view.can("db:read") else None,
        backup=dbpages.last_backup(view) if view.can("db:read") else None,
        registrations=chart,
    )


# -- roles & permissions ------------------------------------------------------------------


@page("roles:read")
def roles_page(view: View) -> Response:
    """GET /admin/roles: the role × permission matrix (editable with rbac:manage)."""
    # The roles listing (with its holder counts) gives the matrix's rows too: one pass
    # over the assignments instead of two (rbac.matrix counts them again).
    roles = rbac.list_roles(view.conn, settings=view.settings, limit=500).items
    permissions = [
        p["name"] for p in rbac.list_permissions(view.conn, settings=view.settings, limit=500).items
    ]
    editable = view.can("rbac:manage")
    # A cell the viewer may not change is shown as refused: granting what one lacks, or
    # anything of SUPER_ADMIN (it holds every permission).
    refused = {
        (role["name"], perm): role["name"] == rbac.SUPER_ADMIN
        or decide(view.actor, "rbac:manage", grants={perm}) is not None
        for role in roles
        for perm in permissions
    }
    return view.render(
        "roles.html",
        title="Roles & permissions",
        role_names=[r["name"] for r in roles],
        permissions=permissions,
        granted={(r["name"], p) for r in roles for p in r["permissions"]},
        editable=editable,
        refused=refused,
        roles=roles,
    )


@page("rbac:manage")
def roles_change(view: View) -> Response:
    """POST /admin/roles/grant: grant or revoke one permission of one role (audited)."""
    role, perm, op = view.field("role"), view.field("permission"), view.field("op")
    if op == "grant":
        _, changed = rbac.grant(view.conn, view.actor, role, perm)
        verb = "granted to"
    elif op == "revoke":
        _, changed = rbac.revoke(view.conn, view.actor, role, perm)
        verb = "revoked from"
    else:
        raise Invalid("op must be grant or revoke", details={"field": "op"})
    note = "" if changed else " (no change)"
    return view.done("/admin/roles", f"{perm} {verb} {role}{note}.")


# -- journeys -------------------------------------------------------------------------------


def _stages(view: View) -> list[journey.StageRow]:
    """Every stage, active or not, in order."""
    return journey.list_stages(
        view.conn, settings=view.settings, include_inactive=True, limit=500
    ).items


@page("journey:manage")
def journeys_page(view: View) -> Response:
    """GET /admin/journeys: every stage (active or not) in order, to edit and reorder."""
    stages = _stages(view)
    return view.render(
        "journeys.html",
        title="Journeys",
        stages=stages,
        funnel=web_analytics.funnel_chart(analytics.journey(view.conn)),
    )


def _int(text: str, field: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise Invalid(f"{field} must be a whole number", details={"field": field}) from None


@page("journey:manage")
def stage_save(view: View) -> Response:
    """POST /admin/journeys/{stage}: change a stage's name, description, XP, active."""
    changes: dict[str, object] = {
        "name": view.field("name").strip(),
        "description": view.field("description").strip() or None,
        "xpReward": _int(view.field("xpReward"), "xpReward"),
        "active": view.field("active") == "on",
    }
    row = journey.update_stage(view.conn, view.actor, view.request.path_params["stage"], changes)
    return view.done("/admin/journeys", f"Stage {row['name']} saved.")


@page("journey:manage")
def stage_create(view: View) -> Response:
    """POST /admin/journeys: a new stage at the end."""
    row = journey.create_stage(
        view.conn,
        view.actor,
        name=view.field("name").strip(),
        description=view.field("description").strip() or None,
        xp_reward=_int(view.field("xpReward") or "0", "xpReward"),
    )
    return view.done("/admin/journeys", f"Stage {row['name']} created.")


@page("journey:manage")
def stage_move(view: View) -> Response:
    """POST /admin/journeys/{stage}/move: one place up or down."""
    ids = [s["id"] for s in _stages(view)]
    stage = journey.resolve_stage(view.conn, view.request.path_params["stage"])["id"]
    i = ids.index(stage)
    j = i - 1 if view.field("direction") == "up" else i + 1
    if 0 <= j < len(ids):
        ids[i], ids[j] = ids[j], ids[i]
        journey.reorder_stages(view.conn, view.actor, ids)
    return view.done("/admin/journeys", "Order saved.")


# -- audit log --------------------------------------------------------------------------------


def _day(text: str | None, field: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        raise Invalid(f"{field} must be a date (YYYY-MM-DD)", details={"field": field}) from None


def diff(details: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The keys an entry's before/after images differ in: (key, before, after)."""
    before, after = details.get("before"), details.get("after")
    if not isinstance(before, dict) and not isinstance(after, dict):
        return []
    b = before if isinstance(before, dict) else {}
    a = after if isinstance(after, dict) else {}
    return [(k, b.get(k), a.get(k)) for k in sorted(set(b) | set(a)) if b.get(k) != a.get(k)]


@page("audit:read")
def audit_page(view: View) -> Response:
    """GET /admin/audit: filter and page through the audit log, with before/after diffs."""
    filters = audit.AuditFilter(
        actor=view.query("actor"),
        action=view.query("action"),
        resource=view.query("resource"),
        resource_id=view.query("resource_id"),
        since=_day(view.query("since"), "since"),
        until=_day(view.query("until"), "until"),
    )
    found = audit.list_entries(
        view.conn, filters, settings=view.settings, limit=AUDIT_PAGE, cursor=view.query("cursor")
    )
    kept = {
        k: v
        for k in ("actor", "action", "resource", "resource_id", "since", "until")
        if (v := view.query(k))
    }
    return view.render(
        "audit.html",
        title="Audit log",
        entries=[(e, diff(e["details"])) for e in found.items],
        q=kept,
        **view.pages("/admin/audit", kept, found.next_cursor),
    )
