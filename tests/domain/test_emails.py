"""Emails are normalised (NFC) and refuse invisible characters wherever they enter
(issue 7, item 11): look-alike addresses never make separate accounts."""

from __future__ import annotations

import unicodedata
from typing import Any

import psycopg
import pytest

from smartstart.config import Settings
from smartstart.domain import auth, users
from smartstart.domain.audit import Actor
from smartstart.domain.errors import Conflict, Invalid
from smartstart.domain.resolve import resolve_user

Conn = psycopg.Connection[Any]
CLI = Actor.cli()
PW = "a perfectly fine passphrase"
NFC = unicodedata.normalize("NFC", "café@example.com")
NFD = unicodedata.normalize("NFD", "café@example.com")
INVISIBLE = [
    "ca\u200bfe@example.com",  # zero-width space (Cf)
    "cafe\u200d@example.com",  # zero-width joiner (Cf)
    "\u202ecafe@example.com",  # right-to-left override (Cf)
    "cafe\ufeff@example.com",  # byte order mark (Cf)
    "ca\x07fe@example.com",  # bell (Cc)
    "cafe@exa\u2028mple.com",  # line separator (Zl)
    "cafe@exa\u2029mple.com",  # paragraph separator (Zp)
    "cafe\u00a0@example.com",  # no-break space (Zs)
    "cafe\u3000@example.com",  # ideographic space (Zs)
    "ca\ud800fe@example.com",  # a lone surrogate (Cs)
]


def create(conn: Conn, email: str, username: str) -> dict[str, Any]:
    return users.create(conn, CLI, email=email, username=username, password=PW, rounds=4)


def test_nfc_and_nfd_are_one_address(seeded_conn: Conn) -> None:
    assert NFC != NFD
    user = create(seeded_conn, NFD, "cafe1")
    assert user["email"] == NFC  # stored in NFC
    with pytest.raises(Conflict) as e:
        create(seeded_conn, NFC, "cafe2")
    assert e.value.field == "email"
    other = create(seeded_conn, "other@example.com", "cafe3")
    with pytest.raises(Conflict):
        users.update(seeded_conn, CLI, other["id"], {"email": NFD.upper()})
    count = seeded_conn.execute(
        """SELECT count(*) FROM "User" WHERE lower(email) LIKE 'caf%'"""
    ).fetchone()
    assert count == (1,)


def test_invisible_characters_are_refused_on_create_and_update(seeded_conn: Conn) -> None:
    user = create(seeded_conn, "cafe@example.com", "cafe")
    before = seeded_conn.execute('SELECT count(*) FROM "User"').fetchone()
    for i, email in enumerate(INVISIBLE):
        with pytest.raises(Invalid) as e:
            create(seeded_conn, email, f"look{i}")
        assert e.value.details == {"field": "email"}, repr(email)
        with pytest.raises(Invalid):
            users.update(seeded_conn, CLI, user["id"], {"email": email})
    assert seeded_conn.execute('SELECT count(*) FROM "User"').fetchone() == before
    assert resolve_user(seeded_conn, user["id"])["email"] == "cafe@example.com"


def test_login_looks_emails_up_in_nfc_and_refuses_invisible_identifiers(
    seeded_conn: Conn, seeded_settings: Settings
) -> None:
    settings = seeded_settings.model_copy(update={"bcrypt_rounds": 4})
    user = create(seeded_conn, NFC, "cafe")

    def login(identifier: str) -> auth.SignedIn:
        return auth.login(
            lambda: psycopg.connect(settings.url_for()),
            identifier,
            PW,
            ip="203.0.113.7",
            user_agent=None,
            settings=settings,
        )

    for identifier in (NFC, NFD, NFD.upper(), f"  {NFD} "):
        assert login(identifier).user["id"] == user["id"]
    for identifier in ("caf\u00e9\u200b@example.com", "ca\x07fe"):
        with pytest.raises(Invalid) as e:
            login(identifier)
        assert e.value.details == {"field": "identifier"}
    assert resolve_user(seeded_conn, NFD)["id"] == user["id"]  # `auth sessions USER`
    # an unlock names the account the same way
    with pytest.raises(Invalid):
        auth.clear_throttle(seeded_conn, CLI, email="ca\u200bfe@example.com")
