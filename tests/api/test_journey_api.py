"""/api/journey/... and /api/users/{id}/journey."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

Conn = psycopg.Connection[Any]
ADMIN = "admin@alicesolutionsgroup.com"


def stage_ids(db: Conn) -> dict[str, str]:
    return dict(db.execute('SELECT name, id FROM "JourneyStage"').fetchall())


def audit_count(db: Conn, action: str | None = None) -> int:
    if action is None:
        row = db.execute("SELECT count(*) FROM audit_log WHERE action <> 'authz.denied'")
    else:
        row = db.execute("SELECT count(*) FROM audit_log WHERE action = %s", [action])
    return int(row.fetchone()[0])  # type: ignore[index]


def xp_of(db: Conn, user_id: str) -> int:
    return int(db.execute('SELECT xp FROM "User" WHERE id = %s', [user_id]).fetchone()[0])  # type: ignore[index]


@pytest.fixture
def stages(db: Conn) -> dict[str, str]:
    return stage_ids(db)


# -- stages -------------------------------------------------------------------------------


def test_members_read_stages(client: TestClient, make_user: Any) -> None:
    member = make_user("MEMBER")
    resp = client.get("/api/journey/stages", headers=member["headers"])
    assert resp.status_code == 200
    body = resp.json()
    assert [s["order"] for s in body["items"]] == list(range(1, 9))
    assert body["next_cursor"] is None
    assert body["items"][0]["name"] == "Welcome"


def test_stage_listing_pages(client: TestClient, admin_headers: dict[str, str]) -> None:
    first = client.get("/api/journey/stages", params={"limit": 3}, headers=admin_headers).json()
    assert [s["order"] for s in first["items"]] == [1, 2, 3]
    nxt = client.get(
        "/api/journey/stages",
        params={"limit": 3, "cursor": first["next_cursor"]},
        headers=admin_headers,
    ).json()
    assert [s["order"] for s in nxt["items"]] == [4, 5, 6]
    bad = client.get("/api/journey/stages", params={"cursor": "1 OR 1=1"}, headers=admin_headers)
    assert bad.status_code == 422


def test_inactive_stages_listed_only_for_managers(
    client: TestClient, admin_headers: dict[str, str], make_user: Any, stages: dict[str, str]
) -> None:
    resp = client.patch(
        f"/api/journey/stages/{stages['Mentorship']}",
        json={"active": False},
        headers=admin_headers,
    )
    assert resp.status_code == 200 and resp.json()["active"] is False
    member = make_user("MEMBER")
    names = [
        s["name"]
        for s in client.get("/api/journey/stages", headers=member["headers"]).json()["items"]
    ]
    assert "Mentorship" not in names
    denied = client.get(
        "/api/journey/stages", params={"include_inactive": True}, headers=member["headers"]
    )
    assert denied.status_code == 403
    every = client.get(
        "/api/journey/stages", params={"include_inactive": True}, headers=admin_headers
    ).json()["items"]
    assert every[-1]["name"] == "Mentorship"


def test_stage_crud_audits_each_write_once(
    client: TestClient, admin_headers: dict[str, str], db: Conn
) -> None:
    created = client.post(
        "/api/journey/stages",
        json={"name": "Graduation", "xpReward": 400, "description": "The end"},
        headers=admin_headers,
    )
    assert created.status_code == 201, created.text
    stage = created.json()
    assert (stage["order"], stage["xpReward"], stage["active"]) == (9, 400, True)
    assert audit_count(db) == 1

    got = client.get(f"/api/journey/stages/{stage['id']}", headers=admin_headers)
    assert got.json()["description"] == "The end"

    updated = client.patch(
        f"/api/journey/stages/{stage['id']}",
        json={"name": "Graduation Day", "description": None},
        headers=admin_headers,
    )
    assert updated.status_code == 200
    assert (updated.json()["name"], updated.json()["description"]) == ("Graduation Day", None)
    assert audit_count(db, "journey_stage.update") == 1

    deleted = client.delete(f"/api/journey/stages/{stage['id']}", headers=admin_headers)
    assert deleted.status_code == 204 and deleted.content == b""
    assert audit_count(db, "journey_stage.delete") == 1
    assert audit_count(db) == 3
    gone = client.get(f"/api/journey/stages/{stage['id']}", headers=admin_headers)
    assert gone.status_code == 404


def test_stage_conflicts_name_the_field(
    client: TestClient, admin_headers: dict[str, str], stages: dict[str, str], db: Conn
) -> None:
    dup = client.post("/api/journey/stages", json={"name": "Welcome"}, headers=admin_headers)
    assert dup.status_code == 409
    assert dup.json()["error"]["details"]["field"] == "name"
    taken = client.patch(
        f"/api/journey/stages/{stages['Welcome']}", json={"order": 2}, headers=admin_headers
    )
    assert taken.status_code == 409
    assert taken.json()["error"]["details"]["field"] == "order"
    assert audit_count(db) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 101},
        {"name": "Ok", "xpReward": -5},
        {"name": "Ok", "order": 0},
        {"name": "Ok", "order": "first"},
        {"name": "Ok", "colour": "red"},
        {"name": 'Robert\'); DROP TABLE "JourneyStage";--', "xpReward": 10**12},
    ],
)
def test_bad_stage_bodies_are_422(
    client: TestClient, admin_headers: dict[str, str], body: dict[str, Any]
) -> None:
    resp = client.post("/api/journey/stages", json=body, headers=admin_headers)
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid"


def test_patch_refuses_null_for_required_fields(
    client: TestClient, admin_headers: dict[str, str], stages: dict[str, str]
) -> None:
    resp = client.patch(
        f"/api/journey/stages/{stages['Welcome']}", json={"name": None}, headers=admin_headers
    )
    assert resp.status_code == 422


def test_deleting_a_stage_with_history_is_409_suggesting_deactivate(
    client: TestClient, admin_headers: dict[str, str], stages: dict[str, str]
) -> None:
    resp = client.delete(f"/api/journey/stages/{stages['Welcome']}", headers=admin_headers)
    assert resp.status_code == 409
    assert resp.json()["error"]["details"]["suggestion"] == "deactivate"


def test_reorder_swaps_two_stages(
    client: TestClient, admin_headers: dict[str, str], stages: dict[str, str], db: Conn
) -> None:
    items = client.get("/api/journey/stages", headers=admin_headers).json()["items"]
    ids = [s["id"] for s in items]
    ids[0], ids[1] = ids[1], ids[0]
    resp = client.put("/api/journey/stages/order", json={"stage_ids": ids}, headers=admin_headers)
    assert resp.status_code == 200, resp.text
    assert [s["id"] for s in resp.json()["items"]] == ids
    assert [s["order"] for s in resp.json()["items"]] == list(range(1, 9))
    assert resp.json()["items"][0]["name"] == "Email Verification"
    assert audit_count(db, "journey_stage.reorder") == 1 and audit_count(db) == 1
    missing = client.put(
        "/api/journey/stages/order", json={"stage_ids": ids[1:]}, headers=admin_headers
    )
    assert missing.status_code == 422
    assert missing.json()["error"]["details"]["missing"] == [ids[0]]


# -- permissions ----------------------------------------------------------------------------


def _manage_calls(stages: dict[str, str], user_id: str) -> list[tuple[str, str, Any]]:
    sid = stages["Welcome"]
    return [
        ("POST", "/api/journey/stages", {"name": "Sneaky"}),
        ("PATCH", f"/api/journey/stages/{sid}", {"xpReward": 9999}),
        ("DELETE", f"/api/journey/stages/{sid}", None),
        ("PUT", "/api/journey/stages/order", {"stage_ids": [sid]}),
        ("POST", f"/api/users/{user_id}/journey/{sid}/complete", None),
    ]


def test_members_are_forbidden_journey_manage(
    client: TestClient, make_user: Any, stages: dict[str, str], db: Conn
) -> None:
    member = make_user("MEMBER")
    for method, url, body in _manage_calls(stages, member["id"]):
        resp = client.request(method, url, json=body, headers=member["headers"])
        assert resp.status_code == 403, (method, url, resp.text)
        assert resp.json()["error"]["details"] == {
            "permission": "journey:manage",
            "reason": "missing",
        }
    assert audit_count(db) == 0  # only the denials were recorded
    assert xp_of(db, member["id"]) == 0


def test_without_a_session_everything_is_401(client: TestClient, stages: dict[str, str]) -> None:
    sid = stages["Welcome"]
    for method, url in [
        ("GET", "/api/journey/stages"),
        ("GET", "/api/journey/me"),
        ("POST", f"/api/journey/me/stages/{sid}/start"),
        ("GET", "/api/users/someone/journey"),
    ]:
        assert client.request(method, url).status_code == 401, url


def test_a_guest_reads_others_journeys_only_with_journey_read(
    client: TestClient, make_user: Any, db: Conn
) -> None:
    # GUEST holds journey:read; a role without it is refused.
    db.execute("INSERT INTO \"Role\" (name) VALUES ('NOBODY')")
    target = make_user("MEMBER")
    guest = make_user("GUEST")
    nobody = make_user("NOBODY")
    url = f"/api/users/{target['id']}/journey"
    assert client.get(url, headers=guest["headers"]).status_code == 200
    denied = client.get(url, headers=nobody["headers"])
    assert denied.status_code == 403
    assert denied.json()["error"]["details"] == {"permission": "journey:read", "reason": "missing"}


# -- one's own journey ----------------------------------------------------------------------


def test_a_member_walks_their_own_journey(
    client: TestClient, make_user: Any, stages: dict[str, str], db: Conn
) -> None:
    member = make_user("MEMBER")
    h = member["headers"]
    mine = client.get("/api/journey/me", headers=h).json()
    assert mine["user"]["id"] == member["id"]
    assert (mine["completed"], mine["total"]) == (0, 8)
    assert {s["status"] for s in mine["stages"]} == {"NOT_STARTED"}

    started = client.post(f"/api/journey/me/stages/{stages['Welcome']}/start", headers=h)
    assert started.status_code == 200, started.text
    assert (started.json()["status"], started.json()["changed"]) == ("IN_PROGRESS", True)

    done = client.post(f"/api/journey/me/stages/{stages['Welcome']}/complete", headers=h)
    body = done.json()
    assert done.status_code == 200
    assert (body["status"], body["xpAwarded"], body["xp"], body["level"]) == (
        "COMPLETED",
        10,
        10,
        "OWLET",
    )
    assert xp_of(db, member["id"]) == 10

    skipped = client.post(f"/api/journey/me/stages/{stages['Email Verification']}/skip", headers=h)
    assert skipped.json()["status"] == "SKIPPED"
    nxt = client.post(f"/api/journey/me/stages/{stages['Profile Setup']}/complete", headers=h)
    assert nxt.json()["xpAwarded"] == 50

    for action in ("journey.start", "journey.complete", "journey.skip"):
        expected = 2 if action == "journey.complete" else 1
        assert audit_count(db, action) == expected, action
    row = db.execute(
        "SELECT actor, \"resourceId\" FROM audit_log WHERE action = 'journey.skip'"
    ).fetchone()
    assert row == (member["id"], member["id"])

    mine = client.get("/api/journey/me", headers=h).json()
    assert [s["status"] for s in mine["stages"][:3]] == ["COMPLETED", "SKIPPED", "COMPLETED"]
    assert mine["completed"] == 2 and mine["user"]["xp"] == 60


def test_completion_rule_is_409_with_a_clear_message(
    client: TestClient, make_user: Any, stages: dict[str, str], db: Conn
) -> None:
    member = make_user("MEMBER")
    resp = client.post(
        f"/api/journey/me/stages/{stages['Profile Setup']}/complete", headers=member["headers"]
    )
    assert resp.status_code == 409
    err = resp.json()["error"]
    assert err["code"] == "conflict"
    assert "start it first" in err["message"]
    assert err["details"]["reason"] == "previous_stage_not_done"
    assert audit_count(db) == 0


def test_completing_twice_awards_once_and_audits_once(
    client: TestClient, make_user: Any, stages: dict[str, str], db: Conn
) -> None:
    member = make_user("MEMBER")
    url = f"/api/journey/me/stages/{stages['Welcome']}/complete"
    first = client.post(url, headers=member["headers"]).json()
    second = client.post(url, headers=member["headers"])
    assert second.status_code == 200
    assert (first["xpAwarded"], second.json()["xpAwarded"]) == (10, 0)
    assert second.json()["changed"] is False
    assert xp_of(db, member["id"]) == 10
    assert audit_count(db, "journey.complete") == 1


def test_guide_raw_update_after_api_complete_awards_nothing_more(
    client: TestClient, admin_headers: dict[str, str], stages: dict[str, str], db: Conn
) -> None:
    admin_id = db.execute('SELECT id FROM "User" WHERE email = %s', [ADMIN]).fetchone()[0]  # type: ignore[index]
    xp = xp_of(db, admin_id)
    resp = client.post(
        f"/api/journey/me/stages/{stages['Profile Setup']}/complete", headers=admin_headers
    )
    assert resp.json()["xpAwarded"] == 50 and resp.json()["xp"] == xp + 50
    db.execute(
        'UPDATE "UserJourneyState" SET status = \'COMPLETED\', "completedAt" = NOW()'
        ' WHERE "userId" = (SELECT id FROM "User" WHERE email = \'admin@alicesolutionsgroup.com\')'
        ' AND "stageId" = (SELECT id FROM "JourneyStage" WHERE name = \'Profile Setup\')'
    )
    assert xp_of(db, admin_id) == xp + 50


# -- other users' journeys ------------------------------------------------------------------


def test_admin_sets_a_users_progress_and_levels_follow(
    client: TestClient, admin_headers: dict[str, str], make_user: Any, db: Conn
) -> None:
    member = make_user("MEMBER")
    base = f"/api/users/{member['id']}/journey"
    levels = []
    for stage in client.get("/api/journey/stages", headers=admin_headers).json()["items"]:
        resp = client.post(f"{base}/{stage['id']}/complete", headers=admin_headers)
        assert resp.status_code == 200, resp.text
        levels.append((resp.json()["xp"], resp.json()["level"]))
    assert [lvl for _, lvl in levels] == [
        "OWLET",
        "OWLET",
        "OWLET",
        "FLEDGLING",  # 155 >= 100
        "FLEDGLING",
        "NIGHT_OWL",  # 505 >= 500
        "NIGHT_OWL",
        "WISE_OWL",  # 1055 >= 1000
    ]
    journey = client.get(base, headers=admin_headers).json()
    assert journey["completed"] == 8 and journey["user"]["level"] == "WISE_OWL"
    admin_id = db.execute('SELECT id FROM "User" WHERE email = %s', [ADMIN]).fetchone()[0]  # type: ignore[index]
    actors = db.execute(
        "SELECT DISTINCT actor FROM audit_log WHERE action = 'journey.complete'"
    ).fetchall()
    assert actors == [(admin_id,)]
    assert audit_count(db, "journey.complete") == 8


def test_unknown_ids_are_404_never_500(
    client: TestClient, admin_headers: dict[str, str], make_user: Any, stages: dict[str, str]
) -> None:
    member = make_user("MEMBER")
    sid = stages["Welcome"]
    for method, url in [
        ("GET", "/api/journey/stages/no-such-stage"),
        ("PATCH", "/api/journey/stages/no-such-stage"),
        ("DELETE", "/api/journey/stages/no-such-stage"),
        ("GET", "/api/users/no-such-user/journey"),
        ("POST", f"/api/users/no-such-user/journey/{sid}/start"),
        ("POST", f"/api/users/{member['id']}/journey/no-such-stage/complete"),
        ("POST", "/api/journey/me/stages/no-such-stage/skip"),
        ("GET", "/api/journey/stages/%27%3B%20DROP%20TABLE%20x%3B--"),
    ]:
        body = {"name": "X"} if method == "PATCH" else None
        resp = client.request(method, url, json=body, headers=admin_headers)
        assert resp.status_code == 404, (method, url, resp.text)
        assert resp.json()["error"]["code"] == "not_found"
    too_long = client.get(f"/api/journey/stages/{'x' * 500}", headers=admin_headers)
    assert too_long.status_code == 422
    nul = client.get("/api/journey/stages/a%00b", headers=admin_headers)
    assert nul.status_code == 422  # refused at the edge, like a NUL anywhere
    bad_action = client.post(f"/api/journey/me/stages/{sid}/finish", headers=admin_headers)
    assert bad_action.status_code == 422


def test_inactive_stage_takes_no_progress(
    client: TestClient, admin_headers: dict[str, str], make_user: Any, stages: dict[str, str]
) -> None:
    sid = stages["Welcome"]
    client.patch(f"/api/journey/stages/{sid}", json={"active": False}, headers=admin_headers)
    member = make_user("MEMBER")
    resp = client.post(f"/api/journey/me/stages/{sid}/start", headers=member["headers"])
    assert resp.status_code == 409
    assert resp.json()["error"]["details"]["reason"] == "inactive"
