"""The Overview's numbers are exactly the database's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg

from smartstart.domain import overview


def test_summary_counts_users_sessions_and_size(
    db: psycopg.Connection[Any], make_user: Callable[..., dict[str, Any]]
) -> None:
    before = overview.summary(db, idle=timedelta(minutes=120))
    make_user("MEMBER")
    make_user("MEMBER", status="SUSPENDED")
    old = make_user("MEMBER")
    db.execute(
        'UPDATE "User" SET "createdAt" = now() - interval \'30 days\' WHERE id = %s', [old["id"]]
    )
    after = overview.summary(db, idle=timedelta(minutes=120))
    assert after["total"] == before["total"] + 3
    assert after["active"] == before["active"] + 2
    assert after["new"] == before["new"] + 2
    assert after["live"] == before["live"] + 3  # make_user opens a session for each
    assert after["databaseBytes"] > 0


def test_role_grants_lists_every_role_with_its_permissions(db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO \"Role\" (name) VALUES ('EMPTY_ROLE')")
    grants = overview.role_grants(db)
    assert grants["EMPTY_ROLE"] == []
    assert "users:read" in grants["ADMIN"] and "db:restore" not in grants["ADMIN"]
    assert list(grants) == sorted(grants)
