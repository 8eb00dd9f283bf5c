"""The Brain under more concurrent requests than it has database connections or threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import uvicorn

from smartstart.api.app import create_app
from smartstart.config import Settings
from tests.conftest import free_port


@pytest.fixture
def small_brain(seeded_settings: Settings) -> Iterator[str]:
    """A real uvicorn server with only 2 pooled connections, in a thread."""
    port = free_port()
    config = uvicorn.Config(
        create_app(seeded_settings, pool_size=2, pool_timeout=5.0),
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_many_more_requests_than_connections_all_succeed(small_brain: str, token_for: Any) -> None:
    # 80 in flight > 40 worker threads > 2 connections: waiting for a connection in a
    # worker thread would deadlock until the pool timeout and answer 503s.
    headers = {"Authorization": f"Bearer {token_for('admin@alicesolutionsgroup.com')}"}
    with httpx.Client(timeout=30) as client:

        def one(_: int) -> int:
            return client.get(f"{small_brain}/api/users?limit=5", headers=headers).status_code

        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=80) as pool:
            codes = list(pool.map(one, range(240)))
        elapsed = time.monotonic() - start
    assert codes == [200] * 240
    assert elapsed < 30
