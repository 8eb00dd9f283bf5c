"""Demo users: `smartstart db seed --demo-users N` adds N generated users, fast (COPY)."""

from __future__ import annotations

import contextlib
import random
import secrets
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from smartstart.domain import passwords
from smartstart.errors import SmartStartError

DEMO_DOMAIN = "demo.smartstart.example"  # .example is reserved (RFC 2606): never a real inbox

FIRST_NAMES = (
    "Aiko", "Amara", "Ana", "Arjun", "Ben", "Chen", "Chloe", "Daniel", "Dana", "Elena",
    "Emma", "Farah", "Gabriel", "Hana", "Ibrahim", "Isla", "Jonas", "Julia", "Kai", "Leila",
    "Liam", "Lucia", "Maya", "Mateo", "Mei", "Noah", "Nora", "Omar", "Priya", "Rafael",
    "Sara", "Sofia", "Tariq", "Uri", "Valentina", "Wei", "Yara", "Yusuf", "Zoe", "Ethan",
)  # fmt: skip
LAST_NAMES = (
    "Adeyemi", "Alvarez", "Bauer", "Cohen", "Costa", "Dubois", "Fischer", "Garcia", "Haddad",
    "Ivanova", "Jensen", "Kim", "Kowalski", "Levi", "Lopez", "Martin", "Mendes", "Moreau",
    "Nakamura", "Nguyen", "Novak", "Okafor", "Olsen", "Patel", "Rossi", "Sato", "Schmidt",
    "Shapiro", "Silva", "Singh", "Smith", "Tanaka", "Virtanen", "Wang", "Weber", "Yilmaz",
)  # fmt: skip
_DEMO_ROLES = (("MEMBER", 80), ("DEVELOPER", 8), ("GUEST", 6), ("MODERATOR", 5), ("ADMIN", 1))
_DEMO_STATUSES = (("ACTIVE", 85), ("INACTIVE", 8), ("PENDING", 4), ("SUSPENDED", 3))
# Share of users whose final XP falls in each level band, and the band's upper bound.
_DEMO_BANDS = ((45, 0, 99), (32, 100, 499), (15, 500, 999), (8, 1000, 5000))
# Chance of completing each further stage: onboarding funnels narrow quickly.
_DEMO_FUNNEL = (0.75, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25)
# Users per transaction. Kept small: each user's role assignment bumps the one-row
# RBAC version, whose row versions pile up (and slow every bump) until commit.
_DEMO_CHUNK = 500
_DEMO_LOCK = "smartstart.demo_users"
_USER_COLUMNS = (
    "id", "email", "username", "name", "firstName", "lastName", "password", "role",
    "status", "xp", "reputation", "lastActive", "createdAt", "updatedAt",
)  # fmt: skip
_STATE_COLUMNS = ("userId", "stageId", "status", "startedAt", "completedAt")
Rows = list[tuple[Any, ...]]


def demo_users(
    conn: psycopg.Connection[Any],
    n: int,
    *,
    progress: Callable[[int], None] | None = None,
    seed: int | None = None,
    rounds: int = passwords.DEFAULT_ROUNDS,
) -> int:
    """Add n demo users by COPY, committed in chunks; all share a hash of a discarded password."""
    if n <= 0:
        return 0
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise SmartStartError(
            "demo_users commits as it goes and cannot run inside an open transaction",
            "commit (or use an autocommit connection) before calling it",
        )
    rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
    # One hash for all (bcrypt at cost 12 takes a quarter of a second), of a password
    # nobody ever sees: demo users cannot log in until an operator sets theirs.
    shared_hash = passwords.hash_password(secrets.token_urlsafe(32), rounds)
    # A session lock, as chunks commit on their own: numbering continues after
    # existing demo users, and a second run waits instead of reusing numbers.
    with conn.transaction():
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", [_DEMO_LOCK])
    try:
        with conn.transaction(), conn.cursor() as cur:
            stages = _demo_prerequisites(cur)
            start = _next_demo_number(cur)
        chunks = _demo_chunks(rng, start, n, stages, shared_hash)
        with _companion(conn) as other:
            _pipeline(conn, other, chunks, progress)
    finally:
        # A connection that is gone has released its session lock already.
        with contextlib.suppress(psycopg.OperationalError), conn.transaction():
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [_DEMO_LOCK])
    return n


def _demo_chunks(
    rng: random.Random, start: int, n: int, stages: list[tuple[str, int]], password_hash: str
) -> Iterator[tuple[int, Rows, Rows]]:
    """(size, user rows, journey state rows) for n demo users numbered from start, by chunk."""
    now = datetime.now(UTC)
    for done in range(0, n, _DEMO_CHUNK):
        size = min(_DEMO_CHUNK, n - done)
        yield size, *_demo_rows(rng, start + done, size, now, stages, password_hash)


def _pipeline(
    conn: psycopg.Connection[Any],
    other: psycopg.Connection[Any] | None,
    chunks: Iterator[tuple[int, Rows, Rows]],
    progress: Callable[[int], None] | None,
) -> None:
    """Insert each chunk's users on conn while the previous chunk's states go in on other."""
    # The triggers make the server the bottleneck, and a backend uses one core:
    # two connections keep both busy. Users and states are separate transactions
    # because only the users' one (role assignments lock the one-row RBAC version)
    # would make another wait.
    done = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future[None] | None = None
        for size, users, states in chunks:
            _copy(conn, "User", _USER_COLUMNS, users)
            if pending is not None:
                pending.result()
                if progress is not None:
                    progress(done)
            if other is None:
                _copy(conn, "UserJourneyState", _STATE_COLUMNS, states)
            else:
                pending = pool.submit(_copy, other, "UserJourneyState", _STATE_COLUMNS, states)
            done += size
            if other is None and progress is not None:
                progress(done)
        if pending is not None:
            pending.result()
            if progress is not None:
                progress(done)


def _copy(conn: psycopg.Connection[Any], table: str, columns: tuple[str, ...], rows: Rows) -> None:
    """COPY rows into table in a transaction of their own."""
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.transaction(), conn.cursor() as cur, cur.copy(stmt) as copy:
        for row in rows:
            copy.write_row(row)


@contextmanager
def _companion(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any] | None]:
    """A second connection to the same database, or None when the server refuses one."""
    try:
        other = psycopg.connect(conn.info.dsn, password=conn.info.password, autocommit=True)
    except psycopg.OperationalError:
        yield None  # e.g. max_connections reached: one connection does it all, slower
        return
    with other:
        yield other


def _demo_prerequisites(cur: psycopg.Cursor[Any]) -> list[tuple[str, int]]:
    """The active stages (id, xpReward) in order; an error when the roles are not seeded."""
    roles = {r[0] for r in cur.execute('SELECT name FROM "Role"').fetchall()}
    missing = {r for r, _ in _DEMO_ROLES} - roles
    if missing:
        raise SmartStartError(
            f"roles {', '.join(sorted(missing))} do not exist",
            "seed the database first (`smartstart db seed`)",
        )
    return cur.execute(
        'SELECT id, "xpReward" FROM "JourneyStage" WHERE active ORDER BY "order"'
    ).fetchall()


def _next_demo_number(cur: psycopg.Cursor[Any]) -> int:
    """The first number no earlier demo user's email uses."""
    row = cur.execute(
        "SELECT COALESCE(max((regexp_match(email, %s))[1]::bigint), 0) + 1 "
        'FROM "User" WHERE email LIKE %s',
        [r"\.(\d+)@" + DEMO_DOMAIN.replace(".", r"\.") + "$", f"%@{DEMO_DOMAIN}"],
    ).fetchone()
    return int(row[0]) if row else 1


def _weighted(rng: random.Random, table: tuple[tuple[Any, ...], ...], k: int) -> list[Any]:
    return rng.choices([t[0] for t in table], weights=[t[1] for t in table], k=k)


def _funnel(rng: random.Random, limit: int) -> int:
    """How many stages (at most limit) a demo user completed."""
    k = 0
    while k < limit and rng.random() < _DEMO_FUNNEL[min(k, len(_DEMO_FUNNEL) - 1)]:
        k += 1
    return k


def _demo_rows(
    rng: random.Random,
    first_number: int,
    size: int,
    now: datetime,
    stages: list[tuple[str, int]],
    password_hash: str,
) -> tuple[Rows, Rows]:
    """Rows for "User" and "UserJourneyState" for `size` demo users."""
    cumulative = [0]
    for _, reward in stages:
        cumulative.append(cumulative[-1] + reward)
    year = timedelta(days=365).total_seconds()
    roles = _weighted(rng, _DEMO_ROLES, size)
    statuses = _weighted(rng, _DEMO_STATUSES, size)
    bands = rng.choices(_DEMO_BANDS, weights=[b[0] for b in _DEMO_BANDS], k=size)
    users: Rows = []
    states: Rows = []
    for i in range(size):
        number = first_number + i
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        handle = f"{first.lower()}.{last.lower()}.{number}"
        # More registrations lately: sqrt skews the spread towards now (platform growth).
        created = now - timedelta(seconds=60 + (year - 120) * (1 - rng.random() ** 0.5))
        span = (now - created).total_seconds()
        status = statuses[i]
        if status == "INACTIVE" and span > 91 * 86400:
            # The guide's cleanup marks users INACTIVE after 90 days without activity.
            last_active = created + timedelta(seconds=rng.random() * (span - 91 * 86400))
        else:
            last_active = created + timedelta(seconds=span * rng.random() ** 0.3)
        _, low, high = bands[i]
        if status == "PENDING":
            low, high = 0, 99  # not yet confirmed: nothing done
        target = int(low + (high - low + 1) * rng.random() ** (2 if high >= 1000 else 1))
        # Journey progress explains part of the XP: the furthest prefix it allows, or less.
        reachable = max(k for k, xp in enumerate(cumulative) if xp <= target)
        completed = 0 if status == "PENDING" else _funnel(rng, reachable)
        base_xp = target - cumulative[completed]  # the trigger adds the completed stages' XP
        user_id = str(uuid.uuid4())
        users.append(
            (
                user_id,
                f"{handle}@{DEMO_DOMAIN}",
                handle,
                f"{first} {last}",
                first,
                last,
                password_hash,
                roles[i],
                status,
                base_xp,
                target // 10 + rng.randrange(0, 25),
                last_active,
                created,
                last_active,
            )
        )
        active_span = (last_active - created).total_seconds()
        open_stage = completed < len(stages) and status != "PENDING" and rng.random() < 0.5
        steps = completed + (1 if open_stage else 0)
        for k in range(steps):
            # Stages finish in order, spread between registration and last activity.
            done_at = created + timedelta(seconds=active_span * (k + 1) / (steps + 1))
            started_at = done_at - timedelta(seconds=active_span / (steps + 1) * rng.random())
            if k < completed:
                states.append((user_id, stages[k][0], "COMPLETED", started_at, done_at))
            else:
                states.append((user_id, stages[k][0], "IN_PROGRESS", started_at, None))
    return users, states
