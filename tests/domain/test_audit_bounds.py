"""Every audit row and session has a bounded size, whatever the input (issue 7, item 2)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

from smartstart.domain import audit, sessions
from smartstart.domain.audit import Actor

Conn = psycopg.Connection[Any]
ROW_LIMIT = 128 * 1024  # bytes of one audit row's details, whatever was passed in


def last_row(conn: Conn) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT octet_length(details::text), details, actor, action, resource,"
        ' "resourceId", ip FROM audit_log ORDER BY id DESC LIMIT 1'
    ).fetchone()
    assert row is not None
    return tuple(row)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": "x" * 10_000}
    for i in range(depth):
        value = {f"level{i}": value, "list": list(range(1000))}
    return value


def test_huge_and_deeply_nested_details_are_bounded(seeded_conn: Conn) -> None:
    actor = Actor("x" * 100_000, ip="y" * 10_000, user_agent="z" * 4_000_000)
    audit.record(
        seeded_conn,
        actor,
        "a" * 10_000,
        resource="r" * 10_000,
        resource_id="i" * 10_000,
        before=nested(500),
        after=[nested(3)] * 10_000,  # one object 10,000 times: as big to walk, cheap to build
        text="t" * 4_000_000,
        many={str(i): "v" * 1000 for i in range(100_000)},
        nul="a\x00b",
        huge=10**5000,
        nan=float("nan"),
        password="never stored",
    )
    size, details, *columns = last_row(seeded_conn)
    assert size < ROW_LIMIT
    *texts, ip = columns
    assert all(len(c) <= audit.MAX_COLUMN for c in texts)
    assert ip is None  # the column is inet: text that is no address is not stored
    assert details["password"] == "***"
    assert len(details["userAgent"]) <= audit.MAX_USER_AGENT
    assert details["userAgent"].endswith("more characters]")
    assert details["nul"] == "a\ufffdb" and details["nan"] == "nan"
    assert len(details["text"]) <= audit.MAX_VALUE and "more characters" in details["text"]
    assert len(details["many"]) == audit.MAX_ITEMS + 1  # and a marker of how many more

    depth, node = 0, details["before"]
    while isinstance(node, dict) and any(k.startswith("level") for k in node):
        node = next(v for k, v in node.items() if k.startswith("level"))
        depth += 1
    assert depth < audit.MAX_DEPTH and "nested too deep" in node


def test_ordinary_details_are_kept_as_they_are(seeded_conn: Conn) -> None:
    actor = Actor.user("u1", "203.0.113.7", "Mozilla/5.0")
    before = {"email": "a@example.com", "xp": 10, "tags": ["a", "b"], "ok": True, "none": None}
    audit.record(
        seeded_conn,
        actor,
        "users.update",
        resource="user",
        resource_id="u1",
        before=before,
        after={**before, "xp": 20},
        fields=["xp"],
    )
    _, details, *columns = last_row(seeded_conn)
    assert details == {
        "before": before,
        "after": {**before, "xp": 20},
        "fields": ["xp"],
        "userAgent": "Mozilla/5.0",
    }
    assert columns == ["u1", "users.update", "user", "u1", "203.0.113.7"]


def test_a_sessions_user_agent_is_bounded(seeded_conn: Conn) -> None:
    row = seeded_conn.execute('SELECT id FROM "User" LIMIT 1').fetchone()
    assert row is not None
    _, session = sessions.create(
        seeded_conn, row[0], lifetime=timedelta(hours=1), user_agent="Z\x00" * 2_000_000
    )
    assert len(session["userAgent"]) <= audit.MAX_USER_AGENT
    assert "\x00" not in session["userAgent"]
