"""Operators' Users pages: the searchable list and one user's detail with its actions.

Every action goes through the domain function the API calls (the same permission,
"outranked" rule and audit row); the page asks for confirmation first, and shows an
action the viewer would be refused (outranked, missing permission) as refused up front.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from smartstart.domain import audit, auth, journey, overview, rbac, users
from smartstart.domain.authorize import decide, target
from smartstart.domain.errors import Invalid
from smartstart.domain.resolve import resolve_user
from smartstart.web.core import View, page

PAGE_SIZE = 25
AUDIT_ROWS = 50
STATUSES = ("ACTIVE", "INACTIVE", "SUSPENDED", "PENDING")
XP_ACTIONS = frozenset({"users.add_xp", "users.set_xp", "journey.complete"})
# action -> (permission it needs, what the confirmation says, button label)
ACTIONS: dict[str, tuple[str, str, str]] = {
    "suspend": ("users:write", "Suspend {who}? They are signed out everywhere.", "Suspend"),
    "activate": ("users:write", "Activate {who}? They may sign in again.", "Activate"),
    "assign": ("rbac:manage", "Assign the role {role} to {who}?", "Assign role"),
    "unassign": ("rbac:manage", "Remove the role {role} from {who}?", "Remove role"),
    "add-xp": ("users:write", "Give {who} {amount} XP ({reason})?", "Add XP"),
    "password": (
        "users:write",
        "Reset the password of {who}? Every session of theirs ends.",
        "Reset password",
    ),
    "revoke-session": ("sessions:manage", "End this session of {who}?", "End session"),
}


@page("users:read")
def user_list(view: View) -> Response:
    """GET /admin/users: search, filter, sort and page through the users."""
    filters = users.UserFilter(
        q=view.query("q"),
        role=view.query("role"),
        status=view.query("status"),
        level=view.query("level"),
    )
    sort = view.query("sort", "createdAt") or "createdAt"
    order = view.query("order", "desc") or "desc"
    found = users.list_users(
        view.conn,
        filters,
        settings=view.settings,
        sort=sort,
        order=order,
        limit=PAGE_SIZE,
        cursor=view.query("cursor"),
    )
    kept = {
        k: v
        for k, v in {
            "q": filters.q,
            "role": filters.role,
            "status": filters.status,
            "level": filters.level,
            "sort": sort,
            "order": order,
        }.items()
        if v
    }
    return view.render(
        "users.html",
        title="Users",
        users=found.items,
        filters=filters,
        sort=sort,
        order=order,
        sorts=list(users.SORTS),
        roles=list(overview.role_grants(view.conn)),
        statuses=STATUSES,
        levels=users.LEVEL_NAMES,
        **view.pages("/admin/users", kept, found.next_cursor),
    )


def _detail(view: View, user_id: str) -> dict[str, Any]:
    user = resolve_user(view.conn, user_id)
    uid = user["id"]
    subject = target(view.conn, uid)
    refusals = {
        perm: (denied.message if denied else None)
        for perm in ("users:write", "rbac:manage", "sessions:manage")
        for denied in [decide(view.actor, perm, subject)]
    }
    # The user's own entries and their journey's, each through the (resource,
    # resourceId, id) index, newest first: a filter on the id alone reads the whole log.
    entries = (
        sorted(
            (
                e
                for resource in ("user", "journey")
                for e in audit.list_entries(
                    view.conn,
                    audit.AuditFilter(resource=resource, resource_id=uid),
                    settings=view.settings,
                    limit=AUDIT_ROWS,
                ).items
            ),
            key=lambda e: e["id"],
            reverse=True,
        )[:AUDIT_ROWS]
        if view.can("audit:read")
        else []
    )
    sessions = (
        auth.list_user_sessions(view.conn, uid, view.settings, limit=20).items
        if view.can("sessions:read")
        else []
    )
    roles = rbac.user_roles(view.conn, uid)["roles"]
    held = {r["name"] for r in roles}
    return {
        "user": user,
        "roles": roles,
        "assignable": [
            name
            for name, grants in overview.role_grants(view.conn).items()
            if name not in held
            and decide(view.actor, "rbac:manage", subject, grants=grants) is None
        ],
        "permissions": rbac.effective(view.conn, uid)["permissions"],
        "journey": journey.journey(view.conn, uid),
        "entries": entries,
        "xp_history": [e for e in entries if e["action"] in XP_ACTIONS],
        "sessions": sessions,
        "refusals": refusals,
        "is_self": uid == view.principal.user_id,
    }


@page("users:read")
def user_detail(view: View) -> Response:
    """GET /admin/users/{user}: roles, effective permissions, journey, XP, audit, sessions."""
    data = _detail(view, view.request.path_params["user"])
    return view.render("user.html", title=data["user"]["email"], **data)


def _confirmation(view: View, action: str, who: str) -> Response:
    perm, question, label = ACTIONS[action]
    fields = {k: v for k, v in view.form.items() if k not in ("csrf", "confirmed")}
    text = question.format(
        who=who,
        role=fields.get("role", ""),
        amount=fields.get("amount", ""),
        reason=fields.get("reason", ""),
    )
    return view.render(
        "confirm.html",
        title="Confirm",
        question=text,
        label=label,
        action=view.request.url.path,
        fields={k: v for k, v in fields.items() if k != "password"},
        ask_password=action == "password",
        back=f"/admin/users/{view.request.path_params['user']}",
        danger=action in ("suspend", "unassign", "password", "revoke-session"),
    )


def _amount(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise Invalid("the amount must be a whole number", details={"field": "amount"}) from None


@page("users:read")
def user_action(view: View) -> Response:
    """POST /admin/users/{user}/{action}: one action, after its confirmation."""
    action = view.request.path_params["action"]
    if action not in ACTIONS:
        raise Invalid(f"unknown action {action[:40]!r}")
    user = resolve_user(view.conn, view.request.path_params["user"])
    perm = ACTIONS[action][0]
    view.require(perm)
    if view.field("confirmed") != "yes":
        return _confirmation(view, action, user["email"])
    uid, actor, conn = user["id"], view.actor, view.conn
    back = f"/admin/users/{uid}"
    if action == "suspend":
        users.suspend(conn, actor, uid)
        message = f"{user['email']} is suspended."
    elif action == "activate":
        users.activate(conn, actor, uid)
        message = f"{user['email']} is active."
    elif action == "assign":
        rbac.assign(conn, actor, uid, view.field("role"))
        message = f"Role {view.field('role')} assigned."
    elif action == "unassign":
        rbac.unassign(conn, actor, uid, view.field("role"))
        message = f"Role {view.field('role')} removed."
    elif action == "add-xp":
        after = users.add_xp(conn, actor, uid, _amount(view.field("amount")), view.field("reason"))
        message = f"XP is now {after['xp']} ({after['level']})."
    elif action == "password":
        users.set_password(
            conn, actor, uid, view.field("password"), rounds=view.settings.bcrypt_rounds
        )
        message = "Password reset; their sessions have ended."
    else:
        auth.revoke_session(conn, actor, view.field("session"), user_id=uid)
        message = "Session ended."
    return view.done(back, message)
