"""The Analytics page (for `analytics:read`, which the catalog gives members too, hence
not under /admin): `domain.analytics`' results as charts and tables, and as CSV.

One analysis per view (a tab each) keeps every page within its time budget at 1,000,000
users: each analysis reads the summary tables once. The CSV of an analysis is the table
the page shows, for the same range and period.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.responses import Response

from smartstart.domain import analytics
from smartstart.domain.errors import Invalid, NotFound
from smartstart.web.charts import Bar, bars
from smartstart.web.core import View, page

Cell = str | int | float | None


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]]


@dataclass(frozen=True)
class Shown:
    """One analysis as the page shows it: charts (titled) and its table."""

    charts: list[tuple[str, Markup | None]]
    table: Table
    note: str | None = None


@dataclass(frozen=True)
class Query:
    """The page's form: a date range and, for the time series, a period."""

    window: analytics.DateRange
    period: analytics.Period

    @property
    def kept(self) -> dict[str, str]:
        out: dict[str, str] = {"period": self.period}
        if self.window.since:
            out["since"] = self.window.since.isoformat()
        if self.window.until:
            out["until"] = self.window.until.isoformat()
        return out


def _day(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise Invalid(f"{name} must be a date (YYYY-MM-DD)", details={"field": name}) from None


def read_query(view: View) -> Query:
    period = view.query("period", "day") or "day"
    if period not in analytics.PERIODS:
        raise Invalid(
            f"period must be one of {', '.join(analytics.PERIODS)}", details={"field": "period"}
        )
    window = analytics.DateRange(
        _day(view.query("since"), "since"), _day(view.query("until"), "until")
    )
    analytics.check_range(window)
    return Query(window, period)  # type: ignore[arg-type,unused-ignore] # checked above


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def series_chart(result: analytics.Series, title: str, key: str = "c") -> Markup | None:
    label = {"day": "%m-%d", "week": "%m-%d", "month": "%Y-%m"}[result.period]
    return bars(
        [Bar(b.start.strftime(label), b.users) for b in result.buckets], title=title, key=key
    )


def _series(result: analytics.Series, title: str) -> Shown:
    rows: list[tuple[Cell, ...]] = [
        (b.start.isoformat(), b.end.isoformat(), b.users, b.cumulative) for b in result.buckets
    ]
    return Shown(
        [(title, series_chart(result, title, "a"))],
        Table(("start", "end", "users", "cumulative"), rows),
        f"{result.total:,} in the range; {result.before:,} before it.",
    )


def _shares(shares: Sequence[analytics.Share]) -> list[Bar]:
    return [Bar(s.name, s.users) for s in shares]


def _registrations(view: View, q: Query) -> Shown:
    return _series(analytics.registrations(view.conn, q.window, q.period), "New users")


def _activity(view: View, q: Query) -> Shown:
    return _series(analytics.activity(view.conn, q.window, q.period), "Users last active")


def _roles(view: View, q: Query) -> Shown:
    r = analytics.roles(view.conn, q.window)
    assigned = {s.name: s for s in r.assigned}
    rows: list[tuple[Cell, ...]] = [
        (s.name, s.users, _pct(s.share), assigned[s.name].users, _pct(assigned[s.name].share))
        for s in r.primary
        if s.name in assigned
    ]
    return Shown(
        [
            ("Primary role", bars(_shares(r.primary), title="Users by primary role", key="a")),
            ("Assigned roles", bars(_shares(r.assigned), title="Users holding each role", key="b")),
        ],
        Table(("role", "primary", "primary %", "assigned", "assigned %"), rows),
        f"{r.total:,} users.",
    )


def _xp(view: View, q: Query) -> Shown:
    r = analytics.xp(view.conn, q.window)
    rows: list[tuple[Cell, ...]] = [("band", b.band, b.users, _pct(b.share), None) for b in r.bands]
    rows += [("level", lv.level, lv.users, _pct(lv.share), lv.averageXp) for lv in r.levels]
    return Shown(
        [
            (
                "XP bands",
                bars([Bar(b.band, b.users) for b in r.bands], title="Users by XP", key="a"),
            ),
            (
                "Levels",
                bars([Bar(lv.level, lv.users) for lv in r.levels], title="Users by level", key="b"),
            ),
        ],
        Table(("group", "name", "users", "share %", "average xp"), rows),
        f"{r.total:,} users.",
    )


def funnel_chart(result: analytics.Journey, key: str = "c") -> Markup | None:
    """Completed states per stage, in the journey's order."""
    return bars(
        [Bar(s.name, s.completed) for s in result.stages], title="Completed per stage", key=key
    )


FUNNEL_COLUMNS = ("order", "stage", "total", "started", "completed", "skipped") + (
    "completion %",
    "median s",
)


def _journey(view: View, q: Query) -> Shown:
    r = analytics.journey(view.conn, q.window)
    rows: list[tuple[Cell, ...]] = [
        (
            s.order,
            s.name,
            s.total,
            s.started,
            s.completed,
            s.skipped,
            _pct(s.completionRate),
            None if s.medianSecondsToComplete is None else round(s.medianSecondsToComplete, 1),
        )
        for s in r.stages
    ]
    note = "Medians left out: too many completed states in the range." if r.mediansOmitted else None
    return Shown(
        [("Funnel", funnel_chart(r, "a"))],
        Table(FUNNEL_COLUMNS, rows),
        note,
    )


def _status(view: View, q: Query) -> Shown:
    r = analytics.statuses(view.conn, q.window)
    return Shown(
        [("Status", bars(_shares(r.statuses), title="Users by status", key="a"))],
        Table(
            ("status", "users", "share %"), [(s.name, s.users, _pct(s.share)) for s in r.statuses]
        ),
        f"{r.total:,} users.",
    )


# name -> (tab label, whether it is a time series, its view)
ANALYSES: dict[str, tuple[str, bool, Callable[[View, Query], Shown]]] = {
    "registrations": ("Registrations", True, _registrations),
    "activity": ("Activity", True, _activity),
    "roles": ("Roles", False, _roles),
    "xp": ("XP", False, _xp),
    "journey": ("Journey funnel", False, _journey),
    "status": ("Status", False, _status),
}


def _analysis(name: str | None) -> str:
    name = name or "registrations"
    if name not in ANALYSES:
        raise NotFound(f"no analysis {name[:100]!r}: one of {', '.join(ANALYSES)}")
    return name


@page("analytics:read")
def analytics_page(view: View) -> Response:
    """GET /analytics: one analysis as charts and a table, for a range and period."""
    name = _analysis(view.query("analysis"))
    q = read_query(view)
    label, timed, compute = ANALYSES[name]
    shown = compute(view, q)
    kept = q.kept
    return view.render(
        "analytics.html",
        title=f"Analytics: {label}",
        name=name,
        timed=timed,
        shown=shown,
        q=kept,
        periods=analytics.PERIODS,
        tabs=[
            (n, t, f"?{urlencode({**kept, 'analysis': n})}") for n, (t, _, _) in ANALYSES.items()
        ],
        csv_url=f"/analytics/{name}.csv?{urlencode(kept)}",
    )


@page("analytics:read")
def analytics_csv(view: View) -> Response:
    """GET /analytics/{name}.csv: the analysis' table as CSV."""
    name = _analysis(view.request.path_params["name"])
    shown = ANALYSES[name][2](view, read_query(view))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(shown.table.columns)
    writer.writerows(shown.table.rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}.csv"',
            "Cache-Control": "no-store",
        },
    )


def registrations_week(view: View) -> tuple[Markup | None, int]:
    """The Overview's chart (registrations per day, last 30 days) and the last 7 days' count."""
    series = analytics.registrations(view.conn)
    recent = analytics.today() - timedelta(days=6)
    new = sum(b.users for b in series.buckets if b.start >= recent)
    return series_chart(series, "New users per day, last 30 days"), new
