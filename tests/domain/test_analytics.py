"""smartstart.domain.analytics on a crafted dataset where every number is known, and the
summary counts (migration 0007) against a recount after raw SQL of every kind."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import date
from typing import Any

import psycopg
import pytest

from smartstart.config import Settings
from smartstart.domain import analytics
from smartstart.domain.analytics import DateRange
from smartstart.domain.errors import Invalid

Conn = psycopg.Connection[Any]
PW = "$2b$12$" + "a" * 53

# (name, createdAt, lastActive, role, status, xp); times in UTC unless they say otherwise.
USERS = [
    ("u1", "2025-01-01 00:00:00+00", "2025-01-10 12:00:00+00", "MEMBER", "ACTIVE", 0),
    ("u2", "2025-01-01 23:59:59.999+00", "2025-01-10 23:59:59+00", "MEMBER", "ACTIVE", 99),
    ("u3", "2025-01-02 00:00:00+00", "2025-01-11 00:00:00+00", "ADMIN", "SUSPENDED", 100),
    # New York's evening of Jan 1 is Jan 2 in UTC: counted on Jan 2.
    ("u4", "2025-01-01 23:30:00-05", "2025-01-12 08:00:00+00", "GUEST", "INACTIVE", 499),
    ("u5", "2025-01-05 12:00:00+00", "2025-01-12 09:00:00+00", "MEMBER", "PENDING", 500),
    ("u6", "2025-02-03 10:00:00+00", "2025-02-03 10:00:00+00", "MEMBER", "ACTIVE", 999),
    ("u7", "2025-03-31 23:00:00+00", "2025-03-31 23:00:00+00", "MEMBER", "ACTIVE", 1000),
    ("u8", "2024-12-31 23:59:59+00", "2025-01-10 01:00:00+00", "MEMBER", "ACTIVE", 5000),
]
SECONDARY = [("u1", "ADMIN"), ("u3", "GUEST")]
STAGES = [("Alpha", 1, True), ("Beta", 2, True), ("Empty", 3, True), ("Dormant", 4, False)]
# (user, stage, status, seconds from start to completion)
STATES = [
    ("u1", "Alpha", "COMPLETED", 60),
    ("u2", "Alpha", "COMPLETED", 120),
    ("u3", "Alpha", "COMPLETED", 300),
    ("u4", "Alpha", "IN_PROGRESS", None),
    ("u5", "Alpha", "SKIPPED", None),
    ("u8", "Alpha", "COMPLETED", 3600),
    ("u1", "Beta", "COMPLETED", 10),
    ("u2", "Beta", "NOT_STARTED", None),
    ("u3", "Beta", "IN_PROGRESS", None),
    ("u1", "Dormant", "NOT_STARTED", None),
]


@pytest.fixture
def crafted(db_settings: Settings) -> Iterator[tuple[Conn, dict[str, str]]]:
    """A database holding exactly the dataset above; the user ids by name.

    The connection's session time zone is New York's: every answer must still be in UTC.
    """
    with psycopg.connect(db_settings.url_for(), autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'America/New_York'")
        for role in ("MEMBER", "ADMIN", "GUEST", "NOBODY"):
            conn.execute('INSERT INTO "Role" (name) VALUES (%s)', [role])
        for name, order, active in STAGES:
            conn.execute(
                'INSERT INTO "JourneyStage" (name, "order", active) VALUES (%s, %s, %s)',
                [name, order, active],
            )
        ids: dict[str, str] = {}
        for name, created, last, role, status, points in USERS:
            row = conn.execute(
                'INSERT INTO "User" (email, username, password, role, status, xp, "createdAt",'
                ' "lastActive") VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id',
                [f"{name}@example.com", name, PW, role, status, points, created, last],
            ).fetchone()
            assert row is not None
            ids[name] = row[0]
        for name, role in SECONDARY:
            conn.execute(
                'INSERT INTO "UserRole" ("userId", "roleId")'
                ' SELECT %s, id FROM "Role" WHERE name = %s',
                [ids[name], role],
            )
        for name, stage, status, seconds in STATES:
            conn.execute(
                'INSERT INTO "UserJourneyState" ("userId", "stageId", status, "startedAt",'
                ' "completedAt") SELECT %s, id, %s, %s::timestamptz,'
                " %s::timestamptz + make_interval(secs => %s)"
                ' FROM "JourneyStage" WHERE name = %s',
                [
                    ids[name],
                    status,
                    "2025-01-02 00:00+00" if seconds else None,
                    "2025-01-02 00:00+00" if seconds else None,
                    seconds,
                    stage,
                ],
            )
        yield conn, ids


def buckets(series: analytics.Series) -> list[tuple[str, int, int]]:
    return [(b.start.isoformat(), b.users, b.cumulative) for b in series.buckets]


# -- the numbers -------------------------------------------------------------------------


def test_registrations_per_day_zero_filled_with_cumulative_totals(
    crafted: tuple[Conn, dict[str, str]],
) -> None:
    conn, _ = crafted
    result = analytics.registrations(conn, DateRange(date(2025, 1, 1), date(2025, 1, 5)))
    assert (result.since, result.until) == (date(2025, 1, 1), date(2025, 1, 5))
    assert result.before == 1  # u8, a second before midnight UTC
    assert result.total == 5
    assert buckets(result) == [
        ("2025-01-01", 2, 3),
        ("2025-01-02", 2, 5),  # u3 at midnight UTC, u4 from New York
        ("2025-01-03", 0, 5),
        ("2025-01-04", 0, 5),
        ("2025-01-05", 1, 6),
    ]


def test_a_one_day_range_at_the_boundaries(crafted: tuple[Conn, dict[str, str]]) -> None:
    conn, _ = crafted
    day = analytics.registrations(conn, DateRange(date(2025, 1, 2), date(2025, 1, 2)))
    assert buckets(day) == [("2025-01-02", 2, 5)]
    assert day.before == 3
    last = analytics.registrations(conn, DateRange(date(2024, 12, 31), date(2024, 12, 31)))
    assert buckets(last) == [("2024-12-31", 1, 1)]
    empty = analytics.registrations(conn, DateRange(date(2020, 1, 1), date(2020, 1, 3)))
    assert buckets(empty) == [("2020-01-01", 0, 0), ("2020-01-02", 0, 0), ("2020-01-03", 0, 0)]


def test_registrations_per_week_and_month_cover_whole_buckets(
    crafted: tuple[Conn, dict[str, str]],
) -> None:
    conn, _ = crafted
    weeks = analytics.registrations(conn, DateRange(date(2025, 1, 1), date(2025, 2, 3)), "week")
    # Weeks run Monday to Sunday: Jan 1 2025 is a Wednesday, its week starts Dec 30.
    assert (weeks.since, weeks.until) == (date(2024, 12, 30), date(2025, 2, 9))
    assert weeks.before == 0
    assert buckets(weeks) == [
        ("2024-12-30", 6, 6),
        ("2025-01-06", 0, 6),
        ("2025-01-13", 0, 6),
        ("2025-01-20", 0, 6),
        ("2025-01-27", 0, 6),
        ("2025-02-03", 1, 7),
    ]
    assert weeks.buckets[0].end == date(2025, 1, 5)
    months = analytics.registrations(conn, DateRange(date(2025, 1, 15), date(2025, 3, 1)), "month")
    assert (months.since, months.until) == (date(2025, 1, 1), date(2025, 3, 31))
    assert months.before == 1
    assert buckets(months) == [("2025-01-01", 5, 6), ("2025-02-01", 1, 7), ("2025-03-01", 1, 8)]


def test_activity_per_day_by_last_active(crafted: tuple[Conn, dict[str, str]]) -> None:
    conn, _ = crafted
    result = analytics.activity(conn, DateRange(date(2025, 1, 9), date(2025, 1, 12)))
    assert buckets(result) == [
        ("2025-01-09", 0, 0),
        ("2025-01-10", 3, 3),  # u1, u2 (23:59:59 UTC), u8
        ("2025-01-11", 1, 4),
        ("2025-01-12", 2, 6),
    ]
    assert result.total == 6


def test_role_distribution_primary_and_assigned(crafted: tuple[Conn, dict[str, str]]) -> None:
    conn, _ = crafted
    result = analytics.roles(conn)
    assert result.total == 8
    assert [(s.name, s.users, s.share) for s in result.primary] == [
        ("MEMBER", 6, 75.0),
        ("ADMIN", 1, 12.5),
        ("GUEST", 1, 12.5),
        ("NOBODY", 0, 0.0),
    ]
    assert [(s.name, s.users) for s in result.assigned] == [
        ("MEMBER", 6),
        ("ADMIN", 2),
        ("GUEST", 2),
        ("NOBODY", 0),
    ]
    cohort = analytics.roles(conn, DateRange(date(2025, 1, 2), date(2025, 1, 5)))
    assert cohort.total == 3
    assert {s.name: s.users for s in cohort.primary} == {
        "ADMIN": 1,
        "GUEST": 1,
        "MEMBER": 1,
        "NOBODY": 0,
    }
    assert {s.name: s.users for s in cohort.assigned}["GUEST"] == 2


def test_xp_bands_and_levels(crafted: tuple[Conn, dict[str, str]]) -> None:
    conn, _ = crafted
    result = analytics.xp(conn)
    assert [(b.band, b.minXp, b.maxXp, b.users) for b in result.bands] == [
        ("0-99", 0, 99, 2),
        ("100-499", 100, 499, 2),
        ("500-999", 500, 999, 2),
        ("1000+", 1000, None, 2),
    ]
    assert [(lv.level, lv.users, lv.totalXp, lv.averageXp) for lv in result.levels] == [
        ("OWLET", 2, 99, 49.5),
        ("FLEDGLING", 2, 599, 299.5),
        ("NIGHT_OWL", 2, 1499, 749.5),
        ("WISE_OWL", 2, 6000, 3000.0),
    ]
    none = analytics.xp(conn, DateRange(date(2020, 1, 1), date(2020, 1, 1)))
    assert none.total == 0
    assert {(b.users, b.share) for b in none.bands} == {(0, None)}
    assert {lv.averageXp for lv in none.levels} == {None}


def test_status_counts(crafted: tuple[Conn, dict[str, str]]) -> None:
    conn, _ = crafted
    result = analytics.statuses(conn)
    assert [(s.name, s.users) for s in result.statuses] == [
        ("ACTIVE", 5),
        ("INACTIVE", 1),
        ("SUSPENDED", 1),
        ("PENDING", 1),
    ]
    january = analytics.statuses(conn, DateRange(date(2025, 1, 1), date(2025, 1, 31)))
    assert [s.users for s in january.statuses] == [2, 1, 1, 1]


def test_journey_funnel_in_order_with_an_empty_stage(crafted: tuple[Conn, dict[str, str]]) -> None:
    conn, _ = crafted
    result = analytics.journey(conn)
    got = [
        (
            s.name,
            s.active,
            s.total,
            s.notStarted,
            s.inProgress,
            s.started,
            s.completed,
            s.skipped,
            s.completionRate,
            s.medianSecondsToComplete,
        )
        for s in result.stages
    ]
    assert got == [
        ("Alpha", True, 6, 0, 1, 5, 4, 1, 66.67, 210.0),  # median of 60, 120, 300, 3600
        ("Beta", True, 3, 1, 1, 2, 1, 0, 33.33, 10.0),
        ("Empty", True, 0, 0, 0, 0, 0, 0, None, None),
        ("Dormant", False, 1, 1, 0, 0, 0, 0, 0.0, None),
    ]


def test_journey_of_a_cohort(crafted: tuple[Conn, dict[str, str]]) -> None:
    conn, _ = crafted
    cohort = analytics.journey(conn, DateRange(date(2025, 1, 2), date(2025, 1, 5)))
    alpha = cohort.stages[0]
    assert (alpha.total, alpha.completed, alpha.skipped, alpha.inProgress) == (3, 1, 1, 1)
    assert alpha.medianSecondsToComplete == 300.0
    # A range holding everyone gives the medians of the whole (another way to the same).
    everyone = analytics.journey(conn, DateRange(date(2000, 1, 1), date(2030, 1, 1)))
    whole = analytics.journey(conn)
    assert everyone == dataclasses.replace(whole, since=everyone.since, until=everyone.until)


def test_a_large_cohort_leaves_its_medians_out(
    crafted: tuple[Conn, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, _ = crafted
    cohort = DateRange(date(2025, 1, 1), date(2025, 1, 5))  # 4 completed states
    assert not analytics.journey(conn, cohort).mediansOmitted
    monkeypatch.setattr(analytics, "COHORT_MEDIAN_MAX", 3)
    big = analytics.journey(conn, cohort)
    assert big.mediansOmitted
    assert {s.medianSecondsToComplete for s in big.stages} == {None}
    assert big.stages[0].completed == 3  # the counts are all there
    whole = analytics.journey(conn)  # without a range, always
    assert not whole.mediansOmitted and whole.stages[0].medianSecondsToComplete == 210.0


def test_the_guide_s_queries_agree(crafted: tuple[Conn, dict[str, str]]) -> None:
    conn, _ = crafted
    conn.execute("SET TIME ZONE 'UTC'")  # the guide's DATE("createdAt") uses the session's
    guide_days = dict(
        conn.execute(
            'SELECT DATE("createdAt") as date, COUNT(*) as new_users FROM "User"'
            ' GROUP BY DATE("createdAt") ORDER BY date DESC'
        ).fetchall()
    )
    series = analytics.registrations(conn, DateRange(date(2024, 12, 31), date(2025, 3, 31)))
    assert {b.start: b.users for b in series.buckets if b.users} == guide_days
    guide_bands = conn.execute(
        "SELECT CASE WHEN xp < 100 THEN '0-99' WHEN xp < 500 THEN '100-499'"
        " WHEN xp < 1000 THEN '500-999' ELSE '1000+' END as xp_range, COUNT(*) as users"
        ' FROM "User" GROUP BY xp_range ORDER BY MIN(xp)'
    ).fetchall()
    assert [(b.band, b.users) for b in analytics.xp(conn).bands] == guide_bands


# -- bad input ---------------------------------------------------------------------------


def test_bad_ranges_are_refused(crafted: tuple[Conn, dict[str, str]]) -> None:
    conn, _ = crafted
    with pytest.raises(Invalid, match="after"):
        analytics.registrations(conn, DateRange(date(2025, 2, 1), date(2025, 1, 1)))
    with pytest.raises(Invalid, match="after"):
        analytics.roles(conn, DateRange(date(2025, 2, 1), date(2025, 1, 1)))
    with pytest.raises(Invalid, match="after until"):
        analytics.activity(conn, DateRange(date(2999, 1, 1), None))  # until: today
    with pytest.raises(Invalid, match="at most 3660"):
        analytics.registrations(conn, DateRange(date(2000, 1, 1), date(2025, 1, 1)))
    with pytest.raises(Invalid, match="years 1 to 9999"):
        analytics.registrations(conn, DateRange(date(9999, 12, 1), date(9999, 12, 31)), "month")
    with pytest.raises(Invalid, match="period"):
        analytics.registrations(conn, DateRange(), "fortnight")  # type: ignore[arg-type]
    # Long ranges are fine where the buckets are fewer.
    assert len(analytics.registrations(conn, DateRange(date(2000, 1, 1), None), "month").buckets)


# -- the summary counts stay exact ----------------------------------------------------------

SUMMARY = """
    SELECT kind, day, subject, status, level, band, sum(n), sum(xp) FROM (
        SELECT kind, day, subject, status, level, band, n, xp FROM analytics_count
        UNION ALL SELECT kind, day, subject, status, level, band, n, xp FROM analytics_delta) c
    GROUP BY 1, 2, 3, 4, 5, 6 HAVING sum(n) <> 0 OR sum(xp) <> 0 ORDER BY 1, 2, 3, 4, 5, 6"""


def assert_exact(conn: Conn) -> list[Any]:
    """The counts equal a recount from the tables (the rebuild, rolled back)."""
    kept = conn.execute(SUMMARY).fetchall()
    with pytest.raises(_Rollback), conn.transaction():
        conn.execute("SELECT smartstart_analytics_rebuild()")
        assert conn.execute(SUMMARY).fetchall() == kept
        raise _Rollback
    return kept


class _Rollback(Exception):
    pass


def test_counts_follow_raw_sql_of_every_kind(crafted: tuple[Conn, dict[str, str]]) -> None:
    conn, ids = crafted
    assert assert_exact(conn)
    statements = [
        # the guide's own statements
        "INSERT INTO \"User\" (id, email, username, password, role) VALUES ('user_123',"
        " 'guide@example.com', 'guide', '" + PW + "', 'MEMBER')",
        'INSERT INTO "UserRole" ("userId", "roleId") SELECT \'user_123\', id FROM "Role"'
        " WHERE name = 'MEMBER'",
        "UPDATE \"User\" SET status = 'SUSPENDED' WHERE email = 'u1@example.com'",
        'UPDATE "UserJourneyState" SET status = \'COMPLETED\' WHERE "userId" = \''
        + ids["u4"]
        + "'",
        # XP, level, registration day (moves roles and states), last activity
        'UPDATE "User" SET xp = xp + 450',
        'UPDATE "User" SET "createdAt" = "createdAt" - interval \'1 day\' WHERE username < \'u4\'',
        # every user in one statement, a few of them across midnight (the others stay)
        'UPDATE "User" SET "createdAt" = "createdAt" + interval \'3 hours\'',
        'UPDATE "User" SET "lastActive" = "lastActive" + interval \'2 days\'',
        "UPDATE \"User\" SET role = 'GUEST' WHERE username = 'u2'",
        "UPDATE \"Role\" SET name = 'MEMBERS' WHERE name = 'MEMBER'",
        "INSERT INTO \"User\" (email, username, password) VALUES ('up@example.com', 'u2', '"
        + PW
        + "') ON CONFLICT (username) DO UPDATE SET xp = 7, status = 'ACTIVE'",
        # secondary roles and states come and go; a state moves to another stage
        'DELETE FROM "UserRole" WHERE "userId" = \'' + ids["u3"] + '\' AND "roleId" = '
        "(SELECT id FROM \"Role\" WHERE name = 'GUEST')",
        'UPDATE "UserJourneyState" SET "stageId" = (SELECT id FROM "JourneyStage" WHERE name'
        " = 'Empty') WHERE status = 'NOT_STARTED'",
        "DELETE FROM \"UserJourneyState\" WHERE status = 'SKIPPED'",
        # a user deleted with everything that cascades
        "DELETE FROM \"User\" WHERE username IN ('u3', 'u8')",
        "SELECT smartstart_analytics_compact()",
        'TRUNCATE "UserRole"',  # the primary roles come back at once
    ]
    for statement in statements:
        conn.execute(statement)  # type: ignore[arg-type]
        assert_exact(conn)
    assert analytics.roles(conn).total == 7  # eight, one more from the guide, two deleted
    conn.execute('TRUNCATE "User" CASCADE')
    assert assert_exact(conn) == []
    assert analytics.registrations(conn, DateRange(date(2025, 1, 1), date(2025, 1, 2))).total == 0


def test_a_rolled_back_change_leaves_no_count(crafted: tuple[Conn, dict[str, str]]) -> None:
    conn, _ = crafted
    before = assert_exact(conn)
    with pytest.raises(_Rollback), conn.transaction():
        conn.execute('UPDATE "User" SET xp = 0')
        conn.execute("SELECT smartstart_analytics_compact()")
        raise _Rollback
    assert assert_exact(conn) == before


def test_concurrent_writers_of_one_count_do_not_wait_for_each_other(
    db_settings: Settings,
) -> None:
    # Two transactions change the same counts (users registered the same day, the same
    # stage and status) and one of them compacts: neither waits for the other (the lock
    # timeout would fail the second), and both are counted. (Registrations themselves
    # queue on rbac_version, bumped by every "UserRole" insert, not on these counts.)
    url = db_settings.url_for()
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute("INSERT INTO \"Role\" (name) VALUES ('MEMBER')")
        setup.execute(
            'INSERT INTO "JourneyStage" (name, "order", "xpReward") VALUES (\'S\', 1, 50)'
        )
        for name in ("a", "b"):
            setup.execute(
                'INSERT INTO "User" (email, username, password) VALUES (%s, %s, %s)',
                [f"{name}@example.com", name, PW],
            )

    def progress(conn: Conn, name: str) -> None:
        conn.execute(
            'INSERT INTO "UserJourneyState" ("userId", "stageId", status)'
            ' SELECT u.id, s.id, \'COMPLETED\' FROM "User" u, "JourneyStage" s'
            " WHERE u.username = %s",
            [name],
        )
        conn.execute(
            'UPDATE "User" SET "lastActive" = now() + interval \'1 day\' WHERE username = %s',
            [name],
        )

    with psycopg.connect(url) as a, psycopg.connect(url) as b:
        for conn in (a, b):
            conn.execute("SET lock_timeout = '2s'")
        progress(a, "a")
        a.execute("SELECT smartstart_analytics_compact()")
        done = threading.Event()

        def other() -> None:
            progress(b, "b")
            # Another transaction is compacting: this one skips it, without waiting.
            assert b.execute("SELECT smartstart_analytics_compact()").fetchone() == (0,)
            b.commit()
            done.set()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
        assert done.is_set()  # b committed while a still held its transaction open
        a.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        funnel = analytics.journey(conn).stages[0]
        assert (funnel.total, funnel.completed) == (2, 2)
        assert {lv.level: lv.users for lv in analytics.xp(conn).levels}["OWLET"] == 2
        assert analytics.xp(conn).levels[0].totalXp == 100
        assert_exact(conn)
