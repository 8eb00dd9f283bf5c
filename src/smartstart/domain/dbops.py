"""Stopping a server session (`db cancel` / `db terminate`): authorized and audited.

The face confirms with the plan (`plan_signal`), then calls `signal` in its transaction,
which records the audit row; the signal itself cannot be rolled back.
"""

from __future__ import annotations

from typing import Any

import psycopg

from smartstart.domain import audit
from smartstart.domain.actor import Actor
from smartstart.domain.authorize import authorize
from smartstart.domain.errors import Conflict, NotFound
from smartstart.pg import activity
from smartstart.pg.activity import Session, Signal

PERMISSION = "db:admin"


def _domain_error(refused: activity.Refused) -> Exception:
    if refused.reason == "not_found":
        return NotFound(str(refused), details={"reason": refused.reason})
    return Conflict(str(refused), details={"reason": refused.reason})


def plan_signal(conn: psycopg.Connection[Any], actor: Actor, pid: int) -> Session:
    """The session that `signal` would stop, refused as `signal` would refuse it."""
    authorize(conn, actor, PERMISSION)
    try:
        return activity.target(conn, pid)
    except activity.Refused as e:
        raise _domain_error(e) from None


def signal(conn: psycopg.Connection[Any], actor: Actor, pid: int, kind: Signal) -> Session:
    """Cancel the session's query or terminate it, and record who did it to what."""
    authorize(conn, actor, PERMISSION)
    try:
        session = activity.signal(conn, pid, kind)
    except activity.Refused as e:
        raise _domain_error(e) from None
    audit.record(
        conn,
        actor,
        f"db.{kind}",
        resource="backend",
        resource_id=str(pid),
        before={
            "database": session.database,
            "user": session.user,
            "application": session.application,
            "state": session.state,
            "query": audit.clip(session.query or "", 500),
        },
    )
    return session
