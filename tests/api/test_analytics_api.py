"""GET /api/analytics/…: the domain's analyses over HTTP, `analytics:read`, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

ANALYSES = ("registrations", "activity", "roles", "xp", "journey", "status")


def test_a_guest_is_refused_and_the_denial_recorded(
    client: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    guest = make_user("GUEST")
    resp = client.get("/api/analytics/roles", headers=guest["headers"])
    assert resp.status_code == 403
    assert resp.json()["error"]["details"] == {"permission": "analytics:read", "reason": "missing"}
    row = db.execute(
        "SELECT \"resourceId\" FROM audit_log WHERE action = 'authz.denied' AND actor = %s",
        [guest["id"]],
    ).fetchone()
    assert row == ("analytics:read",)


def test_registrations_count_today_s_sign_up(
    client: TestClient, admin_headers: dict[str, str], make_user: Any
) -> None:
    today = datetime.now(UTC).date()
    before = client.get("/api/analytics/registrations", headers=admin_headers).json()
    make_user("MEMBER")
    after = client.get("/api/analytics/registrations", headers=admin_headers).json()
    assert after["period"] == "day"
    assert after["until"] == today.isoformat()
    assert after["since"] == (today - timedelta(days=29)).isoformat()
    assert len(after["buckets"]) == 30
    assert after["buckets"][-1]["users"] == before["buckets"][-1]["users"] + 1
    assert after["buckets"][-1]["cumulative"] == after["before"] + after["total"]
    weeks = client.get(
        "/api/analytics/registrations", params={"period": "week"}, headers=admin_headers
    ).json()
    assert (
        len(weeks["buckets"]) == 12
        and weeks["total"] == after["total"] + after["before"] - (weeks["before"])
    )


def test_every_analysis_answers_for_a_member(client: TestClient, make_user: Any) -> None:
    member = make_user("MEMBER")  # MEMBER holds analytics:read (docs/rbac.md)
    for name in ANALYSES:
        resp = client.get(f"/api/analytics/{name}", headers=member["headers"])
        assert resp.status_code == 200, (name, resp.text)
    roles = client.get("/api/analytics/roles", headers=member["headers"]).json()
    assert {r["name"] for r in roles["primary"]} >= {"SUPER_ADMIN", "MEMBER", "GUEST"}
    funnel = client.get("/api/analytics/journey", headers=member["headers"]).json()
    assert [s["order"] for s in funnel["stages"]] == sorted(s["order"] for s in funnel["stages"])
    for stage in funnel["stages"]:
        assert (stage["completionRate"] is None) == (stage["total"] == 0)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"since": "2025-02-01", "until": "2025-01-01"}, "after"),
        ({"since": "2000-01-01", "until": "2025-01-01"}, "at most"),
        ({"since": "yesterday"}, "date"),
        ({"since": "2025-02-30"}, "date"),
        ({"until": "2025-01-01\x00"}, "nul"),
        ({"since": "9" * 60_000}, "date"),  # as long as a client will send
        ({"period": "fortnight"}, "day"),
    ],
)
def test_bad_input_is_a_clear_422(
    client: TestClient, admin_headers: dict[str, str], params: dict[str, str], fragment: str
) -> None:
    resp = client.get("/api/analytics/registrations", params=params, headers=admin_headers)
    assert resp.status_code == 422, resp.text[:500]
    error = resp.json()["error"]
    assert error["code"] == "invalid"
    assert fragment in (error["message"] + str(error["details"])).lower()


def test_cohort_ranges_are_checked_too(client: TestClient, admin_headers: dict[str, str]) -> None:
    for name in ("roles", "xp", "journey", "status"):
        resp = client.get(
            f"/api/analytics/{name}",
            params={"since": "2025-02-01", "until": "2025-01-01"},
            headers=admin_headers,
        )
        assert resp.status_code == 422, name
        ok = client.get(
            f"/api/analytics/{name}",
            params={"since": "2000-01-01", "until": "2100-01-01"},
            headers=admin_headers,
        )
        assert ok.status_code == 200, name
