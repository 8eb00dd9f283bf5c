"""/healthz and /readyz of the Brain."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from smartstart.api.app import create_app
from smartstart.config import Settings
from smartstart.db import migrate
from smartstart.pg.cluster import Cluster
from tests.conftest import drop_db, settings_for


def test_healthz_answers_without_a_database(db_settings: Settings) -> None:
    broken = db_settings.model_copy(update={"pg_port": 1})
    with TestClient(create_app(broken)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_200_at_head(db_settings: Settings) -> None:
    with TestClient(create_app(db_settings)) as client:
        resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ready", "revision": migrate.head_revision()}


def test_readyz_is_503_when_the_schema_is_behind(db_settings: Settings) -> None:
    migrate.downgrade(db_settings.sqlalchemy_url(), "base")
    with TestClient(create_app(db_settings)) as client:
        resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable"
    assert "smartstart db migrate" in body["reason"] and body["head"] == migrate.head_revision()


def test_readyz_is_503_when_the_database_is_unreachable(pg_cluster: Cluster) -> None:
    gone = settings_for(pg_cluster, "no_such_database")
    drop_db(pg_cluster, "no_such_database")
    with TestClient(create_app(gone)) as client:
        resp = client.get("/readyz")
    assert resp.status_code == 503
    assert "database unreachable" in resp.json()["reason"]
    assert "no_such_database" in resp.json()["reason"]


def test_api_answers_503_quickly_when_the_database_is_down(db_settings: Settings) -> None:
    broken = db_settings.model_copy(update={"pg_port": 1})
    with TestClient(create_app(broken, pool_timeout=1.0)) as client:
        start = time.monotonic()
        resp = client.get("/api/users/x", headers={"Authorization": "Bearer t"})
        elapsed = time.monotonic() - start
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "database_unavailable"
    assert resp.headers["Retry-After"] == "5"
    assert elapsed < 5


def test_a_brain_whose_database_is_being_restored_says_so(
    db_settings: Settings, tmp_path: Path
) -> None:
    """The restore's marker turns the outage's 503 into `restoring`, while it is live."""
    import json
    import subprocess
    import sys

    from smartstart.pg import restoring

    broken = db_settings.model_copy(update={"pg_port": 1, "home": tmp_path})

    def answer() -> tuple[int, str | None, dict[str, Any]]:
        resp = client.get("/api/users/x", headers={"Authorization": "Bearer t"})
        return resp.status_code, resp.headers.get("Retry-After"), resp.json()["error"]

    with TestClient(create_app(broken, pool_timeout=0.2)) as client:
        assert answer()[2]["code"] == "database_unavailable"
        with restoring.marked(tmp_path, "pitr", "point-in-time recovery to 2026-11-29 12:00"):
            status, retry_after, error = answer()
            assert (status, retry_after, error["code"]) == (503, "5", "restoring")
            assert "point-in-time recovery to 2026-11-29 12:00" in error["message"]
            assert error["details"]["reason"] == "pitr" and error["details"]["since"]
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert "restoring: point-in-time recovery to" in ready.json()["reason"]
        # Just ended: the pools' reconnection still owes its failures to the restore.
        assert answer()[2]["code"] == "restoring"
        mark = json.loads((tmp_path / restoring.MARK).read_text())
        (tmp_path / restoring.MARK).write_text(
            json.dumps({**mark, "ended": time.time() - restoring.GRACE - 1})
        )
        assert answer()[2]["code"] == "database_unavailable"
        # A restore killed before it could say it ended: its process is gone.
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        (tmp_path / restoring.MARK).write_text(
            json.dumps({**mark, "ended": None, "pid": int(dead.stdout)})
        )
        assert answer()[2]["code"] == "database_unavailable"
        (tmp_path / restoring.MARK).write_text("not json\0")
        assert answer()[2]["code"] == "database_unavailable"


def test_docs_are_served_without_a_cdn(db_settings: Settings) -> None:
    with TestClient(create_app(db_settings)) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower()
        assert "/docs/static/swagger-ui-bundle.js" in page.text
        js = client.get("/docs/static/swagger-ui-bundle.js")
        assert js.status_code == 200 and len(js.content) > 100_000
        assert client.get("/openapi.json").json()["info"]["title"] == "SmartStart Brain"


def test_huge_bodies_are_refused_with_413(db_settings: Settings) -> None:
    big = b'{"identifier": "' + b"x" * (2 * 1024 * 1024) + b'", "password": "y"}'
    with TestClient(create_app(db_settings)) as client:
        resp = client.post(
            "/api/auth/login", content=big, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 413
        assert resp.json()["error"]["code"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit still holds
            for i in range(0, len(big), 65536):
                yield big[i : i + 65536]

        resp = client.post(
            "/api/auth/login", content=chunks(), headers={"content-type": "application/json"}
        )
        assert resp.status_code == 413
        assert resp.json()["error"]["code"] == "payload_too_large"
