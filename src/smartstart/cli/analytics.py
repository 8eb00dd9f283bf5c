"""`smartstart analytics …`: the guide's Data Analysis, over smartstart.domain.analytics.

On a terminal each command draws its numbers (bars, or a sparkline for a series) beside
the table; into a pipe or a file it prints the plain table, never cut. `--json` prints
the API's JSON, `--csv` one CSV table.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date
from typing import Annotated, Any

import typer

from smartstart.cli.common import (
    JsonOpt,
    console,
    handle_errors,
    parse_when,
    print_json,
    print_table,
)
from smartstart.cli.context import transaction
from smartstart.domain import analytics
from smartstart.domain.analytics import DateRange
from smartstart.errors import SmartStartError

app = typer.Typer(
    help="Analytics: registrations, roles, XP, journey funnel, activity and status (UTC days).",
    no_args_is_help=True,
)

DAY_HELP = (
    "A UTC day, inclusive: YYYY-MM-DD, today, yesterday, 7d or 2w ago, or an ISO datetime "
    "(its UTC day)."
)
SinceOpt = Annotated[str | None, typer.Option(metavar="DAY", help="First day. " + DAY_HELP)]
UntilOpt = Annotated[str | None, typer.Option(metavar="DAY", help="Last day. " + DAY_HELP)]
CsvOpt = Annotated[bool, typer.Option("--csv", help="Print CSV (one table).")]
PeriodOpt = Annotated[
    str, typer.Option("--period", "-p", metavar="day|week|month", help="Bucket size.")
]
SPARKS = "▁▂▃▄▅▆▇█"
BLOCKS = " ▏▎▍▌▋▊▉█"
BAR_WIDTH = 24


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return parse_when(value).astimezone(UTC).date()
    except typer.BadParameter as e:
        raise SmartStartError(f"{option}: {e.message}") from None
    except (OverflowError, ValueError):
        raise SmartStartError(f"{option}: {value!r} is out of range") from None


def _range(since: str | None, until: str | None) -> DateRange:
    return DateRange(_day(since, "--since"), _day(until, "--until"))


def _period(value: str) -> analytics.Period:
    for period in analytics.PERIODS:
        if value == period:
            return period
    raise SmartStartError(f"--period must be day, week or month, not {value!r}")


def bar(value: float, top: float, width: int = BAR_WIDTH) -> str:
    """value as a horizontal bar of eighth blocks, top filling width."""
    if top <= 0 or value <= 0:
        return ""
    eighths = round(value / top * width * 8)
    return BLOCKS[-1] * (eighths // 8) + (BLOCKS[eighths % 8] if eighths % 8 else "")


def sparkline(values: Sequence[int], width: int) -> str:
    """values as one line of block heights, averaged down to at most width characters."""
    if not values:
        return ""
    step = max(1, -(-len(values) // max(width, 1)))
    points = [sum(values[i : i + step]) / step for i in range(0, len(values), step)]
    top = max(points)
    if top <= 0:
        return SPARKS[0] * len(points)
    return "".join(SPARKS[min(7, int(p / top * 7.999))] for p in points)


def _output(
    result: Any,
    rows: list[dict[str, Any]],
    columns: Sequence[str],
    as_json: bool,
    as_csv: bool,
    title: str,
    chart: Callable[[], None] | None = None,
    bars: str | None = None,
) -> None:
    """The result as JSON, CSV, or a table (with its chart on a terminal)."""
    if as_json and as_csv:
        raise SmartStartError("--json and --csv: choose one")
    if as_json:
        print_json(analytics.as_json(result))
        return
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
        return
    if not console.is_terminal:
        print_table(rows, columns, title=title)
        return
    if chart is not None:
        chart()
    shown = list(columns)
    if bars is not None:
        measure = bars
        top = max((float(r.get(measure) or 0) for r in rows), default=0.0)
        rows = [{**r, "": bar(float(r.get(measure) or 0), top)} for r in rows]
        shown.append("")
    print_table(rows, shown, title=title)


def _series_rows(result: analytics.Series) -> list[dict[str, Any]]:
    return [
        {"start": b.start, "end": b.end, "users": b.users, "cumulative": b.cumulative}
        for b in result.buckets
    ]


def _show_series(result: analytics.Series, what: str, as_json: bool, as_csv: bool) -> None:
    def chart() -> None:
        values = [b.users for b in result.buckets]
        console.print(
            f"[bold]{what}[/] per {result.period}, {result.since} to {result.until} (UTC): "
            f"{result.total:,} (before: {result.before:,}; max {max(values, default=0):,} "
            f"in a {result.period})",
            highlight=False,
        )
        console.print(sparkline(values, console.width), highlight=False)

    _output(
        result,
        _series_rows(result),
        ("start", "end", "users", "cumulative"),
        as_json,
        as_csv,
        f"{what} per {result.period} (UTC)",
        chart=chart,
        bars="users",
    )


def _series_command(
    name: str, what: str, compute: Callable[..., analytics.Series], help_text: str
) -> None:
    """Add the command of a series (registrations, activity): the same options, one output."""

    def command(
        since: SinceOpt = None,
        until: UntilOpt = None,
        period: PeriodOpt = "day",
        as_json: JsonOpt = False,
        as_csv: CsvOpt = False,
    ) -> None:
        window, size = _range(since, until), _period(period)
        with transaction() as (conn, _):
            result = compute(conn, window, size)
        _show_series(result, what, as_json, as_csv)

    command.__doc__ = help_text
    app.command(name)(handle_errors(command))


_series_command(
    "registrations",
    "Registrations",
    analytics.registrations,
    'New users per day, week or month, zero-filled, with cumulative totals ("createdAt").',
)
_series_command(
    "activity",
    "Users last active",
    analytics.activity,
    'Users by the day of their last activity ("lastActive"): each user once, when last seen.',
)


def _cohort_title(title: str, window: analytics.DateRange) -> str:
    if window.since is None and window.until is None:
        return f"{title}, all users"
    return f"{title}, users registered {window.since or '…'} to {window.until or '…'} (UTC)"


@app.command("roles")
@handle_errors
def roles(
    since: SinceOpt = None, until: UntilOpt = None, as_json: JsonOpt = False, as_csv: CsvOpt = False
) -> None:
    """Role distribution: primary role ("User".role) and every assigned role ("UserRole")."""
    window = _range(since, until)
    with transaction() as (conn, _):
        result = analytics.roles(conn, window)
    assigned = {s.name: s.users for s in result.assigned}
    rows = [
        {"role": s.name, "users": s.users, "share": s.share, "assigned": assigned.get(s.name, 0)}
        for s in result.primary
    ]
    _output(
        result,
        rows,
        ("role", "users", "share", "assigned"),
        as_json,
        as_csv,
        _cohort_title(f"Primary roles of {result.total:,} users (share %)", window),
        bars="users",
    )


@app.command("xp")
@handle_errors
def xp(
    since: SinceOpt = None, until: UntilOpt = None, as_json: JsonOpt = False, as_csv: CsvOpt = False
) -> None:
    """XP in the guide's bands (0-99, 100-499, 500-999, 1000+) and by level."""
    window = _range(since, until)
    with transaction() as (conn, _):
        result = analytics.xp(conn, window)
    levels = {lv.minXp: lv for lv in result.levels}
    rows = []
    for b in result.bands:
        level = levels.get(b.minXp)
        rows.append(
            {
                "band": b.band,
                "level": level.level if level else None,
                "users": b.users,
                "share": b.share,
                "averageXp": level.averageXp if level else None,
            }
        )
    _output(
        result,
        rows,
        ("band", "level", "users", "share", "averageXp"),
        as_json,
        as_csv,
        _cohort_title(f"XP of {result.total:,} users (share %)", window),
        bars="users",
    )


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@app.command("journey")
@handle_errors
def journey(
    since: SinceOpt = None, until: UntilOpt = None, as_json: JsonOpt = False, as_csv: CsvOpt = False
) -> None:
    """The journey funnel: per stage in order, states by status, completion rate, median time."""
    window = _range(since, until)
    with transaction() as (conn, _):
        result = analytics.journey(conn, window)
    rows = [
        {
            "order": s.order,
            "stage": s.name if s.active else f"{s.name} (inactive)",
            "total": s.total,
            "notStarted": s.notStarted,
            "inProgress": s.inProgress,
            "started": s.started,
            "completed": s.completed,
            "skipped": s.skipped,
            "completionRate": s.completionRate,
            "median": _duration(s.medianSecondsToComplete) if not as_csv else None,
            "medianSecondsToComplete": s.medianSecondsToComplete,
            "stageId": s.stageId,
        }
        for s in result.stages
    ]
    columns: tuple[str, ...] = (
        "order",
        "stage",
        "total",
        "started",
        "completed",
        "skipped",
        "completionRate",
        "median",
    )
    if as_csv:
        columns = (
            "order",
            "stageId",
            "stage",
            "total",
            "notStarted",
            "inProgress",
            "started",
            "completed",
            "skipped",
            "completionRate",
            "medianSecondsToComplete",
        )
    _output(
        result,
        rows,
        columns,
        as_json,
        as_csv,
        _cohort_title("Journey funnel (completion rate %)", window),
        bars="completed",
    )


@app.command("status")
@handle_errors
def status(
    since: SinceOpt = None, until: UntilOpt = None, as_json: JsonOpt = False, as_csv: CsvOpt = False
) -> None:
    """Users per status (ACTIVE, INACTIVE, SUSPENDED, PENDING)."""
    window = _range(since, until)
    with transaction() as (conn, _):
        result = analytics.statuses(conn, window)
    rows = [{"status": s.name, "users": s.users, "share": s.share} for s in result.statuses]
    _output(
        result,
        rows,
        ("status", "users", "share"),
        as_json,
        as_csv,
        _cohort_title(f"Status of {result.total:,} users (share %)", window),
        bars="users",
    )
