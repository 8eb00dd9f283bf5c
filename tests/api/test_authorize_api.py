"""authorize() through the API: denials audited whatever refuses, the outranked rule on
every write (XP, reputation, journeys, password resets), one's own password, the
journey's privacy, and users/roles/stages named by id, email, username or name."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

Conn = psycopg.Connection[Any]
ADMIN_EMAIL = "admin@alicesolutionsgroup.com"


def user_row(db: Conn, ref: str) -> tuple[Any, ...]:
    row = db.execute(
        'SELECT id, xp, reputation, password FROM "User" WHERE email = %s OR id = %s',
        [ref, ref],
    ).fetchone()
    assert row is not None
    return tuple(row)


def denials(db: Conn) -> list[tuple[str | None, str | None, str | None]]:
    """(actor, resourceId, reason) of every authz.denied row, oldest first."""
    return [
        (r[0], r[1], r[2])
        for r in db.execute(
            "SELECT actor, \"resourceId\", details->>'reason' FROM audit_log"
            " WHERE action = 'authz.denied' ORDER BY id"
        )
    ]


# -- denials are audited, whatever refuses ----------------------------------------------


def test_an_outranked_refusal_is_audited(client: TestClient, make_user: Any, db: Conn) -> None:
    admin = make_user("ADMIN")
    super_id = user_row(db, ADMIN_EMAIL)[0]
    resp = client.patch(f"/api/users/{super_id}", json={"name": "x"}, headers=admin["headers"])
    assert resp.status_code == 403
    assert resp.json()["error"]["details"]["reason"] == "outranked"
    # the request rolled back; the denial, recorded apart, stayed
    assert denials(db) == [(admin["id"], "users:write", "outranked")]


def test_listing_inactive_stages_without_journey_manage_is_audited(
    client: TestClient, make_user: Any, db: Conn
) -> None:
    member = make_user("MEMBER")
    resp = client.get("/api/journey/stages?include_inactive=true", headers=member["headers"])
    assert resp.status_code == 403
    assert resp.json()["error"]["details"]["permission"] == "journey:manage"
    assert denials(db) == [(member["id"], "journey:manage", "missing")]


# -- the outranked rule on XP, reputation and journeys ------------------------------------

COUNTER_WRITES = [
    ("POST", "xp", {"amount": 5, "reason": "r"}),
    ("PUT", "xp", {"xp": 5}),
    ("POST", "reputation", {"amount": 5, "reason": "r"}),
    ("PUT", "reputation", {"reputation": 5}),
]


@pytest.mark.parametrize(("method", "what", "body"), COUNTER_WRITES)
def test_a_moderator_cannot_change_a_super_admins_xp_or_reputation(
    client: TestClient, make_user: Any, db: Conn, method: str, what: str, body: dict[str, Any]
) -> None:
    moderator = make_user("MODERATOR")
    super_id, xp, reputation, _ = user_row(db, ADMIN_EMAIL)
    resp = client.request(
        method, f"/api/users/{super_id}/{what}", json=body, headers=moderator["headers"]
    )
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["details"]["reason"] == "outranked"
    assert user_row(db, ADMIN_EMAIL)[1:3] == (xp, reputation)
    assert denials(db) == [(moderator["id"], "users:write", "outranked")]
    # a member they outrank is theirs to change
    member = make_user("MEMBER")
    ok = client.request(
        method, f"/api/users/{member['id']}/{what}", json=body, headers=moderator["headers"]
    )
    assert ok.status_code == 200, ok.text


def test_journey_changes_on_a_user_who_outranks_you_are_refused(
    client: TestClient, make_user: Any, db: Conn
) -> None:
    admin = make_user("ADMIN")  # holds journey:manage, not every permission
    url = f"/api/users/{ADMIN_EMAIL}/journey/Skills Assessment/skip"
    resp = client.post(url, headers=admin["headers"])
    assert resp.status_code == 403
    assert resp.json()["error"]["details"]["reason"] == "outranked"
    assert denials(db) == [(admin["id"], "journey:manage", "outranked")]
    member = make_user("MEMBER")
    ok = client.post(f"/api/users/{member['id']}/journey/Welcome/start", headers=admin["headers"])
    assert ok.status_code == 200 and ok.json()["status"] == "IN_PROGRESS"


# -- passwords: not one's own through the reset route; not of a user who outranks you ----


def test_the_reset_route_refuses_ones_own_password(
    client: TestClient, make_user: Any, db: Conn
) -> None:
    admin = make_user("ADMIN")
    before = user_row(db, admin["id"])[3]
    resp = client.put(
        f"/api/users/{admin['id']}/password",
        json={"password": "a stolen session's new passphrase"},
        headers=admin["headers"],
    )
    assert resp.status_code == 403
    error = resp.json()["error"]
    assert error["details"]["reason"] == "self"
    assert "POST /api/auth/password" in error["message"]
    assert user_row(db, admin["id"])[3] == before
    assert client.get("/api/auth/me", headers=admin["headers"]).status_code == 200
    assert denials(db) == [(admin["id"], "users:write", "self")]
    # by email too: the reference does not matter, the account does
    resp = client.put(
        f"/api/users/{admin['email']}/password",
        json={"password": "a stolen session's new passphrase"},
        headers=admin["headers"],
    )
    assert resp.status_code == 403


def test_resets_of_others_follow_the_outranked_rule(
    client: TestClient, make_user: Any, db: Conn
) -> None:
    admin = make_user("ADMIN")
    body = {"password": "a brand new passphrase"}
    refused = client.put(f"/api/users/{ADMIN_EMAIL}/password", json=body, headers=admin["headers"])
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["reason"] == "outranked"
    member = make_user("MEMBER")
    ok = client.put(f"/api/users/{member['id']}/password", json=body, headers=admin["headers"])
    assert ok.status_code == 204


# -- a user's journey shows who they are only to those who may read users ---------------


def test_a_journey_hides_who_the_user_is_without_users_read(
    client: TestClient, make_user: Any, admin_headers: dict[str, str]
) -> None:
    member = make_user("MEMBER")  # journey:read, not users:read
    other = make_user("GUEST")
    seen = client.get(f"/api/users/{other['id']}/journey", headers=member["headers"])
    assert seen.status_code == 200
    user = seen.json()["user"]
    assert user["id"] == other["id"]
    assert user["email"] is None and user["username"] is None and user["name"] is None
    assert other["email"] not in seen.text and other["username"] not in seen.text
    # with users:read, and for oneself, they are shown
    full = client.get(f"/api/users/{other['id']}/journey", headers=admin_headers).json()
    assert full["user"]["email"] == other["email"]
    own = client.get(f"/api/users/{member['id']}/journey", headers=member["headers"]).json()
    assert own["user"]["username"] == member["username"]


# -- every user {id}: an id, an email in any case, or a username -------------------------


def test_users_are_named_by_id_email_or_username_everywhere(
    client: TestClient, admin_headers: dict[str, str], make_user: Any, db: Conn
) -> None:
    h = admin_headers
    target = make_user("MEMBER")
    refs = [target["id"], target["email"].upper(), target["username"]]
    for ref in refs:
        got = client.get(f"/api/users/{ref}", headers=h)
        assert got.status_code == 200 and got.json()["id"] == target["id"], ref
        perms = client.get(f"/api/users/{ref}/permissions", headers=h)
        assert perms.status_code == 200 and perms.json()["user"]["id"] == target["id"], ref
        roles = client.get(f"/api/users/{ref}/roles", headers=h)
        assert roles.status_code == 200 and roles.json()["user"]["id"] == target["id"], ref
        journey = client.get(f"/api/users/{ref}/journey", headers=h)
        assert journey.status_code == 200 and journey.json()["user"]["id"] == target["id"], ref
        check = client.get(f"/api/authz/check?user={ref}&permission=journey:read", headers=h)
        assert check.status_code == 200 and check.json()["allowed"] is True, ref
        assert check.json()["user"]["id"] == target["id"]
    for n, ref in enumerate(refs):
        changed = client.patch(f"/api/users/{ref}", json={"name": f"N{n}"}, headers=h)
        assert changed.status_code == 200 and changed.json()["name"] == f"N{n}", ref
    added = client.post(
        f"/api/users/{target['username']}/xp", json={"amount": 7, "reason": "r"}, headers=h
    )
    assert added.status_code == 200 and added.json()["xp"] == 7
    assigned = client.put(f"/api/users/{target['email']}/roles/GUEST", headers=h)
    assert assigned.status_code == 200
    assert client.post(f"/api/users/{target['username']}/suspend", headers=h).status_code == 200
    assert client.get("/api/users/nobody@example.com", headers=h).status_code == 404
    assert client.get("/api/users/no-such-username", headers=h).status_code == 404


def test_stages_roles_and_permissions_are_named_by_id_or_name(
    client: TestClient, admin_headers: dict[str, str], make_user: Any, db: Conn
) -> None:
    h = admin_headers
    member = make_user("MEMBER")
    done = client.post(f"/api/users/{member['email']}/journey/Welcome/complete", headers=h)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "COMPLETED" and done.json()["xpAwarded"] == 10
    mine = client.post("/api/journey/me/stages/Email Verification/start", headers=member["headers"])
    assert mine.status_code == 200 and mine.json()["stage"] == "Email Verification"
    stage = client.get("/api/journey/stages/welcome", headers=h)
    assert stage.status_code == 200 and stage.json()["name"] == "Welcome"
    patched = client.patch("/api/journey/stages/Mentorship", json={"xpReward": 301}, headers=h)
    assert patched.status_code == 200 and patched.json()["xpReward"] == 301
    assert client.get("/api/journey/stages/No Such Stage", headers=h).status_code == 404
    perm_id = db.execute("SELECT id FROM \"Permission\" WHERE name = 'users:read'").fetchone()
    role_id = db.execute("SELECT id FROM \"Role\" WHERE name = 'GUEST'").fetchone()
    assert perm_id is not None and role_id is not None
    granted = client.put(f"/api/roles/{role_id[0]}/permissions/{perm_id[0]}", headers=h)
    assert granted.status_code == 200 and "users:read" in granted.json()["permissions"]
