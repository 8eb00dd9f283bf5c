"""/api/admin/backups, and a served Brain answering while its database is restored."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from smartstart.api.app import create_app
from smartstart.cli.main import app as cli
from smartstart.config import Settings
from smartstart.pg.cluster import Cluster
from tests.api.conftest import served
from tests.conftest import drop_db

ADMIN = "admin@alicesolutionsgroup.com"


@pytest.fixture
def leftovers(pg_cluster: Cluster, seeded_settings: Settings) -> Iterator[None]:
    """Drop the databases a restore of this test's database set aside."""
    yield
    with pg_cluster.connect() as conn:
        names = [
            str(r[0])
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                [seeded_settings.db_name + "_"],
            )
        ]
    for name in names:
        drop_db(pg_cluster, name)


def create(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/api/admin/backups", json=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/api/admin/backups/{response.json()['id']}"
    return dict(response.json())


def test_create_list_get_verify_are_audited(
    client: TestClient, admin_headers: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    made = create(client, admin_headers, note="api backup")
    assert made["format"] == "custom" and made["rows"]["User"] >= 2 and made["present"]
    second = create(client, admin_headers, format="plain", compress=True)
    assert second["id"].endswith(".sql.gz")
    page = client.get("/api/admin/backups", params={"limit": 1}, headers=admin_headers).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    ids = [page["items"][0]["id"]]
    cursor = page["next_cursor"]
    while cursor:
        page = client.get(
            "/api/admin/backups", params={"limit": 1, "cursor": cursor}, headers=admin_headers
        ).json()
        ids += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
    assert ids.index(second["id"]) < ids.index(made["id"])  # newest first, no repeats
    assert len(ids) == len(set(ids))
    one = client.get(f"/api/admin/backups/{made['id']}", headers=admin_headers)
    assert one.status_code == 200 and one.json()["note"] == "api backup"
    verified = client.post(f"/api/admin/backups/{made['id']}/verify", headers=admin_headers)
    assert verified.status_code == 200 and verified.json()["ok"] is True, verified.text
    again = client.get(f"/api/admin/backups/{made['id']}", headers=admin_headers).json()
    assert again["verification"]["ok"] is True
    actions = {
        (r[0], r[1])
        for r in db.execute(
            "SELECT action, \"resourceId\" FROM audit_log WHERE resource = 'backup'"
        )
    }
    assert ("backup.create", made["id"]) in actions
    assert ("backup.verify", made["id"]) in actions


def test_download_streams_the_file_to_db_backup_holders_and_is_audited(
    client: TestClient,
    admin_headers: dict[str, str],
    seeded_settings: Settings,
    db: psycopg.Connection[Any],
    make_user: Callable[..., dict[str, Any]],
) -> None:
    made = create(client, admin_headers)
    r = client.get(f"/api/admin/backups/{made['id']}/file", headers=admin_headers)
    assert r.status_code == 200, r.text
    assert r.content == (seeded_settings.home_dir / "backups" / made["id"]).read_bytes()
    assert r.headers["content-disposition"] == f'attachment; filename="{made["id"]}"'
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-backup-sha256"] == made["sha256"]
    developer = make_user("DEVELOPER")  # db:read and db:backup
    assert (
        client.get(
            f"/api/admin/backups/{made['id']}/file", headers=developer["headers"]
        ).status_code
        == 200
    )
    moderator = make_user("MODERATOR")
    refused = client.get(f"/api/admin/backups/{made['id']}/file", headers=moderator["headers"])
    assert refused.status_code == 403
    rows = db.execute(
        "SELECT count(*) FROM audit_log WHERE action = 'backup.download' AND \"resourceId\" = %s",
        [made["id"]],
    ).fetchone()
    assert rows == (2,)


@pytest.mark.parametrize(
    "name", ["nope.dump", ".hidden", "a" * 300, "..%2F..%2Fetc", "x%00y"], ids=str.__len__
)
def test_unknown_or_malformed_names_are_404(
    client: TestClient, admin_headers: dict[str, str], name: str
) -> None:
    for method, path in (("GET", ""), ("GET", "/file"), ("POST", "/verify"), ("POST", "/restore")):
        kwargs: dict[str, Any] = {"json": {}} if method == "POST" else {}
        r = client.request(
            method, f"/api/admin/backups/{name}{path}", headers=admin_headers, **kwargs
        )
        assert r.status_code in (404, 422), r.text
        assert set(r.json()["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize(
    "body",
    [
        {"format": "tar"},
        {"format": "custom", "compress": True},
        {"note": "x" * 1_000_000},
        {"note": "a\0b"},
    ],
    ids=["format", "compress-custom", "huge-note", "nul-note"],
)
def test_bad_create_bodies_are_422_and_write_nothing(
    client: TestClient, admin_headers: dict[str, str], seeded_settings: Settings, body: Any
) -> None:
    directory = seeded_settings.home_dir / "backups"
    before = set(directory.iterdir()) if directory.is_dir() else set()
    r = client.post("/api/admin/backups", json=body, headers=admin_headers)
    assert r.status_code == 422, r.text
    after = set(directory.iterdir()) if directory.is_dir() else set()
    assert after == before


def test_restore_needs_confirmation_and_dry_run_changes_nothing(
    client: TestClient, admin_headers: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    made = create(client, admin_headers)
    path = f"/api/admin/backups/{made['id']}/restore"
    dry = client.post(path, json={"dry_run": True}, headers=admin_headers)
    assert dry.status_code == 200 and dry.json()["dry_run"] is True, dry.text
    assert "_before_restore_" in dry.json()["plan"]
    refused = client.post(path, json={"confirm": "something else"}, headers=admin_headers)
    assert refused.status_code == 422 and refused.json()["error"]["details"]["field"] == "confirm"


def test_a_failed_restore_is_audited_with_who_and_why(
    client: TestClient,
    admin_headers: dict[str, str],
    seeded_settings: Settings,
    db: psycopg.Connection[Any],
    leftovers: None,
) -> None:
    import json

    made = create(client, admin_headers)
    manifest = seeded_settings.home_dir / "backups" / f"{made['id']}.json"
    m = json.loads(manifest.read_text())
    m["rows"]["User"] += 1  # what loads no longer matches: refused before the swap
    manifest.write_text(json.dumps(m))
    r = client.post(
        f"/api/admin/backups/{made['id']}/restore",
        json={"confirm": made["id"]},
        headers=admin_headers,
    )
    assert r.status_code == 422 and "rows of User" in r.json()["error"]["message"], r.text
    admin = db.execute('SELECT id FROM "User" WHERE email = %s', [ADMIN]).fetchone()
    rows = db.execute(
        "SELECT actor, details FROM audit_log WHERE action = 'backup.restore'"
        ' AND "resourceId" = %s',
        [made["id"]],
    ).fetchall()
    assert admin is not None and len(rows) == 1, rows
    assert rows[0][0] == admin[0] and rows[0][1]["outcome"] == "failed"
    assert "rows of User" in rows[0][1]["error"]


def test_prune_validates_and_keeps_the_newest_verified(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    for body in ({}, {"older_than": "soon"}, {"keep": -1}, {"older_than": "1d\0"}):
        r = client.post("/api/admin/backups/prune", json=body, headers=admin_headers)
        assert r.status_code == 422, (body, r.text)
    verified = create(client, admin_headers)
    client.post(f"/api/admin/backups/{verified['id']}/verify", headers=admin_headers)
    newest = create(client, admin_headers)
    dry = client.post(
        "/api/admin/backups/prune", json={"keep": 0, "dry_run": True}, headers=admin_headers
    ).json()
    assert dry["deleted"] == []
    kept = {i["name"]: i for i in dry["items"]}
    assert kept[verified["id"]]["delete"] is False and kept[newest["id"]]["delete"] is True
    done = client.post("/api/admin/backups/prune", json={"keep": 0}, headers=admin_headers).json()
    assert newest["id"] in done["deleted"] and verified["id"] not in done["deleted"]
    listed = client.get("/api/admin/backups", headers=admin_headers).json()["items"]
    assert [i["id"] for i in listed] == [verified["id"]]


def _watch(url: str, headers: dict[str, str], user_id: str, stop: threading.Event) -> list[Any]:
    """GET /api/users/{id} in a loop: (status, body) of every answer."""
    seen: list[Any] = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        while not stop.is_set():
            r = http.get(f"/api/users/{user_id}")
            seen.append((r.status_code, r.json()))
    return seen


def test_a_served_brain_answers_through_a_restore_and_recovers_by_itself(
    seeded_settings: Settings,
    cli_env: Callable[[Settings], Settings],
    token_for: Callable[[str], str],
    db: psycopg.Connection[Any],
    tmp_path: Any,
    leftovers: None,
) -> None:
    cli_env(seeded_settings)
    headers = {"Authorization": f"Bearer {token_for(ADMIN)}"}
    uid = str(db.execute('SELECT id FROM "User" WHERE email = %s', [ADMIN]).fetchone()[0])  # type: ignore[index]
    runner = CliRunner()
    path = tmp_path / "b.dump"
    assert runner.invoke(cli, ["db", "backup", "-o", str(path)]).exit_code == 0
    db.execute("""UPDATE "User" SET "firstName" = 'Mutated' WHERE id = %s""", [uid])
    db.close()
    with served(create_app(seeded_settings)) as url:
        stop = threading.Event()
        seen: list[Any] = []
        watcher = threading.Thread(target=lambda: seen.extend(_watch(url, headers, uid, stop)))
        watcher.start()
        time.sleep(0.5)
        result = runner.invoke(cli, ["db", "restore", str(path), "--yes"])
        time.sleep(0.5)
        stop.set()
        watcher.join()
        assert result.exit_code == 0, result.output
        # Recovered without help: the next answer is the restored row.
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            after = http.get(f"/api/users/{uid}")
    assert after.status_code == 200 and after.json()["firstName"] != "Mutated"
    statuses = {s for s, _ in seen}
    assert statuses <= {200, 503}, seen
    names = [b["firstName"] for s, b in seen if s == 200]
    assert names[0] == "Mutated"
    # Never a mix: the old answer until the switch, the restored one after it.
    switched = [n != "Mutated" for n in names]
    assert switched == sorted(switched) and switched[-1], names
    for status, body in seen:
        if status == 503:  # the restore's marker says why (pg.restoring)
            assert body["error"]["code"] == "restoring", body
            assert body["error"]["details"]["reason"] == "logical", body
