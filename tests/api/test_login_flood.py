"""A flood of bad sign-ins does not starve signed-in users (issue 7, item 4): no
connection is held while bcrypt runs, and sign-ins run in a bounded lane of their own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from smartstart.api.app import create_app
from smartstart.config import Settings
from smartstart.domain import throttle
from tests.api.conftest import served

FLOOD = 100


@pytest.fixture
def brain(seeded_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real uvicorn server (4 pooled connections, cost-10 hashing) in a thread."""
    # One loopback address plays a crowd of attackers: its own limit must not end the flood.
    monkeypatch.setattr(throttle, "IP_MAX_FAILURES", 10_000)
    settings = seeded_settings.model_copy(update={"bcrypt_rounds": 10})
    with served(create_app(settings, pool_size=4, pool_timeout=3.0)) as url:
        yield url


def test_signed_in_users_are_served_during_a_login_flood(brain: str, make_user: Any) -> None:
    member = make_user("SUPER_ADMIN")
    flood_codes: list[int] = []
    retry_after: list[str | None] = []
    error_codes: set[str] = set()

    def bad_login(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            resp = client.post(
                f"{brain}/api/auth/login",
                json={"identifier": f"nobody{i}@example.com", "password": "wrong password"},
            )
        flood_codes.append(resp.status_code)
        retry_after.append(resp.headers.get("retry-after"))
        error_codes.add(resp.json()["error"]["code"])

    served: list[tuple[int, float]] = []
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=FLOOD) as pool:
        futures = [pool.submit(bad_login, i) for i in range(FLOOD)]
        time.sleep(0.5)  # the flood is in
        with httpx.Client(timeout=30, headers=member["headers"]) as client:
            for i in range(10):
                t = time.monotonic()
                code = client.get(f"{brain}/api/users?limit=5").status_code
                served.append((code, time.monotonic() - t))
                t = time.monotonic()
                resp = client.patch(f"{brain}/api/users/me", json={"name": f"Still here {i}"})
                served.append((resp.status_code, time.monotonic() - t))
        for f in futures:
            f.result()
    flood_time = time.monotonic() - start

    assert [code for code, _ in served] == [200] * 20
    assert max(seconds for _, seconds in served) < 2.0, served
    # The flood is answered, not queued forever: wrong passwords, or "busy, retry".
    assert len(flood_codes) == FLOOD and set(flood_codes) <= {401, 503}
    assert flood_codes.count(401) >= 1 and flood_codes.count(503) >= 1
    assert error_codes == {"unauthorized", "busy"}
    assert all(r is not None for c, r in zip(flood_codes, retry_after, strict=True) if c == 503)
    assert flood_time < 30
