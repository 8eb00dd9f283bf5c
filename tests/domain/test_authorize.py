"""The kernel's permission decision: Actor, decide() and authorize()."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from smartstart.config import Settings
from smartstart.db.seed import ROLE_PERMISSIONS
from smartstart.domain import audit, users
from smartstart.domain.actor import Actor
from smartstart.domain.authorize import Denied, Target, authorize, decide, permits
from smartstart.domain.resolve import resolve_user

MODERATOR = frozenset(ROLE_PERMISSIONS["MODERATOR"])
EVERYTHING = frozenset(ROLE_PERMISSIONS["SUPER_ADMIN"])


def test_actor_is_importable_from_audit_and_the_operator_is_explicit() -> None:
    assert audit.Actor is Actor
    operator = Actor.operator()
    assert operator.is_operator and operator.label.startswith("cli:")
    assert Actor.cli() == operator
    assert not Actor.anonymous().holds("journey:read")
    assert operator.holds("anything:at-all")


def test_decide_applies_each_rule() -> None:
    moderator = Actor.user("m", permissions=MODERATOR)
    assert decide(moderator, "users:write") is None
    missing = decide(moderator, "users:delete")
    assert isinstance(missing, Denied) and missing.reason == "missing"
    outranked = decide(moderator, "users:write", Target("s", EVERYTHING))
    assert outranked is not None and outranked.reason == "outranked"
    assert "db:restore" in outranked.details["missing"]
    assert decide(moderator, "users:write", Target("peer", MODERATOR)) is None
    beyond = decide(moderator, "rbac:manage", grants={"users:read"})
    assert beyond is not None and beyond.reason == "missing"
    beyond = decide(moderator, None, grants={"db:restore"})
    assert beyond is not None and beyond.reason == "grant_beyond_own"
    own = decide(moderator, "users:write", Target("m", MODERATOR), not_on_self="not yours")
    assert own is not None and own.reason == "self" and own.message == "not yours"
    operator = Actor.operator()
    assert decide(operator, "db:restore", Target("s", EVERYTHING), grants=EVERYTHING) is None
    assert permits(moderator, "users:read") and not permits(moderator, "db:read")


def test_a_denial_survives_the_rollback_of_the_refused_transaction(
    seeded_settings: Settings,
) -> None:
    with psycopg.connect(seeded_settings.url_for()) as conn:  # one transaction
        target = resolve_user(conn, "admin")
        moderator = Actor(label="moderator-x", permissions=MODERATOR)
        with pytest.raises(Denied) as e:
            users.set_xp(conn, moderator, "admin", 999_999)
        assert e.value.reason == "outranked"
        conn.rollback()
        rows: list[Any] = conn.execute(
            "SELECT actor, \"resourceId\", details->>'reason', details->>'user' FROM audit_log"
            " WHERE action = 'authz.denied'"
        ).fetchall()
        assert rows == [("moderator-x", "users:write", "outranked", target["id"])]
        assert resolve_user(conn, "admin")["xp"] == target["xp"]
        authorize(conn, Actor.operator(), "db:restore", target["id"])  # never refused
