"""The Database page: health checks, table sizes, index usage, slow queries and their
history, and live queries with cancel/terminate.

Everything is read through the functions `smartstart db stats|queries` and
`/api/admin/db/*` use (`pg.stats`, `domain.statshistory`, `pg.activity`); cancel and
terminate go through `domain.dbops` (db:admin, audited), after a confirmation page.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.responses import Response

from smartstart.domain import dbops, statshistory
from smartstart.domain.errors import Invalid
from smartstart.pg import activity, stats
from smartstart.web.core import View, page
from smartstart.web.dbpages import latest_health

ROWS = 20  # per section
# The history's choices: compare with the snapshot this long ago.
HISTORY = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
SIGNALS: dict[str, tuple[str, str]] = {  # kind -> (question's verb, button)
    "cancel": ("Cancel the running query of", "Cancel the query"),
    "terminate": ("Terminate (disconnect) the session", "Terminate the session"),
}


@page("db:read")
def database_page(view: View) -> Response:
    """GET /admin/database: health, sizes, index usage, slow queries, history, live queries."""
    span = view.query("history", "24h") or "24h"
    if span not in HISTORY:
        raise Invalid(f"history must be one of {', '.join(HISTORY)}", details={"field": "history"})
    active_only = view.query("idle") != "yes"
    return view.render(
        "database.html",
        title="Database",
        run=latest_health(view),
        sizes=stats.table_sizes(view.conn)[:ROWS],
        indexes=stats.index_usage(view.conn)[:ROWS],
        slow=stats.statement_counters(view.conn, limit=ROWS),
        history=statshistory.since(view.conn, datetime.now(UTC) - HISTORY[span], ROWS),
        spans=list(HISTORY),
        span=span,
        sessions=activity.sessions(view.conn, active_only=active_only, query_chars=300, limit=50),
        idle=not active_only,
    )


def _pid(text: str) -> int:
    try:
        pid = int(text)
    except ValueError:
        pid = 0
    if not 0 < pid <= activity.MAX_PID:
        raise Invalid(f"{text[:20]!r} is not a server process id", details={"field": "pid"})
    return pid


@page("db:admin")
def query_signal(view: View) -> Response:
    """POST /admin/database/queries/{pid}/{cancel|terminate}: after a confirmation page."""
    pid, kind = _pid(view.request.path_params["pid"]), view.request.path_params["kind"]
    if kind not in SIGNALS:
        raise Invalid("the action must be cancel or terminate", details={"field": "kind"})
    verb, label = SIGNALS[kind]
    if view.field("confirmed") != "yes":
        session = dbops.plan_signal(view.conn, view.actor, pid)
        query = (session.query or "")[:200]
        return view.render(
            "confirm.html",
            title="Please confirm",
            question=f"{verb} pid {pid} ({session.user or '?'}, {session.state or '?'}): {query}",
            action=f"/admin/database/queries/{pid}/{kind}",
            fields={},
            ask_password=False,
            danger=True,
            label=label,
            back="/admin/database#live",
        )
    dbops.signal(view.conn, view.actor, pid, kind)
    done = "query cancelled" if kind == "cancel" else "session terminated"
    return view.done("/admin/database#live", f"pid {pid}: {done}.")
