"""Live sessions of the server: what runs now, who waits on whom, and stopping one.

Server-level only (knows nothing of the platform's users): the audit of a cancel or a
terminate is the domain's (domain/dbops.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import psycopg

from smartstart.errors import SmartStartError
from smartstart.pg.checks import Detail, num, rows

Signal = Literal["cancel", "terminate"]
MAX_PID = 2**31 - 1  # a pid is an int4 on the server


class Refused(SmartStartError):
    """A session that may not be signalled from here (its own, another database's, gone)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Session:
    """One server session as `db queries` lists it."""

    pid: int
    database: str | None
    user: str | None
    application: str
    client: str | None
    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    seconds: float | None  # of the running query, else since the state last changed
    transaction_seconds: float | None
    blocked_by: tuple[int, ...]
    query: str | None

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "blocked_by": list(self.blocked_by)}


_SESSIONS = """
SELECT pid, datname AS database, usename AS "user", application_name AS application,
       client_addr::text AS client, state, wait_event_type, wait_event,
       round(extract(epoch FROM now() - CASE WHEN state = 'active' THEN query_start
                                          ELSE state_change END)::numeric, 3)::float
           AS seconds,
       round(extract(epoch FROM now() - xact_start)::numeric, 3)::float AS transaction_seconds,
       array_to_string(pg_blocking_pids(pid), ',') AS blocked_by,
       left(query, %s) AS query
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() {where}
ORDER BY (state = 'active') DESC NULLS LAST, seconds DESC NULLS LAST, pid
LIMIT %s
"""


def _session(r: Detail) -> Session:
    blocked = str(r["blocked_by"] or "")
    return Session(
        pid=int(num(r["pid"])),
        database=_text(r["database"]),
        user=_text(r["user"]),
        application=str(r["application"] or ""),
        client=_text(r["client"]),
        state=_text(r["state"]),
        wait_event_type=_text(r["wait_event_type"]),
        wait_event=_text(r["wait_event"]),
        seconds=_float(r["seconds"]),
        transaction_seconds=_float(r["transaction_seconds"]),
        blocked_by=tuple(int(p) for p in blocked.split(",") if p),
        query=_text(r["query"]),
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def sessions(
    conn: psycopg.Connection[Any],
    *,
    active_only: bool = False,
    all_databases: bool = False,
    query_chars: int = 1000,
    limit: int = 200,
) -> list[Session]:
    """The server's client sessions but this one: running first, longest first."""
    where = ""
    if active_only:
        where += " AND state NOT IN ('idle')"
    if not all_databases:
        where += " AND datname = current_database()"
    found = rows(conn, _SESSIONS.format(where=where), [query_chars, limit])
    return [_session(r) for r in found]


def check_pid(pid: int) -> int:
    if not 0 < pid <= MAX_PID:
        raise SmartStartError(f"{pid} is not a server process id (1 to {MAX_PID})")
    return pid


def target(conn: psycopg.Connection[Any], pid: int) -> Session:
    """The session pid names, if this connection may signal it; `Refused` otherwise."""
    check_pid(pid)
    if pid == conn.info.backend_pid:
        raise Refused(f"pid {pid} is this command's own session; refusing to stop it", "own")
    found = rows(
        conn,
        _SESSIONS.format(where="AND pid = %s").replace("pid <> pg_backend_pid() AND ", ""),
        [1000, pid, 1],
    )
    if not found:
        raise Refused(f"no client session with pid {pid} on this server", "not_found")
    (r,) = found
    current = conn.info.dbname
    if r["database"] != current:
        raise Refused(
            f"pid {pid} is a session of database {r['database']!r}, not {current!r}; "
            "refusing to stop another database's session",
            "other_database",
        )
    return _session(r)


_FUNCTIONS: dict[Signal, str] = {
    "cancel": "SELECT pg_cancel_backend(%s)",
    "terminate": "SELECT pg_terminate_backend(%s)",
}


def signal(conn: psycopg.Connection[Any], pid: int, kind: Signal) -> Session:
    """Cancel the session's query or terminate the session; the session as it was before."""
    session = target(conn, pid)
    try:
        # A savepoint: a refusal must not abort the caller's transaction (its audit row).
        with conn.transaction():
            result = conn.execute(_FUNCTIONS[kind], [pid]).fetchone()
    except psycopg.errors.InsufficientPrivilege as e:
        raise Refused(
            f"cannot {kind} pid {pid}: {str(e).splitlines()[0]} (needs the role "
            "pg_signal_backend, or to be the session's own role; a superuser's session only "
            "by a superuser)",
            "privilege",
        ) from None
    if not result or not result[0]:
        raise Refused(f"pid {pid} ended before it could be signalled", "not_found")
    return session
