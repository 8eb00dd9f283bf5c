"""Operators' pages in-process: users (search, actions with confirmation, outranked), the
matrix, journeys, audit diffs, health, backups and the data browser."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.config import Settings
from tests.web.conftest import create_backup

Browse = Callable[..., dict[str, Any]]


def test_users_search_finds_one_user(
    client: TestClient, browse: Browse, make_user: Callable[..., dict[str, Any]]
) -> None:
    browse("ADMIN")
    target = make_user("MEMBER", email="findme.web@example.com")
    r = client.get("/admin/users", params={"q": "findme.web"})
    assert r.status_code == 200
    assert f'href="/admin/users/{target["id"]}"' in r.text
    assert r.text.count('href="/admin/users/') == 1


def test_users_filters_and_a_bad_sort_are_clear(client: TestClient, browse: Browse) -> None:
    browse("ADMIN")
    assert client.get("/admin/users", params={"status": "SUSPENDED"}).status_code == 200
    bad = client.get("/admin/users", params={"sort": "password"})
    assert bad.status_code == 422 and "sort must be one of" in bad.text
    short = client.get("/admin/users", params={"q": "f"})
    assert short.status_code == 422 and "search needs at least 2 characters" in short.text
    assert client.get("/admin/users", params={"cursor": "forged"}).status_code == 422


def test_users_pages_with_the_domains_cursor(
    client: TestClient, browse: Browse, make_user: Callable[..., dict[str, Any]]
) -> None:
    for _ in range(30):
        make_user("MEMBER")
    browse("ADMIN")
    first = client.get("/admin/users", params={"sort": "email", "order": "asc"})
    found = re.search(r'href="(/admin/users\?[^"]*cursor=[^"]+)"', first.text)
    assert found, "no next page link"
    second = client.get(found.group(1).replace("&amp;", "&"))
    assert second.status_code == 200
    ids = set(re.findall(r'href="/admin/users/([^"?]+)"', first.text))
    assert ids.isdisjoint(re.findall(r'href="/admin/users/([^"?]+)"', second.text))


def test_suspend_asks_first_then_suspends_and_activates(
    client: TestClient,
    browse: Browse,
    make_user: Callable[..., dict[str, Any]],
    db: psycopg.Connection[Any],
) -> None:
    admin = browse("ADMIN")
    target = make_user("MEMBER")
    url = f"/admin/users/{target['id']}/suspend"
    ask = client.post(url, data={"csrf": admin["csrf"]})
    assert ask.status_code == 200 and "Please confirm" in ask.text
    status = 'SELECT status FROM "User" WHERE id = %s'
    assert db.execute(status, [target["id"]]).fetchone() == ("ACTIVE",)
    done = client.post(url, data={"csrf": admin["csrf"], "confirmed": "yes"})
    assert "is suspended" in done.text
    assert db.execute(status, [target["id"]]).fetchone() == ("SUSPENDED",)
    client.post(
        f"/admin/users/{target['id']}/activate", data={"csrf": admin["csrf"], "confirmed": "yes"}
    )
    assert db.execute(status, [target["id"]]).fetchone() == ("ACTIVE",)


def test_an_outranked_operator_sees_the_refusal_and_cannot_act(
    client: TestClient,
    browse: Browse,
    make_user: Callable[..., dict[str, Any]],
    db: psycopg.Connection[Any],
) -> None:
    moderator = browse("MODERATOR")
    boss = make_user("ADMIN")
    page = client.get(f"/admin/users/{boss['id']}")
    assert "Refused: you cannot change a user who holds permissions" in page.text
    assert re.search(r"<button[^>]*disabled[^>]*>Suspend", page.text)
    r = client.post(
        f"/admin/users/{boss['id']}/suspend", data={"csrf": moderator["csrf"], "confirmed": "yes"}
    )
    assert r.status_code == 403
    assert db.execute('SELECT status FROM "User" WHERE id = %s', [boss["id"]]).fetchone() == (
        "ACTIVE",
    )


def test_add_xp_and_assign_role_are_audited_with_their_diff(
    client: TestClient,
    browse: Browse,
    make_user: Callable[..., dict[str, Any]],
    db: psycopg.Connection[Any],
) -> None:
    admin = browse("ADMIN")
    target = make_user("MEMBER")
    base = f"/admin/users/{target['id']}"
    client.post(
        f"{base}/add-xp",
        data={"csrf": admin["csrf"], "confirmed": "yes", "amount": "150", "reason": "helped"},
    )
    client.post(f"{base}/assign", data={"csrf": admin["csrf"], "confirmed": "yes", "role": "GUEST"})
    detail = client.get(base).text
    assert 'id="user-xp">150<' in detail
    assert "helped" in detail  # XP history
    assert "GUEST" in detail
    log = client.get("/admin/audit", params={"resource_id": target["id"], "action": "users.*"})
    assert "<code>xp</code>" in log.text and "<ins>150</ins>" in log.text


def test_reset_password_asks_for_the_new_one_and_ends_sessions(
    client: TestClient,
    browse: Browse,
    make_user: Callable[..., dict[str, Any]],
    db: psycopg.Connection[Any],
) -> None:
    admin = browse("ADMIN")
    target = make_user("MEMBER")
    url = f"/admin/users/{target['id']}/password"
    ask = client.post(url, data={"csrf": admin["csrf"]})
    assert 'type="password"' in ask.text
    weak = client.post(
        url,
        data={"csrf": admin["csrf"], "confirmed": "yes", "password": "short"},
        headers={"referer": f"http://testserver/admin/users/{target['id']}"},
    )
    assert 'class="flash error"' in weak.text
    # Sent from the confirmation (the answer to a POST): the refusal is shown right there.
    from_confirm = client.post(
        url,
        data={"csrf": admin["csrf"], "confirmed": "yes", "password": "short"},
        headers={"referer": f"http://testserver{url}"},
        follow_redirects=False,
    )
    assert from_confirm.status_code == 422 and "Not accepted" in from_confirm.text
    ok = client.post(
        url,
        data={
            "csrf": admin["csrf"],
            "confirmed": "yes",
            "password": "a perfectly fine passphrase indeed",
        },
    )
    assert "Password reset" in ok.text
    live = db.execute(
        'SELECT count(*) FROM "Session" WHERE "userId" = %s AND "revokedAt" IS NULL',
        [target["id"]],
    ).fetchone()
    assert live == (0,)


def test_a_grant_in_the_matrix_takes_effect_on_the_api(
    client: TestClient, browse: Browse, make_user: Callable[..., dict[str, Any]]
) -> None:
    admin = browse("SUPER_ADMIN")
    member = make_user("GUEST")
    api = {"headers": member["headers"]}  # Bearer: the cookie of the signed-in admin is ignored
    assert client.get("/api/audit", **api).status_code == 403
    page = client.get("/admin/roles").text
    assert 'aria-label="Grant audit:read to GUEST"' in page
    client.post(
        "/admin/roles/grant",
        data={"csrf": admin["csrf"], "role": "GUEST", "permission": "audit:read", "op": "grant"},
    )
    assert client.get("/api/audit", **api).status_code == 200
    client.post(
        "/admin/roles/grant",
        data={"csrf": admin["csrf"], "role": "GUEST", "permission": "audit:read", "op": "revoke"},
    )
    assert client.get("/api/audit", **api).status_code == 403


def test_the_matrix_is_read_only_without_rbac_manage(
    client: TestClient, browse_with: Callable[[set[str]], dict[str, Any]]
) -> None:
    user = browse_with({"roles:read"})
    page = client.get("/admin/roles").text
    assert "/admin/roles/grant" not in page
    r = client.post(
        "/admin/roles/grant",
        data={"csrf": user["csrf"], "role": "GUEST", "permission": "db:read", "op": "grant"},
    )
    assert r.status_code == 403


def test_journeys_edit_and_reorder(
    client: TestClient, browse: Browse, db: psycopg.Connection[Any]
) -> None:
    admin = browse("ADMIN")
    order = 'SELECT id FROM "JourneyStage" ORDER BY "order"'
    before = [r[0] for r in db.execute(order)]
    client.post(
        f"/admin/journeys/{before[0]}/move", data={"csrf": admin["csrf"], "direction": "down"}
    )
    after = [r[0] for r in db.execute(order)]
    assert after[:2] == [before[1], before[0]]
    r = client.post(
        f"/admin/journeys/{before[0]}",
        data={"csrf": admin["csrf"], "name": "Renamed stage", "xpReward": "77", "active": "on"},
    )
    assert "Stage Renamed stage saved." in r.text
    row = db.execute('SELECT name, "xpReward" FROM "JourneyStage" WHERE id = %s', [before[0]])
    assert row.fetchone() == ("Renamed stage", 77)


def test_the_database_page_runs_the_health_checks(client: TestClient, browse: Browse) -> None:
    admin = browse("SUPER_ADMIN")
    assert "No results yet" in client.get("/admin/database").text
    r = client.post("/admin/database/check", data={"csrf": admin["csrf"]})
    assert "Health checks run" in r.text
    assert "Recommendation" in r.text and "v-ok" in r.text
    assert '<tbody id="OK">' in r.text
    overview = client.get("/admin").text
    assert 'href="/admin/database#OK"' in overview


def test_backups_create_and_verify(
    client: TestClient, browse: Browse, seeded_settings: Settings
) -> None:
    admin = browse("SUPER_ADMIN")
    name = create_backup(client, admin["csrf"], seeded_settings, "from the web")
    assert (Path(seeded_settings.home_dir) / "backups" / name).is_file()
    listed = client.get("/admin/backups").text
    assert name in listed and "from the web" in listed
    assert 'http-equiv="refresh"' not in listed  # nothing is being written any more
    with psycopg.connect(seeded_settings.url_for()) as conn:
        row = conn.execute(
            "SELECT actor, details->>'ok' FROM audit_log"
            " WHERE action = 'backup.create' AND \"resourceId\" = %s",
            [name],
        ).fetchone()
    assert row == (admin["id"], "true")  # who started it, and that it was written
    checked = client.post("/admin/backups/verify", data={"csrf": admin["csrf"], "file": name})
    assert f"{name} verified" in checked.text, checked.text
    missing = client.post("/admin/backups/verify", data={"csrf": admin["csrf"], "file": "../etc"})
    assert missing.status_code == 404


def test_backups_are_refused_without_db_backup(
    client: TestClient, browse_with: Callable[[set[str]], dict[str, Any]]
) -> None:
    user = browse_with({"db:read"})
    assert "Create a backup" not in client.get("/admin/backups").text
    assert client.post("/admin/backups", data={"csrf": user["csrf"]}).status_code == 403


def test_the_data_browser_reads_every_table_and_hides_secrets(
    client: TestClient, browse: Browse
) -> None:
    browse("SUPER_ADMIN")
    tables = client.get("/admin/data").text
    for name in ("User", "Role", "audit_log", "Session"):
        assert f'href="/admin/data/{name}"' in tables
    users = client.get("/admin/data/User", params={"sort": "email", "dir": "desc"})
    assert users.status_code == 200
    assert "$2b$" not in users.text and "(hidden)" in users.text
    found = client.get(
        "/admin/data/User", params={"column": "email", "op": "contains", "value": "alicesolutions"}
    )
    assert "admin@alicesolutionsgroup.com" in found.text


@pytest.mark.parametrize(
    "params",
    [
        {"column": "nope", "value": "x"},
        {"column": "xp", "op": ">", "value": "not a number"},
        {"sort": '"; DROP TABLE "User"; --'},
        {"column": "email", "op": "contains", "value": "x" * 600},
        {"offset": "-1"},
    ],
)
def test_the_data_browser_refuses_bad_input_plainly(
    client: TestClient, browse: Browse, params: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    browse("SUPER_ADMIN")
    r = client.get("/admin/data/User", params=params)
    assert r.status_code == 422, r.text
    assert "<h1" in r.text
    assert db.execute('SELECT count(*) > 0 FROM "User"').fetchone() == (True,)
