"""The Backups page's download, restore and prune in-process: permission gates (403 and
hidden links), CSRF, the typed database name, bad prune input, download traversal."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.config import Settings
from smartstart.pg.cluster import Cluster
from smartstart.pg.restore import LOCK_KEY
from tests.api.test_backups_api import leftovers  # noqa: F401 - fixture
from tests.web.conftest import create_backup, kept_databases

Browse = Callable[..., dict[str, Any]]
BrowseWith = Callable[[set[str]], dict[str, Any]]
OPERATOR = {"db:read", "db:backup", "db:restore"}
Mutated = tuple[dict[str, Any], str]  # the operator, the backup made before the change


def backup_dir(settings: Settings) -> Path:
    return Path(settings.home_dir) / "backups"


def make_backup(client: TestClient, user: dict[str, Any], note: str = "web test") -> str:
    return create_backup(client, user["csrf"], client.app.state.settings, note)


@pytest.fixture
def mutated(
    client: TestClient,
    browse_with: BrowseWith,
    seeded_settings: Settings,
    leftovers: None,  # noqa: F811 - drops what a restore set aside
) -> Mutated:
    """An operator who made a backup through the page, then had their first name changed
    to 'Mutated'; the backup's name."""
    user = browse_with(OPERATOR)
    name = make_backup(client, user)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        conn.execute(
            """UPDATE "User" SET "firstName" = 'Mutated' WHERE email = %s""", [user["email"]]
        )
    return user, name


def first_name(settings: Settings, email: str) -> str:
    with psycopg.connect(settings.url_for(), autocommit=True) as conn:
        row = conn.execute('SELECT "firstName" FROM "User" WHERE email = %s', [email]).fetchone()
    assert row is not None
    return str(row[0])


def audit_actions(settings: Settings, action: str) -> list[str]:
    with psycopg.connect(settings.url_for(), autocommit=True) as conn:
        return [
            str(r[0])
            for r in conn.execute(
                'SELECT "resourceId" FROM audit_log WHERE action = %s ORDER BY "createdAt"',
                [action],
            )
        ]


# -- create ------------------------------------------------------------------------------------


def test_a_backup_being_written_shows_its_progress_and_blocks_another(
    client: TestClient, browse_with: BrowseWith, seeded_settings: Settings
) -> None:
    user = browse_with(OPERATOR)
    name = make_backup(client, user)  # the last backup's size is what progress is measured by
    size = (backup_dir(seeded_settings) / name).stat().st_size
    # A backup another process (this one: alive) is writing, a third of the way through.
    partial = backup_dir(seeded_settings) / f".backup_20991231_000000.dump.partial-{os.getpid()}"
    partial.write_bytes(b"x" * (size // 3))
    dead = backup_dir(seeded_settings) / ".backup_20991231_000001.dump.partial-999999999"
    dead.write_bytes(b"left by a killed writer")
    try:
        page = client.get("/admin/backups").text
        assert "Writing backup_20991231_000000.dump" in page
        assert f'<progress max="{size}" value="{size // 3}"' in page
        assert '<meta http-equiv="refresh" content="2">' in page
        assert "backup_20991231_000001" not in page
        before = set(backup_dir(seeded_settings).glob("backup_*"))
        refused = client.post("/admin/backups", data={"csrf": user["csrf"]})
        assert "backup_20991231_000000.dump is being written" in refused.text
        assert set(backup_dir(seeded_settings).glob("backup_*")) == before
    finally:
        partial.unlink()
        dead.unlink()
    assert 'http-equiv="refresh"' not in client.get("/admin/backups").text


def test_a_failed_backup_is_shown_until_a_newer_one_is_made(
    client: TestClient, browse_with: BrowseWith, seeded_settings: Settings
) -> None:
    user = browse_with(OPERATOR)
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        conn.execute(
            'INSERT INTO audit_log (actor, action, resource, "resourceId", details)'
            " VALUES ('web:x', 'backup.create', 'backup', 'backup_x.dump',"
            ' \'{"ok": false, "error": "pg_dump failed: disk full"}\')'
        )
    assert "pg_dump failed: disk full" in client.get("/admin/backups").text
    make_backup(client, user)
    assert "pg_dump failed" not in client.get("/admin/backups").text


# -- download ----------------------------------------------------------------------------------


def test_a_backup_and_its_manifest_download_as_written_and_audited(
    client: TestClient, browse_with: BrowseWith, seeded_settings: Settings
) -> None:
    user = browse_with(OPERATOR)
    name = make_backup(client, user)
    page = client.get("/admin/backups").text
    assert f'href="/admin/backups/files/{name}"' in page
    r = client.get(f"/admin/backups/files/{name}")
    assert r.status_code == 200
    path = backup_dir(seeded_settings) / name
    assert r.content == path.read_bytes()
    assert r.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-length"] == str(path.stat().st_size)
    manifest = json.loads(path.with_name(name + ".json").read_text())
    assert r.headers["x-backup-sha256"] == manifest["sha256"]
    m = client.get(f"/admin/backups/files/{name}/manifest")
    assert m.status_code == 200 and m.json() == manifest
    assert m.headers["content-disposition"] == f'attachment; filename="{name}.json"'
    assert m.headers["cache-control"] == "no-store"
    assert audit_actions(seeded_settings, "backup.download") == [name, name]


@pytest.fixture
def planted(seeded_settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Files in the backups directory that must never be handed out: a symbolic link to a
    file outside it (with a manifest that lists it), a dump without a manifest, a listed
    backup whose manifest is a link."""
    directory = backup_dir(seeded_settings)
    directory.mkdir(parents=True, exist_ok=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("not a backup\n")
    tag = os.urandom(4).hex()
    names = {
        "link": f"link-{tag}.dump",
        "bare": f"bare-{tag}.dump",
        "linked_manifest": f"lm-{tag}.dump",
    }
    made: list[Path] = []

    def manifest_for(name: str, size: int) -> dict[str, Any]:
        return {
            "file": name,
            "format": "custom",
            "compressed": False,
            "size": size,
            "sha256": "0" * 64,
            "database": "x",
            "server_version": "16",
            "revision": None,
            "rows": {},
            "started_at": "2020-01-01T00:00:00+00:00",
            "finished_at": "2020-01-01T00:00:01+00:00",
            "seconds": 1.0,
            "note": None,
            "who": "test",
            "tool": "pg_dump",
            "version": 1,
            "verification": None,
        }

    link = directory / names["link"]
    link.symlink_to(secret)
    link.with_name(link.name + ".json").write_text(
        json.dumps(manifest_for(link.name, secret.stat().st_size))
    )
    bare = directory / names["bare"]
    bare.write_text("x")
    real = directory / names["linked_manifest"]
    real.write_text("y")
    outside = tmp_path / "manifest.json"
    outside.write_text(json.dumps(manifest_for(real.name, 1)))
    real.with_name(real.name + ".json").symlink_to(outside)
    made += [link, link.with_name(link.name + ".json"), bare, real]
    made.append(real.with_name(real.name + ".json"))
    yield names
    for p in made:
        p.unlink(missing_ok=True)


def test_download_refuses_traversal_links_and_unlisted_names(
    client: TestClient, browse_with: BrowseWith, planted: dict[str, str]
) -> None:
    browse_with(OPERATOR)
    listed = client.get("/admin/backups").text
    assert planted["link"] in listed  # listed (its manifest is there), yet never sent
    for name in (
        planted["link"],
        f"{planted['link']}/manifest",
        planted["bare"],
        f"{planted['linked_manifest']}/manifest",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",  # (a bare ".." never leaves the client: it folds the path)
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        ".hidden.dump",
        "a" * 300,
        "nope.dump",
        "x%5C..%5Cy",
    ):
        r = client.get(f"/admin/backups/files/{name}")
        assert r.status_code == 404, (name, r.status_code)
        assert "not a backup" not in r.text
    assert client.get("/admin/backups/files/x%00y").status_code == 422  # the edge: NUL
    assert client.get("/admin/backups/files/" + "a" * 60_000).status_code == 404


def test_download_and_prune_need_db_backup_and_their_links_are_hidden(
    client: TestClient, browse_with: BrowseWith, seeded_settings: Settings
) -> None:
    maker = browse_with(OPERATOR)
    name = make_backup(client, maker)
    reader = browse_with({"db:read", "db:restore"})
    page = client.get("/admin/backups").text
    assert "/admin/backups/files/" not in page and "Verify" not in page
    assert "/admin/backups/prune" not in page
    for path in (f"/admin/backups/files/{name}", f"/admin/backups/files/{name}/manifest"):
        r = client.get(path)
        assert r.status_code == 403 and "db:backup" in r.text
    assert audit_actions(seeded_settings, "backup.download") == []
    assert client.get("/admin/backups/prune", params={"keep": "0"}).status_code == 403
    r = client.post(
        "/admin/backups/prune", data={"csrf": reader["csrf"], "keep": "0", "expect": name}
    )
    assert r.status_code == 403
    assert (backup_dir(seeded_settings) / name).is_file()
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        denied = conn.execute(
            "SELECT count(*) FROM audit_log WHERE actor = %s AND action = 'authz.denied'",
            [reader["id"]],
        ).fetchone()
    assert denied == (4,)  # two downloads, the prune's plan and its POST


# -- restore -----------------------------------------------------------------------------------


def test_restore_needs_db_restore_and_its_link_is_hidden(
    client: TestClient, browse_with: BrowseWith, seeded_settings: Settings
) -> None:
    maker = browse_with(OPERATOR)
    name = make_backup(client, maker)
    assert f'href="/admin/backups/restore?file={name}"' in client.get("/admin/backups").text
    user = browse_with({"db:read", "db:backup"})
    page = client.get("/admin/backups").text
    assert "/admin/backups/restore" not in page and "needs the <code>db:restore</code>" in page
    r = client.get("/admin/backups/restore", params={"file": name})
    assert r.status_code == 403 and "db:restore" in r.text
    db_name = seeded_settings.db_name
    posted = client.post(
        "/admin/backups/restore", data={"csrf": user["csrf"], "file": name, "database": db_name}
    )
    assert posted.status_code == 403 and "Not allowed" in posted.text
    assert audit_actions(seeded_settings, "backup.restore") == []


def test_the_confirmation_shows_the_plan(
    client: TestClient, browse_with: BrowseWith, seeded_settings: Settings
) -> None:
    user = browse_with(OPERATOR)
    name = make_backup(client, user, note="before the change")
    r = client.get("/admin/backups/restore", params={"file": name})
    assert r.status_code == 200, r.text
    manifest = json.loads((backup_dir(seeded_settings) / f"{name}.json").read_text())
    assert name in r.text and "before the change" in r.text
    assert manifest["revision"] in r.text
    assert f"{sum(manifest['rows'].values()):,} in {len(manifest['rows'])} tables" in r.text
    assert f"<strong>{seeded_settings.db_name}</strong>" in r.text
    assert f"{seeded_settings.db_name}_before_restore_&lt;timestamp&gt;" in r.text
    assert 'name="database"' in r.text and 'name="csrf"' in r.text
    for bad in ("nope.dump", "../x", ""):
        missing = client.get("/admin/backups/restore", params={"file": bad})
        assert missing.status_code in (404, 422), bad


def test_a_wrong_name_or_a_forged_form_changes_nothing(
    client: TestClient, mutated: Mutated, seeded_settings: Settings, pg_cluster: Cluster
) -> None:
    user, name = mutated
    db_name = seeded_settings.db_name
    for typed in ("", db_name.upper(), db_name + " ", "smartstart_db", "x" * 50_000):
        r = client.post(
            "/admin/backups/restore", data={"csrf": user["csrf"], "file": name, "database": typed}
        )
        assert r.status_code == 422, typed[:40]
        assert "Nothing was changed" in r.text and 'aria-invalid="true"' in r.text
        assert 'role="alert"' in r.text
    forged = client.post(
        "/admin/backups/restore", data={"csrf": "forged", "file": name, "database": db_name}
    )
    assert forged.status_code == 403 and "Form refused" in forged.text
    nul = client.post(
        "/admin/backups/restore", data={"csrf": user["csrf"], "file": name, "database": "a\0b"}
    )
    assert nul.status_code == 422
    assert first_name(seeded_settings, user["email"]) == "Mutated"
    assert kept_databases(pg_cluster, seeded_settings) == []
    assert audit_actions(seeded_settings, "backup.restore") == []


def test_the_typed_name_restores_the_backup_and_keeps_the_old_database(
    client: TestClient, mutated: Mutated, seeded_settings: Settings, pg_cluster: Cluster
) -> None:
    user, name = mutated
    r = client.post(
        "/admin/backups/restore",
        data={"csrf": user["csrf"], "file": name, "database": seeded_settings.db_name},
    )
    assert r.status_code == 200, r.text
    assert str(r.url).endswith("/admin/backups")  # redirected, and the page answers at once
    assert f"Restored {seeded_settings.db_name} from {name}" in r.text
    kept = kept_databases(pg_cluster, seeded_settings)
    assert len(kept) == 1 and kept[0] in r.text
    assert first_name(seeded_settings, user["email"]) != "Mutated"
    assert audit_actions(seeded_settings, "backup.restore") == [name]
    # The session came back with the backup: the pages keep working, on fresh connections.
    assert client.get("/profile").status_code == 200


def test_while_the_database_is_switched_the_page_says_a_restore_runs(
    client: TestClient, browse_with: BrowseWith, seeded_settings: Settings, pg_cluster: Cluster
) -> None:
    browse_with(OPERATOR)
    assert client.get("/admin/backups").status_code == 200
    db_name = seeded_settings.db_name
    with pg_cluster.connect() as admin:
        admin.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        admin.execute(f'ALTER DATABASE "{db_name}" WITH ALLOW_CONNECTIONS false')
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [db_name],
            )
            r = client.get("/admin/backups")
            assert r.status_code == 503
            assert "Restore in progress" in r.text and r.headers["retry-after"] == "5"
        finally:
            admin.execute(f'ALTER DATABASE "{db_name}" WITH ALLOW_CONNECTIONS true')
            admin.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    assert client.get("/admin/backups").status_code == 200  # recovered by itself


# -- prune -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keep", "older_than", "says"),
    [
        ("", "", "say what to prune"),
        ("-1", "", "a whole number"),
        ("abc", "", "a whole number"),
        ("1e3", "", "a whole number"),
        ("\u0663", "", "a whole number"),
        ("100001", "", "a whole number"),
        ("1" * 100_000, "", "a whole number"),
        ("", "soon", "a number and a unit"),
        ("", "30", "a number and a unit"),
        ("", "d" * 100_000, "a number and a unit"),
        ("2", "1y", "a number and a unit"),
    ],
    ids=lambda v: v[:12] if isinstance(v, str) else v,
)
def test_bad_prune_input_is_a_clear_error_and_deletes_nothing(
    client: TestClient,
    browse_with: BrowseWith,
    seeded_settings: Settings,
    keep: str,
    older_than: str,
    says: str,
) -> None:
    user = browse_with(OPERATOR)
    name = make_backup(client, user)
    before = sorted(backup_dir(seeded_settings).iterdir())
    if keep or older_than:
        asked = {"keep": keep[:60_000], "older_than": older_than[:60_000]}  # httpx's URL limit
        shown = client.get("/admin/backups/prune", params=asked)
        assert shown.status_code == 422 and says in shown.text
        assert 'role="alert"' in shown.text and 'name="expect"' not in shown.text
    r = client.post(
        "/admin/backups/prune",
        data={"csrf": user["csrf"], "keep": keep, "older_than": older_than, "expect": name},
    )
    assert r.status_code == 422 and says in r.text, r.text
    assert sorted(backup_dir(seeded_settings).iterdir()) == before
    assert audit_actions(seeded_settings, "backup.prune") == []


def test_nul_in_prune_input_is_refused(client: TestClient, browse_with: BrowseWith) -> None:
    user = browse_with(OPERATOR)
    assert client.get("/admin/backups/prune", params={"keep": "1\0"}).status_code == 422
    r = client.post("/admin/backups/prune", data={"csrf": user["csrf"], "older_than": "1d\0"})
    assert r.status_code == 422


def test_prune_shows_the_plan_then_deletes_it_keeping_the_newest_verified(
    client: TestClient, browse_with: BrowseWith, seeded_settings: Settings
) -> None:
    user = browse_with(OPERATOR)
    verified = make_backup(client, user, note="verified")
    client.post("/admin/backups/verify", data={"csrf": user["csrf"], "file": verified})
    newer = make_backup(client, user, note="newer")
    plan = client.get("/admin/backups/prune", params={"keep": "0"})
    assert plan.status_code == 200, plan.text
    rows = dict(
        re.findall(
            r'<td class="wrap">([^<]+)</td>\s*<td>[^<]*</td>.*?<td>(.*?)</td>', plan.text, re.S
        )
    )
    assert "keep" in rows[verified] and "the newest verified backup" in rows[verified]
    assert "delete" in rows[newer]
    assert (backup_dir(seeded_settings) / newer).is_file()  # a plan deletes nothing
    expect = re.search(r'name="expect" value="([^"]*)"', plan.text)
    assert expect and newer in expect.group(1).split("\n")
    csrf = re.search(r'name="csrf" value="([^"]*)"', plan.text)
    assert csrf
    # The plan is stale once another backup appears: refused, nothing deleted.
    newest = make_backup(client, user, note="newest")
    stale = client.post(
        "/admin/backups/prune",
        data={"csrf": user["csrf"], "keep": "0", "older_than": "", "expect": expect.group(1)},
    )
    assert stale.status_code == 409 and "nothing was deleted" in stale.text
    assert (backup_dir(seeded_settings) / newer).is_file()
    assert (backup_dir(seeded_settings) / newest).is_file()
    again = client.get("/admin/backups/prune", params={"keep": "0"}).text
    expect = re.search(r'name="expect" value="([^"]*)"', again)
    assert expect
    done = client.post(
        "/admin/backups/prune",
        data={"csrf": user["csrf"], "keep": "0", "older_than": "", "expect": expect.group(1)},
    )
    assert done.status_code == 200 and "Deleted" in done.text, done.text
    assert not (backup_dir(seeded_settings) / newer).exists()
    assert not (backup_dir(seeded_settings) / f"{newest}.json").exists()
    assert (backup_dir(seeded_settings) / verified).is_file()
    assert audit_actions(seeded_settings, "backup.prune") == ["-"]


def test_two_creates_at_once_start_one_backup_and_refuse_the_other(
    client: TestClient, browse_with: BrowseWith, seeded_settings: Settings
) -> None:
    user = browse_with(OPERATOR)
    before = set(backup_dir(seeded_settings).glob("backup_*"))
    pages: list[str] = []

    def create() -> None:
        pages.append(client.post("/admin/backups", data={"csrf": user["csrf"]}).text)

    racers = [threading.Thread(target=create) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sorted("is being written" in page for page in pages) == [False, True]
    started = [p for p in pages if "its progress is shown below" in p]
    name = re.search(r"Writing (\S+):", started[0])
    assert name
    manifest = backup_dir(seeded_settings) / f"{name.group(1)}.json"
    deadline = time.monotonic() + 120
    while not manifest.exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    made = set(backup_dir(seeded_settings).glob("backup_*.dump")) - before
    assert [p.name for p in made] == [name.group(1)]
    assert "failed" not in client.get("/admin/backups").text
