"""The one place a permission decision is made, and how a denial is recorded.

Two rules, whatever the face (API or CLI):
- the permission itself: the actor must hold it;
- "outranked": nobody changes a user who holds permissions they lack (otherwise an
  ADMIN could, say, reset a SUPER_ADMIN's password and sign in with permissions they
  were never given), and nobody hands out (grants, assigns) what they do not hold.

The CLI operator holds every permission and outranks everyone. A denial raises
`Denied` and is recorded as an `authz.denied` audit row on a connection of its own
(autocommit), so the rollback of the refused request does not erase it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import psycopg

from smartstart.domain import audit
from smartstart.domain.actor import Actor
from smartstart.domain.errors import Forbidden
from smartstart.domain.permissions import effective_permissions

DENIED_ACTION = "authz.denied"
log = logging.getLogger(__name__)


class Denied(Forbidden):
    """The one error of a refused permission decision (403 `forbidden`)."""

    def __init__(self, message: str, *, permission: str | None, reason: str, **details: Any):
        super().__init__(message, details={"permission": permission, "reason": reason, **details})
        self.permission = permission
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    """The user an operation changes (`id`) and the permissions they hold."""

    id: str
    permissions: frozenset[str]


def target(conn: psycopg.Connection[Any], user_id: str) -> Target:
    """The target user's effective permissions (one indexed query)."""
    return Target(user_id, frozenset(effective_permissions(conn, user_id)))


def require_permission(
    held: frozenset[str], permission: str | None, *, operator: bool = False
) -> Denied | None:
    """The permission rule alone: None when `held` (or the operator) has it, else the denial.

    Cheap enough for every request: a route's own permission is checked with this
    before any `Actor` is built (the hot paths).
    """
    if permission is None or operator or permission in held:
        return None
    return Denied(
        f"you need the {permission!r} permission", permission=permission, reason="missing"
    )


def decide(
    actor: Actor,
    permission: str | None,
    target: Target | None = None,
    *,
    grants: Collection[str] = (),
    not_on_self: str | None = None,
) -> Denied | None:
    """The decision, without I/O: None when allowed, else the denial to raise."""
    denied = require_permission(actor.permissions, permission, operator=actor.is_operator)
    if denied is not None:
        return denied
    if target is not None:
        if not_on_self is not None and target.id == actor.user_id:
            return Denied(
                not_on_self,
                permission=permission,
                reason="self",
                user=target.id,
            )
        missing = actor.lacks(target.permissions)
        if missing:
            return Denied(
                "you cannot change a user who holds permissions you do not hold yourself",
                permission=permission,
                reason="outranked",
                user=target.id,
                missing=missing,
            )
    missing = actor.lacks(set(grants))
    if missing:
        return Denied(
            "you cannot grant permissions you do not hold yourself",
            permission=permission,
            reason="grant_beyond_own",
            missing=missing,
        )
    return None


def denial_record(denied: Denied, **where: Any) -> dict[str, Any]:
    """The keyword arguments of `audit.record` for a denial (`where`: method, path...)."""
    details = {k: v for k, v in denied.details.items() if k != "permission"}
    return {
        "resource": "permission",
        "resource_id": denied.permission,
        **details,
        **where,
    }


def record_denial(conn: psycopg.Connection[Any], actor: Actor, denied: Denied) -> None:
    """Record the denial on a new autocommit connection to conn's database."""
    info = conn.info
    # conn's transaction is about to roll back: the row must not be part of it.
    try:
        with psycopg.connect(
            info.dsn, password=info.password, autocommit=True, connect_timeout=5
        ) as apart:
            audit.record(apart, actor, DENIED_ACTION, **denial_record(denied))
    except psycopg.Error as e:
        # The refusal stands either way: a 403 must not become a 503.
        log.warning("could not record a denial (%s): %s", denied.reason, type(e).__name__)


def authorize(
    conn: psycopg.Connection[Any],
    actor: Actor,
    permission: str | None,
    target_user: str | Target | None = None,
    *,
    grants: Collection[str] = (),
    not_on_self: str | None = None,
) -> None:
    """Allow the operation or raise `Denied` (recorded apart from conn's transaction).

    `target_user` (an id, or a `Target` already read) is the user the operation
    changes; `grants` the permissions it hands out; `not_on_self`, when given, refuses
    the operation on the actor's own account with that message.
    """
    if actor.is_operator:
        return
    subject = target(conn, target_user) if isinstance(target_user, str) else target_user
    denied = decide(actor, permission, subject, grants=grants, not_on_self=not_on_self)
    if denied is not None:
        record_denial(conn, actor, denied)
        raise denied


def permits(actor: Actor, permission: str) -> bool:
    """Whether the actor holds the permission (for what a response shows, not a write)."""
    return decide(actor, permission) is None
