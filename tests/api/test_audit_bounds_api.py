"""An anonymous client cannot fill the disk through the audit log (issue 7, item 2)."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi.testclient import TestClient

from smartstart.domain import audit

# The edge refuses headers over 16 KiB (431, tests/api/test_edge.py); the longest user agent
# that gets through is still cut to 512 characters before it is stored.
UA = "A" * 15_000
PASSWORD = "correct horse battery staple"  # what make_user's users have (cost 4)


def test_a_long_user_agent_leaves_small_rows(
    client: TestClient, make_user: Any, db: psycopg.Connection[Any]
) -> None:
    user = make_user()
    for password, status in (("a wrong password", 401), (PASSWORD, 200)):
        resp = client.post(
            "/api/auth/login",
            json={"identifier": user["email"], "password": password},
            headers={"User-Agent": UA},
        )
        assert resp.status_code == status, resp.text
    rows = db.execute(
        "SELECT action, octet_length(details::text), length(details->>'userAgent')"
        " FROM audit_log WHERE action LIKE 'auth.login%' ORDER BY id"
    ).fetchall()
    assert [r[0] for r in rows] == ["auth.login_failed", "auth.login"]
    assert all(size < 2048 and ua <= audit.MAX_USER_AGENT for _, size, ua in rows)
    session = db.execute(
        'SELECT length("userAgent") FROM "Session" WHERE "userId" = %s'
        ' ORDER BY "createdAt" DESC LIMIT 1',
        [user["id"]],
    ).fetchone()
    assert session is not None and session[0] <= audit.MAX_USER_AGENT
    total = db.execute(
        "SELECT sum(pg_column_size(details)) FROM audit_log WHERE action LIKE 'auth.%'"
    ).fetchone()
    assert total is not None and total[0] < 4096
