"""My journey and Profile, in-process: what they show, their writes, CSRF and errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from smartstart.api.deps import SESSION_COOKIE
from tests.web.conftest import FIXTURE_PASSWORD, form_csrf

Browse = Callable[..., dict[str, Any]]


def first_stage(db: psycopg.Connection[Any]) -> tuple[str, str, int]:
    row = db.execute(
        'SELECT id, name, "xpReward" FROM "JourneyStage" WHERE active ORDER BY "order" LIMIT 1'
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_my_journey_lists_the_stages_in_order_with_level(
    client: TestClient, browse: Browse, db: psycopg.Connection[Any]
) -> None:
    browse("MEMBER")
    page = client.get("/journey")
    assert page.status_code == 200
    names = [
        r[0] for r in db.execute('SELECT name FROM "JourneyStage" WHERE active ORDER BY "order"')
    ]
    positions = [page.text.index(n) for n in names]
    assert positions == sorted(positions)
    assert 'id="level-name">Owlet<' in page.text
    assert "<progress" in page.text


def test_completing_a_stage_earns_its_xp_once(
    client: TestClient, browse: Browse, db: psycopg.Connection[Any]
) -> None:
    user = browse("MEMBER")
    stage, name, reward = first_stage(db)
    r = client.post(
        f"/journey/{stage}/complete", data={"csrf": user["csrf"]}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/journey"
    page = client.get("/journey")
    assert f"+{reward} XP" in page.text
    assert re.search(rf'id="xp-total">{reward}<', page.text)
    xp = db.execute('SELECT xp FROM "User" WHERE id = %s', [user["id"]]).fetchone()
    assert xp == (reward,)
    again = client.post(f"/journey/{stage}/complete", data={"csrf": user["csrf"]})
    assert "already completed" in again.text
    assert db.execute('SELECT xp FROM "User" WHERE id = %s', [user["id"]]).fetchone() == (reward,)


def test_a_write_without_the_csrf_token_is_refused_and_changes_nothing(
    client: TestClient, browse: Browse, db: psycopg.Connection[Any]
) -> None:
    user = browse("MEMBER")
    stage, _, _ = first_stage(db)
    for data in ({}, {"csrf": "0" * 64}):
        r = client.post(f"/journey/{stage}/complete", data=data)
        assert r.status_code == 403
        assert "Form refused" in r.text
    states = db.execute('SELECT count(*) FROM "UserJourneyState" WHERE "userId" = %s', [user["id"]])
    assert states.fetchone() == (0,)


def test_another_sessions_csrf_token_is_refused(
    client: TestClient, browse: Browse, db: psycopg.Connection[Any]
) -> None:
    other = browse("MEMBER")
    browse("MEMBER")
    stage, _, _ = first_stage(db)
    assert client.post(f"/journey/{stage}/start", data={"csrf": other["csrf"]}).status_code == 403


def test_a_refused_transition_comes_back_with_the_reason(
    client: TestClient, browse: Browse, db: psycopg.Connection[Any]
) -> None:
    user = browse("MEMBER")
    second = db.execute(
        'SELECT id FROM "JourneyStage" WHERE active ORDER BY "order" OFFSET 1 LIMIT 1'
    ).fetchone()
    assert second is not None
    r = client.post(
        f"/journey/{second[0]}/complete",
        data={"csrf": user["csrf"]},
        headers={"referer": "http://testserver/journey"},
    )
    assert r.status_code == 200
    assert "cannot be completed yet" in r.text
    assert 'class="flash error"' in r.text


def test_an_unknown_stage_is_a_404_page(client: TestClient, browse: Browse) -> None:
    user = browse("MEMBER")
    r = client.post("/journey/nope/start", data={"csrf": user["csrf"]})
    assert r.status_code == 404
    assert "<h1" in r.text and "Not found" in r.text


def test_profile_edits_name_and_username(
    client: TestClient, browse: Browse, db: psycopg.Connection[Any]
) -> None:
    user = browse("MEMBER")
    page = client.get("/profile")
    assert user["email"] in page.text
    r = client.post(
        "/profile",
        data={"csrf": form_csrf(page.text), "name": "Ada L", "username": f"ada{user['id'][:6]}"},
    )
    assert r.status_code == 200 and "Profile saved." in r.text
    row = db.execute('SELECT name, username FROM "User" WHERE id = %s', [user["id"]]).fetchone()
    assert row == ("Ada L", f"ada{user['id'][:6]}")


def test_a_bad_username_is_refused_with_the_rule(
    client: TestClient, browse: Browse, db: psycopg.Connection[Any]
) -> None:
    user = browse("MEMBER")
    r = client.post(
        "/profile",
        data={"csrf": user["csrf"], "name": "x", "username": "bad name\u0007" * 100},
        headers={"referer": "http://testserver/profile"},
    )
    assert 'class="flash error"' in r.text
    row = db.execute('SELECT username FROM "User" WHERE id = %s', [user["id"]]).fetchone()
    assert row == (user["username"],)


def test_change_password_needs_the_current_one_and_keeps_this_browser_signed_in(
    client: TestClient, browse: Browse, db: psycopg.Connection[Any]
) -> None:
    user = browse("MEMBER")
    new = "a perfectly fine passphrase for tests"
    wrong = client.post(
        "/profile/password",
        data={
            "csrf": user["csrf"],
            "current_password": "not it at all",
            "new_password": new,
            "confirm_password": new,
        },
        headers={"referer": "http://testserver/profile"},
    )
    assert "the current password is wrong" in wrong.text
    ok = client.post(
        "/profile/password",
        data={
            "csrf": user["csrf"],
            "current_password": FIXTURE_PASSWORD,
            "new_password": new,
            "confirm_password": new,
        },
    )
    assert ok.status_code == 200 and "Password changed" in ok.text
    assert client.cookies.get(SESSION_COOKIE) != user["token"]
    live = db.execute(
        'SELECT count(*) FROM "Session" WHERE "userId" = %s AND "revokedAt" IS NULL', [user["id"]]
    ).fetchone()
    assert live == (1,)


def test_revoking_ones_current_session_signs_out(
    client: TestClient, browse: Browse, db: psycopg.Connection[Any]
) -> None:
    user = browse("MEMBER")
    session = db.execute('SELECT id FROM "Session" WHERE "userId" = %s', [user["id"]]).fetchone()
    assert session is not None
    r = client.post(
        f"/profile/sessions/{session[0]}/revoke",
        data={"csrf": user["csrf"]},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/profile", follow_redirects=False).status_code == 303


def test_a_nul_or_a_megabyte_in_a_form_changes_nothing(
    client: TestClient, browse: Browse, db: psycopg.Connection[Any]
) -> None:
    user = browse("MEMBER")
    nul = client.post("/profile", data={"csrf": user["csrf"], "name": "a\x00b", "username": "x1"})
    assert nul.status_code == 422
    big = client.post(
        "/profile",
        data={"csrf": user["csrf"], "name": "n" * 900_000, "username": "x2"},
        headers={"referer": "http://testserver/profile"},
    )
    assert 'class="flash error"' in big.text
    row = db.execute('SELECT name, username FROM "User" WHERE id = %s', [user["id"]]).fetchone()
    assert row is not None and row[1] == user["username"] and row[0] != "a\x00b"
