"""Demo users: `smartstart db seed --demo-users N` adds N generated users, fast (COPY)."""

from __future__ import annotations

import contextlib
import random
import secrets
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from smartstart.db import demo_bulk
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
# Share of users whose XP falls in each level band, and the band's bounds. A demo
# user's XP is what its completed stages paid, so the band says how far it got.
_DEMO_BANDS = ((55, 0, 99), (30, 100, 499), (11, 500, 999), (4, 1000, 1_000_000))
# Chance of completing each further stage: onboarding funnels narrow quickly.
_DEMO_FUNNEL = (0.75, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25)
# Users per transaction: each one holds locks that make other writers of "User" and
# "UserJourneyState" wait (readers do not), so a chunk stays well under a second.
_DEMO_CHUNK = 10_000
_DEMO_LOCK = "smartstart.demo_users"
_USER_COLUMNS = (
    "id", "email", "username", "name", "firstName", "lastName", "password", "role",
    "status", "xp", "reputation", "lastActive", "createdAt", "updatedAt",
)  # fmt: skip
_STATE_COLUMNS = ("userId", "stageId", "status", "startedAt", "completedAt")
_ROLE_COLUMNS = ("userId", "roleId", "assignedAt")
# Audit entries per demo user: what a year of logins and journey steps leaves behind.
DEMO_AUDIT_PER_USER = 5
_AUDIT_ACTIONS = (
    ("auth.login", 60), ("auth.logout", 15), ("journey.start", 10), ("journey.complete", 8),
    ("auth.login_failed", 5), ("auth.password_changed", 2),
)  # fmt: skip
_USER_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "smartstart-cli/1.0",
)
Rows = list[tuple[Any, ...]]


def demo_users(
    conn: psycopg.Connection[Any],
    n: int,
    *,
    progress: Callable[[int], None] | None = None,
    seed: int | None = None,
    rounds: int = passwords.DEFAULT_ROUNDS,
    audit_per_user: int = DEMO_AUDIT_PER_USER,
) -> int:
    """Add n demo users; all share a hash of a discarded password.

    Each user gets its journey states, the XP they paid and audit_per_user audit entries.
    Many users (demo_bulk.use_bulk) go in in one transaction that rebuilds the indexes;
    fewer by COPY, committed in chunks.
    """
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
    # A session lock, as chunks commit on their own: a second run waits instead of
    # taking the same numbers.
    with conn.transaction():
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", [_DEMO_LOCK])
    try:
        with conn.transaction(), conn.cursor() as cur:
            stages, role_ids = _demo_prerequisites(cur)
            start = _next_demo_number(cur)
            # Taken at once (sequences are not transactional): a failed run leaves a gap.
            cur.execute("SELECT setval('smartstart_demo_number', %s)", [start + n - 1])
        bulk = demo_bulk.use_bulk(conn, "User", n)
        if bulk:
            params = demo_bulk.parameters(start, n, seed, stages, shared_hash)
            (audit,) = _audit_params(rng, [], stages, audit_per_user)
            rebuild = demo_bulk.use_bulk(conn, "audit_log", n * audit_per_user)
            _bulk(conn, params, audit if audit_per_user else None, rebuild)
            if progress is not None:
                progress(n)
        else:
            chunks = _demo_chunks(rng, start, n, stages, role_ids, shared_hash, audit_per_user)
            with _companion(conn) as other:
                _pipeline(conn, other, chunks, progress)
    finally:
        # A connection that is gone has released its session lock already.
        with contextlib.suppress(psycopg.OperationalError), conn.transaction():
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [_DEMO_LOCK])
    if bulk:
        return n  # its transactions analyzed the tables before they committed
    # Fresh statistics: the listings' plans depend on them, and autovacuum may take a while.
    with conn.transaction():
        for table in ("User", "UserRole", "UserJourneyState", "audit_log"):
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    return n


def _bulk(
    conn: psycopg.Connection[Any],
    params: dict[str, Any],
    audit: dict[str, Any] | None,
    rebuild_audit: bool,
) -> None:
    """demo_bulk's users in one transaction, their audit entries in another at the same time.

    The audit transaction (on a second backend: the other core) commits just after the
    users', and is rolled back when theirs fails; when the server refuses a second
    connection, one transaction does both.
    """
    with _companion(conn) as other:
        if other is None or audit is None:
            with conn.transaction():
                demo_bulk.insert_users(conn, params)
                if audit is not None:
                    demo_bulk.insert_audit(conn, params, _AUDIT_SQL, audit, rebuild=rebuild_audit)
            return
        other.execute("BEGIN")
        # Its index builds serial: the users' transaction, the longer one, gets the
        # parallel workers (1M users: 100 s → 89 s; docs/benchmarks.md, "Session 16").
        other.execute("SET LOCAL max_parallel_maintenance_workers = 0")
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                entries = pool.submit(
                    demo_bulk.insert_audit, other, params, _AUDIT_SQL, audit, rebuild=rebuild_audit
                )
                try:
                    with conn.transaction():
                        demo_bulk.insert_users(conn, params)
                        entries.result()  # its failure rolls the users back too
                except BaseException:
                    other.cancel_safe()
                    raise
            other.execute("COMMIT")
        finally:
            if other.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    other.execute("ROLLBACK")


@dataclass
class _Chunk:
    size: int
    users: Rows
    roles: Rows
    states: Rows
    audit: list[Any]  # the parameters of _AUDIT_SQL


def _demo_chunks(
    rng: random.Random,
    start: int,
    n: int,
    stages: list[tuple[str, int]],
    role_ids: dict[str, str],
    password_hash: str,
    audit_per_user: int,
) -> Iterator[_Chunk]:
    """The rows of n demo users numbered from start, by chunk."""
    now = datetime.now(UTC)
    for done in range(0, n, _DEMO_CHUNK):
        size = min(_DEMO_CHUNK, n - done)
        users, roles, states = _demo_rows(
            rng, start + done, size, now, stages, role_ids, password_hash
        )
        audit = _audit_params(rng, users, stages, audit_per_user)
        yield _Chunk(size, users, roles, states, audit)


def _pipeline(
    conn: psycopg.Connection[Any],
    other: psycopg.Connection[Any] | None,
    chunks: Iterator[_Chunk],
    progress: Callable[[int], None] | None,
) -> None:
    """Write each chunk while the next one is generated; audit entries on the other connection."""
    # The server and this process each keep a core busy; the audit entries (no foreign
    # key, a table of their own) go in on a second backend, a third core when there is one.
    done = 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: list[Future[None]] = []
        for chunk in chunks:
            for f in pending:
                f.result()
            if pending and progress is not None:
                progress(done)
            pending = [pool.submit(_write_users, conn, chunk)]
            if other is None:
                pending[0].result()
                _write_audit(conn, chunk)
            else:
                pending.append(pool.submit(_write_audit, other, chunk))
            done += chunk.size
        for f in pending:
            f.result()
        if pending and progress is not None:
            progress(done)


# The journey states' XP is in the users' rows already: the award trigger must not pay it
# again. Disabling a trigger inside the transaction is invisible to other sessions (the
# catalog change never commits: it is enabled again before COMMIT, or rolled back), and
# the lock it takes (SHARE ROW EXCLUSIVE) makes every other writer of the table wait
# until then; readers go on. The primary-role trigger would insert one "UserRole" row per
# user with one statement each: COPY inserts them all at once.
_PAUSED = (("User", "User_primary_role"), ("UserJourneyState", "UserJourneyState_award_insert"))


def _write_users(conn: psycopg.Connection[Any], chunk: _Chunk) -> None:
    """The chunk's users, role assignments and journey states, in one transaction."""
    with conn.transaction(), conn.cursor() as cur:
        for table, trigger in _PAUSED:
            cur.execute(
                sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(
                    sql.Identifier(table), sql.Identifier(trigger)
                )
            )
        _copy(cur, "User", _USER_COLUMNS, chunk.users)
        _copy(cur, "UserRole", _ROLE_COLUMNS, chunk.roles)
        _copy(cur, "UserJourneyState", _STATE_COLUMNS, chunk.states)
        for table, trigger in _PAUSED:
            cur.execute(
                sql.SQL("ALTER TABLE {} ENABLE TRIGGER {}").format(
                    sql.Identifier(table), sql.Identifier(trigger)
                )
            )


def _copy(cur: psycopg.Cursor[Any], table: str, columns: tuple[str, ...], rows: Rows) -> None:
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with cur.copy(stmt) as copy:
        for row in rows:
            copy.write_row(row)


# Generated by the server from each user's id and active period: five rows a user would
# cost this process more time than the users themselves.
_AUDIT_SQL = """
INSERT INTO audit_log (actor, action, resource, "resourceId", details, ip, "createdAt")
SELECT id, action,
       CASE WHEN left(action, 8) = 'journey.' THEN 'journey_stage' ELSE 'user' END,
       CASE WHEN left(action, 8) = 'journey.'
            THEN (%(stages)s::text[])[1 + floor(random() * %(n_stages)s)::int] ELSE id END,
       (%(agents)s::jsonb[])[1 + floor(random() * %(n_agents)s)::int],
       '10.0.0.1'::inet + floor(random() * 16777214)::bigint,
       at
FROM (SELECT u.id, (%(actions)s::text[])[1 + floor(random() * 100)::int] AS action,
             u.created + random() * (u.active - u.created) AS at
      FROM {users} AS u(id, created, active),
           generate_series(1, %(per_user)s) AS g
      ORDER BY 3) t
"""
_CHUNK_USERS = "unnest(%(ids)s::text[], %(created)s::timestamptz[], %(active)s::timestamptz[])"
# Every demo user already in the table (for a database seeded before demo users had audit rows).
_ALL_DEMO_USERS = (
    f'(SELECT id, "createdAt", "lastActive" FROM "User" WHERE email LIKE \'%%@{DEMO_DOMAIN}\')'
)


def demo_audit(conn: psycopg.Connection[Any], per_user: int, *, seed: int | None = None) -> int:
    """per_user audit entries for every demo user in the table, in the caller's transaction."""
    rng = random.Random(seed)  # noqa: S311 - demo data
    with conn.cursor() as cur:
        stages, _ = _demo_prerequisites(cur)
        (params,) = _audit_params(rng, [], stages, per_user)
        cur.execute("SELECT setseed(%s)", [params["seed"]])
        cur.execute(_AUDIT_SQL.format(users=_ALL_DEMO_USERS), params)
        return cur.rowcount


def _audit_params(
    rng: random.Random, users: Rows, stages: list[tuple[str, int]], per_user: int
) -> list[Any]:
    actions = [a for a, weight in _AUDIT_ACTIONS for _ in range(weight)]
    return [
        {
            "seed": rng.random() * 2 - 1,
            "stages": [s[0] for s in stages] or [None],
            "n_stages": max(len(stages), 1),
            "agents": [Jsonb({"userAgent": agent}) for agent in _USER_AGENTS],
            "n_agents": len(_USER_AGENTS),
            "actions": actions,
            "ids": [u[0] for u in users],
            "created": [u[12] for u in users],
            "active": [u[11] for u in users],
            "per_user": per_user,
        }
    ]


def _write_audit(conn: psycopg.Connection[Any], chunk: _Chunk) -> None:
    """The chunk's audit entries, oldest first, in a transaction of their own."""
    (params,) = chunk.audit
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT setseed(%s)", [params["seed"]])
        cur.execute(_AUDIT_SQL.format(users=_CHUNK_USERS), params)


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


def _demo_prerequisites(cur: psycopg.Cursor[Any]) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """The active stages (id, xpReward) in order and the role ids by name; an error when the
    roles are not seeded."""
    role_ids = dict(cur.execute('SELECT name, id FROM "Role"').fetchall())
    missing = {r for r, _ in _DEMO_ROLES} - set(role_ids)
    if missing:
        raise SmartStartError(
            f"roles {', '.join(sorted(missing))} do not exist",
            "seed the database first (`smartstart db seed`)",
        )
    stages = cur.execute(
        'SELECT id, "xpReward" FROM "JourneyStage" WHERE active ORDER BY "order"'
    ).fetchall()
    return stages, role_ids


def _next_demo_number(cur: psycopg.Cursor[Any]) -> int:
    """The first number no earlier demo user's email uses (a sequence: no scan of "User")."""
    row = cur.execute(
        "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END "
        "FROM smartstart_demo_number"
    ).fetchone()
    return int(row[0]) if row else 1


def _weighted(rng: random.Random, table: tuple[tuple[Any, ...], ...], k: int) -> list[Any]:
    return rng.choices([t[0] for t in table], weights=[t[1] for t in table], k=k)


def _time_ordered_id(rng: random.Random, epoch_ms: int, number: int) -> str:
    """A UUIDv7 (RFC 9562) of the run's start and the user's number: ids that grow.

    Each insert then lands at the right edge of the id indexes (and of every index led by
    a user id), instead of on a random page of indexes that outgrow shared_buffers.
    """
    counter = number & ((1 << 42) - 1)
    value = (
        (epoch_ms & ((1 << 48) - 1)) << 80
        | 0x7 << 76
        | (counter >> 30) << 64
        | 0b10 << 62
        | (counter & ((1 << 30) - 1)) << 32
        | rng.getrandbits(32)
    )
    return str(uuid.UUID(int=value))


def _stages_done(rng: random.Random, cumulative: list[int], low: int, high: int) -> int:
    """How many stages a user whose XP falls in [low, high] completed (a funnel within it)."""
    fits = [k for k, xp in enumerate(cumulative) if low <= xp <= high]
    if not fits:  # the stages' rewards do not reach the band: as far as they go below it
        fits = [max((k for k, xp in enumerate(cumulative) if xp <= high), default=0)]
    k = fits[0]
    while k < fits[-1] and rng.random() < _DEMO_FUNNEL[min(k, len(_DEMO_FUNNEL) - 1)]:
        k += 1
    return k


def _demo_rows(
    rng: random.Random,
    first_number: int,
    size: int,
    now: datetime,
    stages: list[tuple[str, int]],
    role_ids: dict[str, str],
    password_hash: str,
) -> tuple[Rows, Rows, Rows]:
    """Rows for "User", "UserRole" and "UserJourneyState" for `size` demo users."""
    epoch_ms = int(now.timestamp() * 1000)
    cumulative = [0]
    for _, reward in stages:
        cumulative.append(cumulative[-1] + reward)
    year = timedelta(days=365).total_seconds()
    roles = _weighted(rng, _DEMO_ROLES, size)
    statuses = _weighted(rng, _DEMO_STATUSES, size)
    bands = rng.choices(_DEMO_BANDS, weights=[b[0] for b in _DEMO_BANDS], k=size)
    users: Rows = []
    assignments: Rows = []
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
        # Not yet confirmed: nothing done. Otherwise the XP is exactly what the completed
        # stages paid, as if the award trigger had paid them one by one.
        completed = 0 if status == "PENDING" else _stages_done(rng, cumulative, low, high)
        xp = cumulative[completed]
        user_id = _time_ordered_id(rng, epoch_ms, number)
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
                xp,
                xp // 10 + rng.randrange(0, 25),
                last_active,
                created,
                last_active,
            )
        )
        assignments.append((user_id, role_ids[roles[i]], created))
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
    return users, assignments, states
