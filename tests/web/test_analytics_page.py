"""The Analytics page, the Overview's registrations chart and the Journeys funnel: charts
with known counts, tables, CSV, and bad input refused plainly."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.web.analytics import ANALYSES

Browse = Callable[..., dict[str, Any]]
SVG = "{http://www.w3.org/2000/svg}"


def bar_titles(html: str) -> list[str]:
    """The bars' tooltips ("label: value") of every chart on the page."""
    titles: list[str] = []
    for svg in re.findall(r"<svg .*?</svg>", html, re.S):
        root = ET.fromstring(svg)
        titles += [r.findtext(f"{SVG}title") or "" for r in root.iter(f"{SVG}rect")]
    return titles


@pytest.fixture
def crafted(
    browse_with: Callable[[set[str]], dict[str, Any]],
    db: psycopg.Connection[Any],
    make_user: Callable[..., Any],
) -> None:
    """Two users registered on 2020-01-01, one on 2020-01-02, none on 2020-01-03; the
    client signed in with analytics:read only."""
    browse_with({"analytics:read"})
    for day in ("2020-01-01", "2020-01-01", "2020-01-02"):
        user = make_user("MEMBER")
        db.execute(
            'UPDATE "User" SET "createdAt" = %s::timestamptz + interval \'12 hours\' WHERE id = %s',
            [day, user["id"]],
        )


@pytest.mark.usefixtures("crafted")
def test_registrations_chart_table_and_csv_have_the_known_counts(client: TestClient) -> None:
    query = "since=2020-01-01&until=2020-01-03&period=day"
    page = client.get(f"/analytics?analysis=registrations&{query}")
    assert page.status_code == 200, page.text
    assert bar_titles(page.text) == ["01-01: 2", "01-02: 1", "01-03: 0"]
    assert 'href="/analytics/registrations.csv?period=day&amp;since=2020-01-01' in page.text
    got = client.get(f"/analytics/registrations.csv?{query}")
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(got.text)))
    assert rows[0] == ["start", "end", "users", "cumulative"]
    assert [r[:3] for r in rows[1:]] == [
        ["2020-01-01", "2020-01-01", "2"],
        ["2020-01-02", "2020-01-02", "1"],
        ["2020-01-03", "2020-01-03", "0"],
    ]
    assert [int(r[3]) for r in rows[1:]] == [2, 3, 3]  # nobody registered before 2020
    weekly = client.get(
        "/analytics/registrations.csv?since=2020-01-01&until=2020-01-03&period=week"
    )
    # 2020-01-01 is a Wednesday: its week starts on Monday 2019-12-30.
    assert list(csv.reader(io.StringIO(weekly.text)))[1][:3] == ["2019-12-30", "2020-01-05", "3"]


@pytest.mark.usefixtures("crafted")
def test_the_cohort_analyses_count_the_crafted_users(client: TestClient) -> None:
    window = "since=2020-01-01&until=2020-01-03"
    status = list(csv.reader(io.StringIO(client.get(f"/analytics/status.csv?{window}").text)))
    assert ["ACTIVE", "3", "100"] in status
    roles = client.get(f"/analytics?analysis=roles&{window}")
    assert "MEMBER: 3" in bar_titles(roles.text)
    xp = list(csv.reader(io.StringIO(client.get(f"/analytics/xp.csv?{window}").text)))
    assert ["band", "0-99", "3", "100", ""] in xp


@pytest.mark.parametrize("name", list(ANALYSES))
def test_every_analysis_renders_a_chart_and_a_table(
    client: TestClient, browse: Browse, name: str
) -> None:
    browse("SUPER_ADMIN")
    r = client.get(f"/analytics?analysis={name}")
    assert r.status_code == 200, r.text
    assert "<svg" in r.text and "<table>" in r.text
    assert 'aria-current="page">' + ANALYSES[name][0] in r.text
    assert client.get(f"/analytics/{name}.csv").status_code == 200


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("since=2020-02-01&until=2020-01-01", 422, "is after until"),
        ("since=yesterday", 422, "since must be a date"),
        ("since=2020-01-01%00", 422, "NUL"),  # refused by the app before any page
        ("until=" + "9" * 60_000, 422, "until must be a date"),  # near httpx's URL limit
        ("period=year", 422, "period must be one of"),
        ("period=day&since=1900-01-01&until=2020-01-01", 422, "at most"),
        ("analysis=nope", 404, "no analysis"),
    ],
)
def test_bad_input_is_a_clear_error_page(
    client: TestClient, browse: Browse, query: str, status: int, message: str
) -> None:
    browse("SUPER_ADMIN")
    r = client.get(f"/analytics?{query}")
    assert r.status_code == status
    assert message in r.text


def test_the_csv_is_refused_without_analytics_read(
    client: TestClient, browse_with: Callable[[set[str]], dict[str, Any]]
) -> None:
    browse_with({"users:read"})
    r = client.get("/analytics/roles.csv")
    assert r.status_code == 403
    assert "analytics:read" in r.text


def test_the_overview_charts_registrations_and_counts_from_analytics(
    client: TestClient, browse: Browse, make_user: Callable[..., Any], db: psycopg.Connection[Any]
) -> None:
    browse("SUPER_ADMIN")
    before = client.get("/admin").text
    make_user("MEMBER")
    make_user("MEMBER", status="SUSPENDED")
    after = client.get("/admin").text
    today = bar_titles(before)[-1].split(":")[0]
    assert len(bar_titles(after)) == 30
    assert bar_titles(after)[-1] == f"{today}: {int(bar_titles(before)[-1].split(': ')[1]) + 2}"
    total = db.execute('SELECT count(*) FROM "User"').fetchone()
    assert total is not None
    assert f'id="users-total">{total[0]:,}<' in after


def test_the_journeys_funnel_counts_completed_states(
    client: TestClient, browse: Browse, make_user: Callable[..., Any], db: psycopg.Connection[Any]
) -> None:
    browse("SUPER_ADMIN")
    stage = db.execute('SELECT id, name FROM "JourneyStage" ORDER BY "order" LIMIT 1').fetchone()
    assert stage is not None
    before = [t for t in bar_titles(client.get("/admin/journeys").text) if t.startswith(stage[1])]
    assert len(before) == 1
    for _ in range(2):
        user = make_user("MEMBER")
        db.execute(
            'INSERT INTO "UserJourneyState" ("userId", "stageId", status, "startedAt",'
            " \"completedAt\") VALUES (%s, %s, 'COMPLETED', now() - interval '1 hour', now())"
            ' ON CONFLICT ("userId", "stageId") DO UPDATE SET status = \'COMPLETED\','
            ' "startedAt" = now() - interval \'1 hour\', "completedAt" = now()',
            [user["id"], stage[0]],
        )
    after = [t for t in bar_titles(client.get("/admin/journeys").text) if t.startswith(stage[1])]
    n = int(before[0].rsplit(": ", 1)[1])
    assert after == [f"{stage[1]}: {n + 2}"]
