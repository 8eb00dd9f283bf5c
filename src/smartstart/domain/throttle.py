"""Login throttling: failure counters and locks in "LoginThrottle", and device tokens.

OWASP's answer to lockout abuse ("slow down online guessing with device cookies"), so
that nobody can keep someone else's account locked by failing to sign in to it:

- A device that has signed in to an account holds a device token: a signed cookie
  bound to that account (its user id), with a random device id. Its attempts on that
  account count under its own key, `device:<device id>|<user id>`, and only that
  key's lock applies to it: failures from elsewhere never lock it out.
- Every other attempt is an unknown device's, counted under three keys and refused
  while any of them is locked:
  `pair:<ip>|<account>` (one address guessing one account, PAIR_MAX_FAILURES),
  `ip:<ip>` (one address guessing across accounts, IP_MAX_FAILURES: larger, since
  many people can share an address) and `account:<account>` (ACCOUNT_MAX_FAILURES:
  a slowdown for a guesser spread over many addresses; it holds back unknown devices
  only). `<account>` is the lower-cased email of an existing user (so alternating
  email and username does not double the allowance), else the identifier given.
- After its threshold a key is locked for 2^(failures - threshold) seconds, capped at
  MAX_LOCK; attempts refused while locked do not count. A key's count starts over
  after WINDOW with no failure and no lock.
- A signed-in user's wrong current passwords (a password change) count under
  `password:<user id>`, apart from sign-ins: a stolen session cannot lock the owner out.
- A success clears the device's key, or the unknown device's pair and account keys;
  never the address key (an attacker would reset it with a login of their own).

The key is free text, so this fits the table as it is. Concurrent attempts are not
serialised: a burst can overshoot a threshold by its concurrency.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg

from smartstart import signing
from smartstart.config import Settings

PAIR_MAX_FAILURES = 5
ACCOUNT_MAX_FAILURES = 10
IP_MAX_FAILURES = 20
DEVICE_MAX_FAILURES = 5
PASSWORD_MAX_FAILURES = 5  # wrong current passwords in a password change
MAX_FAILURES = PAIR_MAX_FAILURES  # what one address may try against one account
WINDOW = timedelta(minutes=15)
MAX_LOCK = timedelta(minutes=15)

DEVICE_PURPOSE = "login-device"
DEVICE_LIFETIME = timedelta(days=90)
_MAX_DEVICE_TOKEN = 256  # characters; a real one is about 90


@dataclass(frozen=True)
class Key:
    """One throttle counter and the failures that lock it."""

    name: str
    threshold: int


def account_key(identifier: str) -> str:
    return f"account:{identifier.strip().lower()}"


def ip_key(ip: str) -> str:
    return f"ip:{ip}"


def pair_key(ip: str, account: str) -> str:
    # the address first: it never holds "|", an email may
    return f"pair:{ip}|{account.strip().lower()}"


def password_key(user_id: str) -> str:
    return f"password:{user_id}"


def device_key(user_id: str, device_id: str) -> str:
    return f"device:{device_id}|{user_id}"


# -- device tokens -----------------------------------------------------------------


def issue_device(settings: Settings, user_id: str) -> str:
    """A new device token for a device that has just signed in to user_id's account."""
    # the user id last: the other parts never hold "|"
    payload = f"{secrets.token_urlsafe(16)}|{int(time.time())}|{user_id}"
    return signing.sign(settings, DEVICE_PURPOSE, payload.encode())


def device_id(settings: Settings, token: str | None, user_id: str) -> str | None:
    """The device id of a genuine, unexpired token bound to user_id; None otherwise."""
    if not token or len(token) > _MAX_DEVICE_TOKEN:
        return None
    payload = signing.unsign(settings, DEVICE_PURPOSE, token)
    if payload is None:
        return None
    device, _, rest = payload.decode(errors="replace").partition("|")
    issued, _, owner = rest.partition("|")
    if owner != user_id or not device or not issued.isdigit():
        return None
    if time.time() - int(issued) > DEVICE_LIFETIME.total_seconds():
        return None
    return device


def keys_for(account: str, ip: str | None, *, user_id: str | None, device: str | None) -> list[Key]:
    """The keys an attempt is checked and counted against (see the module's rules)."""
    if device is not None and user_id is not None:
        return [Key(device_key(user_id, device), DEVICE_MAX_FAILURES)]
    keys = [Key(account_key(account), ACCOUNT_MAX_FAILURES)]
    if ip:
        keys += [Key(pair_key(ip, account), PAIR_MAX_FAILURES), Key(ip_key(ip), IP_MAX_FAILURES)]
    return keys


# -- counting and locking ----------------------------------------------------------


def locked_for(conn: psycopg.Connection[Any], keys: list[Key]) -> tuple[int, list[str]]:
    """Seconds until every one of keys is unlocked (0 when none is), and the locked keys."""
    rows = conn.execute(
        'SELECT key, EXTRACT(EPOCH FROM "lockedUntil" - now())::float8 FROM "LoginThrottle"'
        ' WHERE key = ANY(%s) AND "lockedUntil" > now() ORDER BY key',
        [[k.name for k in keys]],
    ).fetchall()
    if not rows:
        return 0, []
    return max(1, math.ceil(max(r[1] for r in rows))), [r[0] for r in rows]


# A key's count starts over once it has been quiet (no failure, no lock) for WINDOW.
_QUIET = (
    'GREATEST("LoginThrottle"."lastFailureAt",'
    ' COALESCE("LoginThrottle"."lockedUntil", "LoginThrottle"."lastFailureAt"))'
    " < now() - %(window)s"
)
FAILURE_SQL = f"""
INSERT INTO "LoginThrottle" (key, failures, "firstFailureAt", "lastFailureAt")
VALUES (%(key)s, 1, now(), now())
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN {_QUIET} THEN 1 ELSE "LoginThrottle".failures + 1 END,
    "firstFailureAt" = CASE WHEN {_QUIET} THEN now() ELSE "LoginThrottle"."firstFailureAt" END,
    "lockedUntil" = CASE WHEN {_QUIET} THEN NULL ELSE "LoginThrottle"."lockedUntil" END,
    "lastFailureAt" = now()
RETURNING failures
"""

LOCK_SQL = """
UPDATE "LoginThrottle"
SET "lockedUntil" = "lastFailureAt" + LEAST(make_interval(secs => power(2, %(exp)s)), %(cap)s)
WHERE key = %(key)s
"""


def record_failure(conn: psycopg.Connection[Any], keys: list[Key]) -> None:
    """Count one failure against each key; lock the keys at or over their threshold."""
    for key in keys:
        row = conn.execute(FAILURE_SQL, {"key": key.name, "window": WINDOW}).fetchone()
        failures = int(row[0]) if row else 1
        if failures >= key.threshold:
            # capped well below float overflow: 2^20 s is already past the 15-minute cap
            exp = min(failures - key.threshold, 20)
            conn.execute(LOCK_SQL, {"key": key.name, "exp": exp, "cap": MAX_LOCK})


def record_success(conn: psycopg.Connection[Any], keys: list[Key]) -> None:
    """Clear the keys a success speaks for: all but the address's."""
    names = [k.name for k in keys if not k.name.startswith("ip:")]
    conn.execute('DELETE FROM "LoginThrottle" WHERE key = ANY(%s)', [names])


def clear(
    conn: psycopg.Connection[Any],
    *,
    accounts: list[str],
    user_id: str | None = None,
    ip: str | None = None,
) -> list[str]:
    """Delete the counters of the accounts (and of user_id's devices) and/or of an address,
    pairs included; the keys deleted."""
    names = [account_key(a) for a in accounts]
    pair_accounts = [a.strip().lower() for a in accounts]
    rows = conn.execute(
        'DELETE FROM "LoginThrottle" WHERE key = ANY(%(names)s) OR key = %(ip)s'
        " OR (key LIKE 'pair:%%' AND (substr(key, strpos(key, '|') + 1) = ANY(%(accounts)s)"
        "     OR substr(key, 6, strpos(key, '|') - 6) = %(addr)s))"
        " OR (key LIKE 'device:%%' AND substr(key, strpos(key, '|') + 1) = %(user)s)"
        " RETURNING key",
        {
            "names": names,
            "ip": ip_key(ip) if ip else None,
            "accounts": pair_accounts,
            "addr": ip,
            "user": user_id,
        },
    ).fetchall()
    return sorted(r[0] for r in rows)
