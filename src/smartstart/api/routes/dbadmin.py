"""/api/admin/db/…: health, statistics (and their history), live queries, cancel/terminate,
explain. Reads need `db:read`; what acts on the server needs `db:admin` and is audited."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from smartstart import health
from smartstart.api.deps import ConnDep, SettingsDep, actor_for, require
from smartstart.db.engine import connect
from smartstart.domain import dbops, statshistory
from smartstart.domain.errors import Invalid, NotFound
from smartstart.errors import SmartStartError
from smartstart.pg import activity, explain, stats
from smartstart.pg.activity import Session
from smartstart.pg.checks import Scalar, own_sessions_only

router = APIRouter(prefix="/api/admin/db", tags=["dbadmin"])

Row = dict[str, Scalar]


class HealthState(StrEnum):
    """A check's verdict (`health.State`), worst last."""

    OK = "OK"
    WARN = "WARN"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    CRIT = "CRIT"


class HealthCheck(BaseModel):
    """One check's numbers and verdict: what `smartstart db health --json` prints per item."""

    check: str
    title: str
    state: HealthState
    metric: float | None
    unit: str
    warn: float | None
    crit: float | None
    recommendation: str | None = Field(description="The fix (SQL or a command), unless OK")
    reason: str | None = Field(description="Why it could not tell, or what it could not see")
    seconds: float
    details: list[Row]


class HealthReport(BaseModel):
    items: list[HealthCheck]
    next_cursor: None = None
    worst: HealthState


def _check(result: health.CheckResult) -> HealthCheck:
    return HealthCheck.model_validate(result.as_json())


def _run(settings: Any, names: list[str] | None, timeout: float | None) -> list[health.CheckResult]:
    checks = health.select(names)
    config = health.load_config(settings.home_dir)
    if timeout is not None:
        config = health.HealthConfig(timeout, config.thresholds)
    return health.run(settings, checks, config)


TimeoutQuery = Annotated[
    float | None,
    Query(gt=0, le=60, description="Statement timeout of each check, seconds (default 2)"),
]


@router.get(
    "/health",
    operation_id="dbhealth_list",
    summary="Run the database health checks: numbers, verdict and fix of each",
    response_model=HealthReport,
    dependencies=[require("db:read")],
)
def health_list(
    settings: SettingsDep,
    check: Annotated[list[str] | None, Query(description="Only these checks")] = None,
    timeout: TimeoutQuery = None,
) -> HealthReport:
    try:
        results = _run(settings, check, timeout)
    except SmartStartError as e:
        raise Invalid(str(e), details={"field": "check"}) from None
    return HealthReport(
        items=[_check(r) for r in results], worst=HealthState(health.worst(results).name)
    )


@router.get(
    "/health/{check}",
    operation_id="dbhealth_get",
    summary="Run one database health check",
    response_model=HealthCheck,
    dependencies=[require("db:read")],
)
def health_get(
    settings: SettingsDep,
    check: Annotated[str, Path(max_length=100)],
    timeout: TimeoutQuery = None,
) -> HealthCheck:
    if check not in {c.name for c in health.CHECKS}:
        raise NotFound(f"no check named {check[:100]!r}", details={"check": check[:100]})
    (result,) = _run(settings, [check], timeout)
    return _check(result)


class SlowStatements(BaseModel):
    items: list[Row]
    unavailable: str | None = Field(description="Why there are none: what is needed")


class StatsReport(BaseModel):
    """What the guide's table-size, index-usage, table-statistics and slow-query statements
    meant (the same as `smartstart db stats --json`)."""

    table_sizes: list[Row]
    index_usage: list[Row]
    table_statistics: list[Row]
    slow_queries: SlowStatements


LimitQuery = Annotated[int, Query(ge=1, le=10_000, description="Rows per section")]


@router.get(
    "/stats",
    operation_id="dbstats_get",
    summary="Table sizes, index usage, table statistics and slow queries",
    response_model=StatsReport,
    dependencies=[require("db:read")],
)
def stats_get(conn: ConnDep, limit: LimitQuery = 20) -> StatsReport:
    slow = stats.statement_counters(conn, limit=limit)
    return StatsReport(
        table_sizes=stats.table_sizes(conn)[:limit],
        index_usage=stats.index_usage(conn)[:limit],
        table_statistics=stats.table_statistics(conn)[:limit],
        slow_queries=SlowStatements(items=slow.items, unavailable=slow.unavailable),
    )


class StatementChange(BaseModel):
    queryid: str
    query: str
    calls: int = Field(description="Calls since the baseline")
    mean_ms: float = Field(description="Mean execution time of those calls")
    before_mean_ms: float | None = Field(description="Mean at the baseline (None: new)")
    total_ms: float


class TableChange(BaseModel):
    schema_name: str = Field(alias="schema")
    table: str
    total_bytes: int
    grew_bytes: int
    live_tuples: int
    grew_tuples: int


class StatsChanges(BaseModel):
    baseline_at: datetime = Field(description="When the snapshot compared with was taken")
    database_bytes: int
    database_grew_bytes: int
    statements: list[StatementChange]
    tables: list[TableChange]


@router.get(
    "/stats/changes",
    operation_id="dbstats_changes",
    summary="What changed since a point in time: queries that got slower, tables that grew",
    response_model=StatsChanges,
    response_model_by_alias=True,
    dependencies=[require("db:read")],
)
def stats_changes(conn: ConnDep, since: datetime, limit: LimitQuery = 20) -> StatsChanges:
    changed = statshistory.since(conn, since, limit)
    if changed is None:
        raise NotFound(
            "no statistics snapshot to compare with yet (the Brain's scheduler takes one at "
            "SMARTSTART_STATS_SNAPSHOT_SCHEDULE; `smartstart db stats --snapshot` takes one now)"
        )
    return StatsChanges.model_validate(changed.as_json())


class ServerSession(BaseModel):
    """A live session of the database server (`smartstart db queries`)."""

    pid: int
    database: str | None
    user: str | None
    application: str
    client: str | None
    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    seconds: float | None = Field(description="Of the running query, else in this state")
    transaction_seconds: float | None
    blocked_by: list[int] = Field(description="The pids this session waits on")
    query: str | None


class ServerSessionPage(BaseModel):
    items: list[ServerSession]
    next_cursor: None = None
    note: str | None = Field(description="What this role cannot see, and what it needs")


def _session(s: Session) -> ServerSession:
    return ServerSession.model_validate(s.as_json())


@router.get(
    "/queries",
    operation_id="dbqueries_list",
    summary="Live queries of this database: duration, state, wait event, blocking pids",
    response_model=ServerSessionPage,
    dependencies=[require("db:read")],
)
def queries_list(
    conn: ConnDep,
    idle: Annotated[bool, Query(description="Include idle sessions")] = False,
) -> ServerSessionPage:
    found = activity.sessions(conn, active_only=not idle)
    return ServerSessionPage(items=[_session(s) for s in found], note=own_sessions_only(conn))


PidPath = Annotated[int, Path(ge=1, le=activity.MAX_PID, description="Server process id")]


class SignalResult(BaseModel):
    signal: str
    session: ServerSession = Field(description="The session as it was when signalled")


def _signal(request: Request, conn: Any, pid: int, kind: activity.Signal) -> SignalResult:
    actor = actor_for(request, request.state.principal)
    done = dbops.signal(conn, actor, pid, kind)
    return SignalResult(signal=kind, session=_session(done))


@router.post(
    "/queries/{pid}/cancel",
    operation_id="dbqueries_cancel",
    summary="Cancel a session's running query (audited)",
    response_model=SignalResult,
    dependencies=[require("db:admin")],
)
def queries_cancel(request: Request, conn: ConnDep, pid: PidPath) -> SignalResult:
    return _signal(request, conn, pid, "cancel")


@router.post(
    "/queries/{pid}/terminate",
    operation_id="dbqueries_terminate",
    summary="Terminate a session, rolling back its transaction (audited)",
    response_model=SignalResult,
    dependencies=[require("db:admin")],
)
def queries_terminate(request: Request, conn: ConnDep, pid: PidPath) -> SignalResult:
    return _signal(request, conn, pid, "terminate")


class ExplainRequest(BaseModel):
    sql: str = Field(min_length=1, max_length=explain.MAX_SQL_CHARS)
    analyze: bool = Field(default=False, description="Run it (a write is rolled back)")


class ExplainResult(BaseModel):
    analyzed: bool
    planning_ms: float | None
    execution_ms: float | None
    plan: dict[str, Any] = Field(description="PostgreSQL's EXPLAIN (FORMAT JSON) output")
    text: list[str]


@router.post(
    "/explain",
    operation_id="dbexplain_run",
    summary="A statement's plan, with timings when analysed (always rolled back)",
    response_model=ExplainResult,
    dependencies=[require("db:admin")],
)
def explain_run(settings: SettingsDep, body: ExplainRequest) -> ExplainResult:
    try:
        explain.check_sql(body.sql)
        # A connection of its own: the statement's errors and its rollback stay there.
        with connect(settings, autocommit=True) as conn:
            found = explain.explain(conn, body.sql, analyze=body.analyze)
    except SmartStartError as e:
        raise Invalid(str(e), details={"field": "sql"}) from None
    return ExplainResult.model_validate(found.as_json())
