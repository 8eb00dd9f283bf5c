"""The guide's Data Analysis as functions: registrations, roles, XP, journey, activity, status.

Every result is a frozen dataclass of ints, floats, strings, dates and lists of the
same (`as_json()` gives the API's and the CLI's JSON, camelCase like the rest of the API).
Days are UTC days. A `DateRange` is inclusive at both ends (`since`..`until`, UTC dates):

- `registrations` and `activity` are time series over the range (default: the last 30
  days, 12 weeks or 12 months up to today), zero-filled, at most `MAX_BUCKETS` buckets;
- `roles`, `xp`, `statuses` and `journey` describe the users *registered* in the range
  (a cohort); without a range, every user.

The counts come from `analytics_count` plus `analytics_delta` (migration 0007), which
statement triggers keep exact under any write, raw SQL included; reading them costs a
few thousand rows whatever the number of users. Medians of time to complete are exact:
from the duration index without a range, from the cohort's states with one.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import psycopg

from smartstart.db.models import JOURNEY_STATUSES, LEVELS, USER_STATUSES
from smartstart.domain.errors import Invalid

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")
DEFAULT_SPAN: dict[Period, int] = {"day": 30, "week": 12, "month": 12}  # buckets
MAX_BUCKETS = 3660  # ten years of days: a series longer than this is refused
# The guide's XP bands: (label, lowest, highest or None).
BANDS: tuple[tuple[str, int, int | None], ...] = (
    ("0-99", 0, 99),
    ("100-499", 100, 499),
    ("500-999", 500, 999),
    ("1000+", 1000, None),
)
# Pending deltas past which a read folds them into the totals first.
COMPACT_AT = 5_000
# A cohort's exact medians read its completed states: past this many, they are left out
# (None, `mediansOmitted`) rather than taking seconds. Without a range they always come
# from the duration counts and index, whatever the number of users.
COHORT_MEDIAN_MAX = 10_000


@dataclass(frozen=True)
class DateRange:
    """Inclusive UTC dates; None leaves that end open."""

    since: date | None = None
    until: date | None = None


def today() -> date:
    return datetime.now(UTC).date()


def check_range(window: DateRange) -> None:
    """Invalid (422) when since is after until."""
    if window.since is not None and window.until is not None and window.since > window.until:
        raise Invalid(
            f"since ({window.since}) is after until ({window.until})",
            details={"since": str(window.since), "until": str(window.until)},
        )


def as_json(result: Any) -> dict[str, Any]:
    """A result as JSON-ready data (dates as ISO strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(result))  # type: ignore[no-any-return]


def _share(part: int, whole: int) -> float | None:
    """part as a percentage of whole (2 decimals); None when whole is 0."""
    return round(part * 100 / whole, 2) if whole else None


# -- reading the counts -----------------------------------------------------------------

_COUNTS = """
    SELECT {columns}, sum(n)::bigint AS n, sum(xp)::bigint AS xp FROM (
        SELECT * FROM (SELECT {fields} FROM analytics_count
                       UNION ALL SELECT {fields} FROM analytics_delta) c
        WHERE kind = %(kind)s AND day >= %(since)s AND day <= %(until)s
    ) c GROUP BY {columns}"""
_FIELDS = "kind, day, subject, status, level, band, n, xp"
_COMPACT = """
    SELECT smartstart_analytics_compact()
    WHERE current_setting('transaction_read_only') = 'off'
      AND (SELECT count(*) FROM (SELECT 1 FROM analytics_delta LIMIT %s) d) > %s"""


def _counts(
    conn: psycopg.Connection[Any],
    kind: str,
    columns: str,
    window: DateRange,
    compact: bool = True,
) -> list[tuple[Any, ...]]:
    """Summed counts of one kind over a range of days, grouped by columns: (…, n, xp).

    compact: first fold the pending deltas when there are many (once per analysis is enough).
    """
    if compact:
        conn.execute(_COMPACT, [COMPACT_AT + 1, COMPACT_AT])
    query = _COUNTS.format(columns=columns, fields=_FIELDS)
    params = {
        "kind": kind,
        "since": window.since or date.min,
        "until": window.until or date.max,
    }
    return conn.execute(query, params).fetchall()


# -- time series ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """One day, week (Monday to Sunday) or month of a series."""

    start: date
    end: date  # its last day
    users: int
    cumulative: int  # users up to the end of this bucket, from the beginning of time


@dataclass(frozen=True)
class Series:
    """Users per bucket over since..until (whole buckets), zero-filled."""

    period: Period
    since: date
    until: date
    before: int  # users before since
    total: int  # users within since..until
    buckets: list[Bucket]


def _bucket_start(day: date, period: Period) -> date:
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def _next_start(start: date, period: Period) -> date:
    if period == "week":
        return start + timedelta(days=7)
    if period == "month":
        return date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return start + timedelta(days=1)


def series_range(window: DateRange, period: Period) -> tuple[date, date, int]:
    """The whole-bucket range a series covers (defaults filled in) and its bucket count."""
    if period not in PERIODS:
        raise Invalid(f"period must be one of {', '.join(PERIODS)}", details={"period": period})
    check_range(window)
    try:
        until = window.until or today()
        since = window.since or _default_since(until, period)
        check_range(DateRange(since, until))  # a since after today, until left out
        first, last = _bucket_start(since, period), _bucket_start(until, period)
        end = _next_start(last, period) - timedelta(days=1)
    except (OverflowError, ValueError):
        raise Invalid(
            "the range reaches past the dates this supports (years 1 to 9999)",
            details={"since": str(window.since), "until": str(window.until)},
        ) from None
    if period == "day":
        buckets = (last - first).days + 1
    elif period == "week":
        buckets = (last - first).days // 7 + 1
    else:
        buckets = (last.year - first.year) * 12 + last.month - first.month + 1
    if buckets > MAX_BUCKETS:
        raise Invalid(
            f"the range spans {buckets} {period}s; at most {MAX_BUCKETS} at a time",
            details={"since": str(since), "until": str(until), "buckets": buckets},
        )
    return first, end, buckets


def _default_since(until: date, period: Period) -> date:
    span = DEFAULT_SPAN[period]
    if period == "month":
        months = until.year * 12 + until.month - 1 - (span - 1)
        return date(months // 12, months % 12 + 1, 1)
    return until - timedelta(days=span - 1 if period == "day" else 7 * (span - 1))


def _series(conn: psycopg.Connection[Any], kind: str, window: DateRange, period: Period) -> Series:
    since, until, count = series_range(window, period)
    starts = [since]
    for _ in range(count):
        starts.append(_next_start(starts[-1], period))
    users = [0] * count
    before = 0
    for day, n, _ in _counts(conn, kind, "day", DateRange(None, until)):
        if day < since:
            before += int(n)
        else:
            users[bisect.bisect_right(starts, day) - 1] += int(n)
    buckets: list[Bucket] = []
    running = before
    for i, start in enumerate(starts[:-1]):
        running += users[i]
        buckets.append(Bucket(start, starts[i + 1] - timedelta(days=1), users[i], running))
    return Series(period, since, until, before, running - before, buckets)


def registrations(
    conn: psycopg.Connection[Any], window: DateRange = DateRange(), period: Period = "day"
) -> Series:
    """New users per day, week or month ("createdAt", UTC), with cumulative totals."""
    return _series(conn, "created", window, period)


def activity(
    conn: psycopg.Connection[Any], window: DateRange = DateRange(), period: Period = "day"
) -> Series:
    """Users by the day of their last activity ("lastActive", UTC).

    The platform keeps each user's latest activity only: a user counts once, on the day
    they were last seen, so a day's count is the users whose last visit fell on it.
    `cumulative` counts the users last seen up to that day.
    """
    return _series(conn, "active", window, period)


# -- distributions of a cohort -------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """A group's users and their share of the total (percent, 2 decimals; None of 0)."""

    name: str
    users: int
    share: float | None


@dataclass(frozen=True)
class Roles:
    """Users by primary role ("User".role) and by every assigned role ("UserRole")."""

    since: date | None
    until: date | None
    total: int  # users
    primary: list[Share]  # by users, most first; every role, 0 included
    assigned: list[Share]  # users holding each role, primary or not


def _cohort(window: DateRange) -> DateRange:
    check_range(window)
    return window


def _shares(counts: dict[str, int], names: Iterable[str], total: int) -> list[Share]:
    every = dict.fromkeys(names, 0) | counts
    ranked = sorted(every.items(), key=lambda kv: (-kv[1], kv[0]))
    return [Share(name, users, _share(users, total)) for name, users in ranked]


def roles(conn: psycopg.Connection[Any], window: DateRange = DateRange()) -> Roles:
    """The role distribution of the users registered in the range."""
    window = _cohort(window)
    names = dict(conn.execute('SELECT id, name FROM "Role"').fetchall())
    primary = {s: int(n) for s, n, _ in _counts(conn, "user", "subject", window)}
    assigned: dict[str, int] = {}
    for role_id, n, _ in _counts(conn, "role", "subject", window, compact=False):
        name = names.get(role_id, role_id)
        assigned[name] = assigned.get(name, 0) + int(n)
    total = sum(primary.values())
    return Roles(
        window.since,
        window.until,
        total,
        _shares(primary, names.values(), total),
        _shares(assigned, names.values(), total),
    )


@dataclass(frozen=True)
class Band:
    """Users whose XP falls in a band (the guide's 0-99 … 1000+)."""

    band: str
    minXp: int
    maxXp: int | None  # None: no upper bound
    users: int
    share: float | None


@dataclass(frozen=True)
class Level:
    """Users at a level, and their XP."""

    level: str
    minXp: int
    users: int
    share: float | None
    totalXp: int
    averageXp: float | None  # None when nobody is at this level


@dataclass(frozen=True)
class Xp:
    """The XP distribution of the users registered in the range."""

    since: date | None
    until: date | None
    total: int
    bands: list[Band]  # in XP order, zero-filled
    levels: list[Level]  # in XP order, zero-filled


def xp(conn: psycopg.Connection[Any], window: DateRange = DateRange()) -> Xp:
    """Users per XP band (the guide's query) and per level."""
    window = _cohort(window)
    rows = _counts(conn, "user", "band, level", window)
    total = sum(int(n) for _, _, n, _ in rows)
    by_band: dict[str, int] = {}
    by_level: dict[str, tuple[int, int]] = {}
    for band, level, n, points in rows:
        by_band[band] = by_band.get(band, 0) + int(n)
        users, total_xp = by_level.get(level, (0, 0))
        by_level[level] = (users + int(n), total_xp + int(points))
    bands = [
        Band(label, low, high, by_band.get(label, 0), _share(by_band.get(label, 0), total))
        for label, low, high in BANDS
    ]
    levels = []
    for name, floor in LEVELS:
        users, total_xp = by_level.get(name, (0, 0))
        average = round(total_xp / users, 2) if users else None
        levels.append(Level(name, floor, users, _share(users, total), total_xp, average))
    return Xp(window.since, window.until, total, bands, levels)


@dataclass(frozen=True)
class Statuses:
    """Users per status (ACTIVE, INACTIVE, SUSPENDED, PENDING) of the range's registrations."""

    since: date | None
    until: date | None
    total: int
    statuses: list[Share]  # in the schema's order, zero-filled


def statuses(conn: psycopg.Connection[Any], window: DateRange = DateRange()) -> Statuses:
    """Status counts of the users registered in the range."""
    window = _cohort(window)
    counts = {s: int(n) for s, n, _ in _counts(conn, "user", "status", window)}
    total = sum(counts.values())
    ordered = [*USER_STATUSES, *sorted(set(counts) - set(USER_STATUSES))]
    return Statuses(
        window.since,
        window.until,
        total,
        [Share(s, counts.get(s, 0), _share(counts.get(s, 0), total)) for s in ordered],
    )


# -- the journey funnel --------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One stage of the funnel: its journey states by status.

    `total` counts every state of the stage (the guide's `COUNT(ujs.id)`); `started` those
    in progress or completed; `completionRate` is completed / total in percent (2
    decimals), None for a stage nobody has a state in.
    """

    stageId: str
    name: str
    order: int
    active: bool
    total: int
    notStarted: int
    inProgress: int
    started: int
    completed: int
    skipped: int
    completionRate: float | None
    medianSecondsToComplete: float | None  # completedAt - startedAt; None: none completed


@dataclass(frozen=True)
class Journey:
    """Every stage in order, for the users registered in the range."""

    since: date | None
    until: date | None
    stages: list[Stage]
    # True when the range's users completed more than COHORT_MEDIAN_MAX states: the
    # medians are then None (ask without a range for every user's).
    mediansOmitted: bool = False


# A completed state's duration bucket, as migration 0007 indexes and counts it.
_BUCKET = (
    'floor((ln((GREATEST(date_part(\'epoch\'::text, (j."completedAt" - j."startedAt")),'
    " (0)::double precision) + (1)::double precision)) * (64)::double precision))"
)
_MEDIAN_ALL = f"""
    SELECT s.id, (SELECT avg(date_part('epoch', x.d)) FROM (
                      SELECT j."completedAt" - j."startedAt" AS d FROM "UserJourneyState" j
                      WHERE j."stageId" = s.id AND j.status = 'COMPLETED'
                        AND {_BUCKET} >= s.bucket
                      ORDER BY {_BUCKET}, j."completedAt" - j."startedAt"
                      OFFSET s.skip LIMIT s.take) x)
    FROM unnest(%s::text[], %s::float8[], %s::bigint[], %s::int[]) AS s(id, bucket, skip, take)"""
_MEDIAN_COHORT = """
    SELECT j."stageId",
           percentile_cont(0.5) WITHIN GROUP (
               ORDER BY extract(epoch FROM j."completedAt" - j."startedAt"))
    FROM "User" u JOIN "UserJourneyState" j ON j."userId" = u.id
    WHERE j.status = 'COMPLETED' AND u."createdAt" >= %s AND u."createdAt" < %s
    GROUP BY j."stageId" """


def _medians(conn: psycopg.Connection[Any], window: DateRange) -> dict[str, float]:
    """Median seconds from start to completion per stage id."""
    if window.since is not None or window.until is not None:
        rows = conn.execute(
            _MEDIAN_COHORT, [_utc_start(window.since), _utc_start(window.until, after=True)]
        ).fetchall()
        return {s: float(m) for s, m in rows if m is not None}
    # Every user: the 'duration' counts say in which bucket each stage's middle state
    # lies and how many come before it; the index reads that bucket only, in order.
    histogram: dict[str, list[tuple[float, int]]] = {}
    for stage_id, bucket, n, _ in _counts(
        conn, "duration", "subject, band", DateRange(), compact=False
    ):
        histogram.setdefault(stage_id, []).append((float(bucket), int(n)))
    ids, buckets, skips, takes = [], [], [], []
    for stage_id, counts in histogram.items():
        counts.sort()
        total = sum(n for _, n in counts)
        if total <= 0:
            continue
        first, last = (total - 1) // 2, total // 2  # the middle one, or two
        below = 0
        for bucket, n in counts:
            if below + n > first:
                ids.append(stage_id)
                buckets.append(bucket)
                skips.append(first - below)
                takes.append(last - first + 1)
                break
            below += n
    rows = conn.execute(_MEDIAN_ALL, [ids, buckets, skips, takes]).fetchall()
    return {s: float(m) for s, m in rows if m is not None}


def _utc_start(day: date | None, after: bool = False) -> datetime:
    """Midnight UTC starting day (after: the next day's), or the open end."""
    if day is None:
        return datetime.max.replace(tzinfo=UTC) if after else datetime.min.replace(tzinfo=UTC)
    if after:
        if day == date.max:
            return datetime.max.replace(tzinfo=UTC)
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def journey(conn: psycopg.Connection[Any], window: DateRange = DateRange()) -> Journey:
    """The funnel: per stage in order, total/started/completed/skipped, rate and median."""
    window = _cohort(window)
    counts: dict[str, dict[str, int]] = {}
    for stage_id, status, n, _ in _counts(conn, "journey", "subject, status", window):
        counts.setdefault(stage_id, {})[status] = int(n)
    completed = sum(c.get("COMPLETED", 0) for c in counts.values())
    cohort = window.since is not None or window.until is not None
    omitted = cohort and completed > COHORT_MEDIAN_MAX
    medians = {} if omitted else _medians(conn, window)
    stages = []
    for stage_id, name, order, active in conn.execute(
        'SELECT id, name, "order", active FROM "JourneyStage" ORDER BY "order", id'
    ).fetchall():
        c = {status: counts.get(stage_id, {}).get(status, 0) for status in JOURNEY_STATUSES}
        total = sum(counts.get(stage_id, {}).values())
        done = c["COMPLETED"]
        stages.append(
            Stage(
                stageId=stage_id,
                name=name,
                order=order,
                active=active,
                total=total,
                notStarted=c["NOT_STARTED"],
                inProgress=c["IN_PROGRESS"],
                started=c["IN_PROGRESS"] + done,
                completed=done,
                skipped=c["SKIPPED"],
                completionRate=_share(done, total),
                medianSecondsToComplete=medians.get(stage_id),
            )
        )
    return Journey(window.since, window.until, stages, omitted)
