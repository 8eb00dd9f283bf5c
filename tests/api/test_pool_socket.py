"""The Brain reaches the embedded cluster over its Unix socket, as the platform user."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from smartstart.api.app import pool_conninfo
from smartstart.config import Settings
from smartstart.pg.cluster import Cluster
from tests.conftest import DB_USER


def test_the_pools_use_the_clusters_socket(client: TestClient, seeded_settings: Settings) -> None:
    assert client.get("/readyz").status_code == 200
    params = conninfo_to_dict(pool_conninfo(seeded_settings))
    assert params["host"] == str(seeded_settings.home_dir / "run")
    with client.app.state.pool.connection() as conn:  # type: ignore[attr-defined]
        # NULL over a Unix socket; an address over TCP.
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)
        assert conn.execute("SELECT current_user").fetchone() == (DB_USER,)


def test_an_external_url_or_a_missing_socket_keeps_tcp(seeded_settings: Settings) -> None:
    url = "postgresql://someone:secret@db.example:5433/app"
    external = seeded_settings.model_copy(update={"database_url": SecretStr(url)})
    assert pool_conninfo(external) == url
    elsewhere = seeded_settings.model_copy(update={"pg_port": 1})  # no socket for that port
    assert pool_conninfo(elsewhere) == elsewhere.url_for()


def test_the_socket_asks_the_platform_user_for_its_password(
    pg_cluster: Cluster, seeded_settings: Settings
) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=str(pg_cluster.socket_dir),
            port=pg_cluster.port,
            user=DB_USER,
            password="not the password",
            dbname=seeded_settings.db_name,
        ).close()
    # The superuser still comes in by peer authentication, without a password.
    with pg_cluster.connect() as conn:
        row: Any = conn.execute("SELECT current_user").fetchone()
        assert row == ("postgres",)
