"""/api/admin/db/…: health (the CLI's result), stats and history, live queries, cancel and
terminate (audited, refusals), explain (rolled back), and /metrics' health gauges."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from smartstart import health
from smartstart.api.app import create_app
from smartstart.api.healthmetrics import cache_path
from smartstart.cli.main import app as cli
from smartstart.config import Settings
from smartstart.domain import statshistory
from tests.test_queries import sleeping

BASE = "/api/admin/db"


def test_health_is_the_clis_result(
    client: TestClient,
    admin_headers: dict[str, str],
    db: psycopg.Connection[Any],
    seeded_settings: Settings,
    cli_env: Any,
) -> None:
    db.execute("CREATE SEQUENCE s MAXVALUE 100")
    db.execute("SELECT setval('s', 95)")
    one = client.get(f"{BASE}/health/sequences", headers=admin_headers)
    assert one.status_code == 200, one.text
    body = one.json()
    assert (body["check"], body["state"], body["metric"]) == ("sequences", "CRIT", 95.0)
    cli_env(seeded_settings)
    printed = CliRunner().invoke(cli, ["db", "health", "--json", "--check", "sequences"])
    (item,) = json.loads(printed.output)["items"]
    assert {k: v for k, v in body.items() if k != "seconds"} == {
        k: v for k, v in item.items() if k != "seconds"
    }
    every = client.get(f"{BASE}/health", headers=admin_headers)
    assert every.status_code == 200
    report = every.json()
    assert report["worst"] == "CRIT" and report["next_cursor"] is None
    assert len(report["items"]) == len(health.CHECKS)
    some = client.get(
        f"{BASE}/health", params={"check": ["wraparound", "bloat"]}, headers=admin_headers
    )
    assert [i["check"] for i in some.json()["items"]] == ["wraparound", "bloat"]


def test_health_bad_input(client: TestClient, admin_headers: dict[str, str]) -> None:
    missing = client.get(f"{BASE}/health/nope", headers=admin_headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    for params in ({"check": "nope"}, {"check": "\x00"}, {"check": "x" * 10_000}):
        bad = client.get(f"{BASE}/health", params=params, headers=admin_headers)
        assert bad.status_code in (414, 422), bad.status_code
        if bad.status_code == 422:
            assert bad.json()["error"]["code"] in ("invalid", "validation_error")
    slow = client.get(f"{BASE}/health", params={"timeout": 0}, headers=admin_headers)
    assert slow.status_code == 422


def test_stats_and_changes(
    client: TestClient, admin_headers: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    report = client.get(f"{BASE}/stats", params={"limit": 5}, headers=admin_headers)
    assert report.status_code == 200, report.text
    data = report.json()
    assert len(data["table_sizes"]) == 5
    assert {"schema", "table", "total_bytes", "size"} <= set(data["table_sizes"][0])
    assert data["slow_queries"]["unavailable"] is None
    none_yet = client.get(
        f"{BASE}/stats/changes", params={"since": "2020-01-01T00:00:00Z"}, headers=admin_headers
    )
    assert none_yet.status_code == 404
    statshistory.take_snapshot(db)
    db.execute("CREATE TABLE grows AS SELECT generate_series(1, 20000) AS a")
    changed = client.get(
        f"{BASE}/stats/changes", params={"since": "2020-01-01T00:00:00Z"}, headers=admin_headers
    )
    assert changed.status_code == 200, changed.text
    tables = changed.json()["tables"]
    assert tables[0]["table"] == "grows" and tables[0]["schema"] == "public"
    assert tables[0]["grew_bytes"] > 500_000
    bad = client.get(
        f"{BASE}/stats/changes", params={"since": "yesterdayish"}, headers=admin_headers
    )
    assert bad.status_code == 422


def test_queries_cancel_and_terminate(
    client: TestClient,
    admin_headers: dict[str, str],
    db: psycopg.Connection[Any],
    seeded_settings: Settings,
) -> None:
    with sleeping(seeded_settings) as pid:
        listed = client.get(f"{BASE}/queries", headers=admin_headers)
        assert listed.status_code == 200
        mine = [q for q in listed.json()["items"] if q["pid"] == pid]
        assert mine and mine[0]["application"] == "sleeper" and mine[0]["state"] == "active"
        assert listed.json()["note"] is None
        cancelled = client.post(f"{BASE}/queries/{pid}/cancel", headers=admin_headers)
        assert cancelled.status_code == 200, cancelled.text
        assert "pg_sleep" in cancelled.json()["session"]["query"]
    with sleeping(seeded_settings) as pid:
        done = client.post(f"{BASE}/queries/{pid}/terminate", headers=admin_headers)
        assert done.status_code == 200, done.text
    rows = db.execute(
        "SELECT action, actor, \"resourceId\" FROM audit_log WHERE action LIKE 'db.%' ORDER BY id"
    ).fetchall()
    admin = db.execute(
        "SELECT id FROM \"User\" WHERE email = 'admin@alicesolutionsgroup.com'"
    ).fetchone()
    assert [(a, actor) for a, actor, _ in rows] == [
        ("db.cancel", admin and admin[0]),
        ("db.terminate", admin and admin[0]),
    ]
    # Refused: another database's session, one that does not exist, and no pid at all.
    with sleeping(seeded_settings, dbname="postgres") as pid:
        other = client.post(f"{BASE}/queries/{pid}/terminate", headers=admin_headers)
        assert other.status_code == 409
        assert other.json()["error"]["details"]["reason"] == "other_database"
    gone = client.post(f"{BASE}/queries/2147483000/cancel", headers=admin_headers)
    assert gone.status_code == 404
    for bad in ("0", "-1", "2147483648", "abc"):
        assert client.post(f"{BASE}/queries/{bad}/cancel", headers=admin_headers).status_code == 422
    assert db.execute("SELECT count(*) FROM audit_log WHERE action LIKE 'db.%'").fetchone() == (2,)


def test_cancel_needs_db_admin_and_the_denial_is_audited(
    client: TestClient,
    make_user: Callable[..., dict[str, Any]],
    db: psycopg.Connection[Any],
    seeded_settings: Settings,
) -> None:
    admin = make_user("ADMIN")  # db:read, not db:admin
    with sleeping(seeded_settings) as pid:
        assert client.get(f"{BASE}/queries", headers=admin["headers"]).status_code == 200
        denied = client.post(f"{BASE}/queries/{pid}/terminate", headers=admin["headers"])
        assert denied.status_code == 403
        state = db.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
        assert state == ("active",)
    assert db.execute(
        "SELECT count(*) FROM audit_log WHERE action = 'authz.denied' AND actor = %s", [admin["id"]]
    ).fetchone() == (1,)


def test_explain_rolls_back_and_refuses_bad_sql(
    client: TestClient, admin_headers: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    body = {"sql": """INSERT INTO "Role" (name) VALUES ('VIA_API')""", "analyze": True}
    done = client.post(f"{BASE}/explain", json=body, headers=admin_headers)
    assert done.status_code == 200, done.text
    assert done.json()["analyzed"] is True and done.json()["text"][0].startswith("Insert on")
    assert db.execute("SELECT 1 FROM \"Role\" WHERE name = 'VIA_API'").fetchone() is None
    for sql_text in ("SELECT 1; SELECT 2", "SELECT 1; COMMIT", "SELEC", "SELECT '\x00'", "   "):
        bad = client.post(f"{BASE}/explain", json={"sql": sql_text}, headers=admin_headers)
        assert bad.status_code == 422, (sql_text, bad.text)
        assert bad.json()["error"]["message"]
    huge = client.post(f"{BASE}/explain", json={"sql": "x" * 200_000}, headers=admin_headers)
    assert huge.status_code in (413, 422)


def test_metrics_health_gauges_come_from_the_background(
    seeded_settings: Settings, admin_headers: dict[str, str]
) -> None:
    settings = seeded_settings.model_copy(update={"health_metrics_seconds": 1.0})
    cache_path(settings).unlink(missing_ok=True)

    def gauges(text: str) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            if family.name.startswith("smartstart_db_health"):
                for s in family.samples:
                    out.setdefault(s.name, {})[s.labels.get("check", "")] = s.value
        return out

    with TestClient(create_app(settings)) as c:
        first = c.get("/metrics")
        assert first.status_code == 200
        # The first scrape only starts the run: it never waits for the checks.
        deadline = time.monotonic() + 30
        while not cache_path(settings).exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        found = gauges(c.get("/metrics").text)
    assert found["smartstart_db_health_state"]["sequences"] == 0.0
    assert found["smartstart_db_health_state"]["users_without_primary_role"] == 0.0
    assert found["smartstart_db_health_value"]["super_admins"] == 1.0
    assert found["smartstart_db_health_age_seconds"][""] >= 0
    off = seeded_settings.model_copy(update={"health_metrics_seconds": 0.0})
    with TestClient(create_app(off)) as c:
        assert gauges(c.get("/metrics").text) == {}
