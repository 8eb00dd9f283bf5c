"""The Brain under more concurrent requests than it has database connections or threads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from smartstart.api.app import create_app
from smartstart.config import Settings
from tests.api.conftest import served


@pytest.fixture
def small_brain(seeded_settings: Settings) -> Iterator[str]:
    """A real uvicorn server with only 2 pooled connections, in a thread."""
    with served(create_app(seeded_settings, pool_size=2, pool_timeout=5.0)) as url:
        yield url


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
