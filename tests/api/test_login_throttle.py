"""Login throttling over HTTP: nobody can keep someone else's account locked (issue 7,
item 5): a device that has signed in before keeps signing in, whatever others fail."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from smartstart.api.app import create_app
from smartstart.config import Settings
from smartstart.domain import throttle

PASSWORD = "correct horse battery staple"  # what make_user's users have (cost 4)
WRONG = "not the right password"
DEVICE = "smartstart_device"
ATTACKER_IP = "203.0.113.66"


def with_client_ip(app: ASGIApp) -> ASGIApp:
    """The app, with the client address taken from a test header (one TestClient plays
    clients at many addresses)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-client-ip":
                    scope = {**scope, "client": (value.decode(), 40000)}
        await app(scope, receive, send)

    return wrapped


@pytest.fixture
def fast(seeded_settings: Settings) -> Iterator[TestClient]:
    settings = seeded_settings.model_copy(update={"bcrypt_rounds": 4})
    with TestClient(with_client_ip(create_app(settings))) as c:
        yield c


def attempt(
    client: TestClient, ip: str, identifier: str, password: str, device: str | None = None
) -> httpx.Response:
    """One login from `ip`, with the device cookie given (and no other cookie)."""
    client.cookies.clear()
    headers = {"x-test-client-ip": ip}
    if device is not None:
        headers["cookie"] = f"{DEVICE}={device}"
    return client.post(
        "/api/auth/login",
        json={"identifier": identifier, "password": password},
        headers=headers,
    )


def device_of(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    cookie = resp.headers["set-cookie"]
    assert "smartstart_device=" in cookie
    value = resp.cookies.get(DEVICE)
    assert value
    return value


def test_login_sets_a_device_cookie_for_the_login_route_only(
    fast: TestClient, make_user: Any
) -> None:
    user = make_user()
    resp = attempt(fast, "198.51.100.1", user["email"], PASSWORD)
    device_of(resp)
    cookie = next(c for c in resp.headers.get_list("set-cookie") if c.startswith(DEVICE))
    assert "Path=/api/auth/login" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Max-Age=" in cookie


def test_an_attacker_cannot_lock_the_owners_known_device_out(
    fast: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    owner = make_user()
    device = device_of(attempt(fast, "198.51.100.1", owner["email"], PASSWORD))

    # The attacker locks the account from one address...
    for _ in range(throttle.PAIR_MAX_FAILURES):
        assert attempt(fast, ATTACKER_IP, owner["email"], WRONG).status_code == 401
    assert attempt(fast, ATTACKER_IP, owner["email"], WRONG).status_code == 429
    # ...so an unknown device at that address waits, even with the right password,
    assert attempt(fast, ATTACKER_IP, owner["email"], PASSWORD).status_code == 429
    # but the owner's device signs in, even from the attacker's address.
    again = attempt(fast, ATTACKER_IP, owner["email"], PASSWORD, device=device)
    assert again.status_code == 200, again.text
    device = device_of(again)

    # Spread over many addresses, the failures lock the account for unknown devices,
    spread = throttle.ACCOUNT_MAX_FAILURES - throttle.PAIR_MAX_FAILURES
    for i in range(spread):
        assert attempt(fast, f"192.0.2.{i}", owner["username"], WRONG).status_code == 401
    assert attempt(fast, "198.51.100.77", owner["email"], PASSWORD).status_code == 429
    # never for the owner's device.
    assert attempt(fast, "198.51.100.77", owner["email"], PASSWORD, device).status_code == 200

    # A device token of another account, or a forged one, is an unknown device.
    other = make_user()
    others = device_of(attempt(fast, "198.51.100.9", other["email"], PASSWORD))
    for token in (others, device[:-2] + "xx", "garbage"):
        assert attempt(fast, "198.51.100.77", owner["email"], PASSWORD, token).status_code == 429
    throttled = db.execute(
        "SELECT count(*) FROM audit_log WHERE action = 'auth.throttled'"
    ).fetchone()
    assert throttled == (6,)


def test_a_known_device_has_its_own_lock(fast: TestClient, make_user: Any) -> None:
    owner = make_user()
    device = device_of(attempt(fast, "198.51.100.1", owner["email"], PASSWORD))
    for _ in range(throttle.DEVICE_MAX_FAILURES):
        assert attempt(fast, "198.51.100.1", owner["email"], WRONG, device).status_code == 401
    assert attempt(fast, "198.51.100.1", owner["email"], PASSWORD, device).status_code == 429
    # the account itself is not locked: another device of the owner signs in
    assert attempt(fast, "198.51.100.2", owner["email"], PASSWORD).status_code == 200


def test_the_address_limit_holds_across_accounts_and_devices(
    fast: TestClient, make_user: Any
) -> None:
    victims = [make_user() for _ in range(throttle.IP_MAX_FAILURES // 4)]
    for victim in victims:
        for _ in range(4):  # under the per-(account, address) threshold
            assert attempt(fast, ATTACKER_IP, victim["email"], WRONG).status_code == 401
    fresh = make_user()
    assert attempt(fast, ATTACKER_IP, fresh["email"], PASSWORD).status_code == 429
    # the attacker's own account's device cookie does not lift it for other accounts
    mine = make_user()
    device = device_of(attempt(fast, "198.51.100.5", mine["email"], PASSWORD))
    assert attempt(fast, ATTACKER_IP, fresh["email"], PASSWORD, device).status_code == 429
    assert attempt(fast, "198.51.100.6", fresh["email"], PASSWORD).status_code == 200


def test_unlocking_an_account_clears_its_pairs_and_devices(
    fast: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    owner = make_user()
    device = device_of(attempt(fast, "198.51.100.1", owner["email"], PASSWORD))
    for _ in range(throttle.DEVICE_MAX_FAILURES):
        attempt(fast, "198.51.100.1", owner["email"], WRONG, device)
    for _ in range(throttle.PAIR_MAX_FAILURES):
        attempt(fast, ATTACKER_IP, owner["email"], WRONG)
    admin = make_user("SUPER_ADMIN")
    fast.cookies.clear()
    resp = fast.delete(
        "/api/auth/throttle", params={"email": owner["email"]}, headers=admin["headers"]
    )
    assert resp.status_code == 204
    left = [r[0] for r in db.execute('SELECT key FROM "LoginThrottle" ORDER BY key')]
    assert left == [f"ip:{ATTACKER_IP}"]  # a device's failures never count for its address
    assert attempt(fast, ATTACKER_IP, owner["email"], PASSWORD).status_code == 200
    assert attempt(fast, "198.51.100.1", owner["email"], PASSWORD, device).status_code == 200
