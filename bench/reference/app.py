"""The guide's world: a Flask + psycopg2 "Python Brain", the baseline bench_api measures against.

Run under gunicorn (`gunicorn -w 2 bench.reference.app:app`) with REFERENCE_DSN set to a
libpq connection string. On every request it authenticates the Bearer token (SHA-256
looked up in "Session" joined to "User") and decides with the guide's five-table
permission JOIN ("Check user permissions"), with no cache: what the guide's SQL does.
"""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.pool
from flask import Flask, jsonify, request

app = Flask(__name__)

# The user's public columns: everything but the password hash.
USER_COLUMNS = (
    "id",
    "email",
    "username",
    "name",
    "firstName",
    "lastName",
    "role",
    "level",
    "status",
    "xp",
    "reputation",
    "lastActive",
    "createdAt",
    "updatedAt",
)
USER_SQL = "SELECT " + ", ".join(f'"{c}"' for c in USER_COLUMNS) + ' FROM "User" WHERE id = %s'

# Like smartstart.domain.sessions.RESOLVE_SQL: a live session of an ACTIVE user.
SESSION_SQL = """
SELECT u.id
FROM "Session" s JOIN "User" u ON u.id = s."userId"
WHERE s."tokenHash" = %s
  AND s."revokedAt" IS NULL
  AND s."expiresAt" > now()
  AND u.status = 'ACTIVE'
"""

# The guide's "Check user permissions", by user id.
PERMISSIONS_SQL = """
SELECT u.email, r.name AS role, p.name AS permission, p.resource, p.action
FROM "User" u
JOIN "UserRole" ur ON u.id = ur."userId"
JOIN "Role" r ON ur."roleId" = r.id
JOIN "RolePermission" rp ON r.id = rp."roleId"
JOIN "Permission" p ON rp."permissionId" = p.id
WHERE u.id = %s
ORDER BY p.resource, p.action
"""

_pool: psycopg2.pool.ThreadedConnectionPool | None = None
_pool_lock = threading.Lock()


def pool() -> psycopg2.pool.ThreadedConnectionPool:
    """The worker's pool, opened on first use: after gunicorn forked the worker."""
    global _pool
    with _pool_lock:
        if _pool is None:
            size = int(os.environ.get("REFERENCE_POOL_SIZE", "8"))
            _pool = psycopg2.pool.ThreadedConnectionPool(1, size, os.environ["REFERENCE_DSN"])
        return _pool


def error(status: int, message: str) -> Any:
    return jsonify({"error": {"code": status, "message": message}}), status


def permissions(cur: Any, user_id: str) -> set[str]:
    cur.execute(PERMISSIONS_SQL, [user_id])
    return {row[2] for row in cur.fetchall()}


def authorize(cur: Any, permission: str) -> Any:
    """None when the Bearer token's user holds `permission`, else the error response."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return error(401, "no session token")
    cur.execute(SESSION_SQL, [hashlib.sha256(token.strip().encode()).hexdigest()])
    row = cur.fetchone()
    if row is None:
        return error(401, "invalid session")
    if permission not in permissions(cur, row[0]):
        return error(403, f"you need the {permission!r} permission")
    return None


def _json(value: Any) -> Any:
    # ISO 8601 like the Brain (Flask's default would be an RFC 822 date).
    return value.isoformat() if isinstance(value, datetime) else value


@app.get("/api/users/<user_id>")
def get_user(user_id: str) -> Any:
    conn = pool().getconn()
    try:
        # Read-only requests: autocommit spares the reference a BEGIN/COMMIT round trip.
        conn.autocommit = True
        with conn.cursor() as cur:
            denied = authorize(cur, "users:read")
            if denied is not None:
                return denied
            cur.execute(USER_SQL, [user_id])
            row = cur.fetchone()
        if row is None:
            return error(404, "no such user")
        return jsonify({c: _json(v) for c, v in zip(USER_COLUMNS, row, strict=True)})
    finally:
        pool().putconn(conn)


@app.get("/api/authz/check")
def authz_check() -> Any:
    user_id = request.args.get("user", "")
    permission = request.args.get("permission", "")
    if not user_id or not permission:
        return error(422, "user and permission are required")
    conn = pool().getconn()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            denied = authorize(cur, "users:read")
            if denied is not None:
                return denied
            allowed = permission in permissions(cur, user_id)
        return jsonify({"allowed": allowed})
    finally:
        pool().putconn(conn)


@app.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})
