"""Seed data (roles, permissions, journey stages, the guide's users) and fast demo users."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from smartstart.config import Settings
from smartstart.errors import SmartStartError

BCRYPT_COST = 12
CREDENTIALS_FILE = "initial-credentials"
DEMO_DOMAIN = "demo.smartstart.example"  # .example is reserved (RFC 2606): never a real inbox

ROLES: dict[str, str] = {
    "SUPER_ADMIN": "Full control of the platform, including restores and schema changes",
    "ADMIN": "Runs the platform: users, role assignments, journeys, audit, backups",
    "MODERATOR": "Looks after the community: reviews users, suspends accounts, ends sessions",
    "DEVELOPER": "Builds on the platform: read access to data, analytics and database health",
    "MEMBER": "A registered member following the journey",
    "GUEST": "A visitor who may look at the journey before joining",
}

PERMISSIONS: dict[str, str] = {
    "users:read": "View user accounts and profiles",
    "users:write": "Create and update users, change their status and passwords",
    "users:delete": "Delete user accounts",
    "roles:read": "View roles and the permissions they grant",
    "roles:manage": "Create, rename and delete roles",
    "rbac:manage": "Assign roles to users and grant permissions to roles",
    "permissions:read": "View the permission catalogue",
    "journey:read": "View journey stages and progress",
    "journey:manage": "Create, reorder and edit journey stages; set users' progress",
    "analytics:read": "View aggregate analytics: registrations, roles, XP, journey completion",
    "audit:read": "Read the audit log",
    "sessions:read": "View users' sessions",
    "sessions:manage": "Revoke users' sessions",
    "db:read": "View database health, statistics and the list of backups",
    "db:backup": "Create, verify and prune backups",
    "db:restore": "Restore the database from a backup",
    "db:admin": "Migrations, reset, cleanup and database security settings",
}

_ADMIN_EXCLUDED = {"roles:manage", "db:restore", "db:admin"}

# The role -> permission matrix: the API, the CLI and docs/rbac.md all read this.
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "SUPER_ADMIN": tuple(PERMISSIONS),
    "ADMIN": tuple(p for p in PERMISSIONS if p not in _ADMIN_EXCLUDED),
    "MODERATOR": (
        "users:read",
        "users:write",
        "roles:read",
        "journey:read",
        "analytics:read",
        "audit:read",
        "sessions:read",
        "sessions:manage",
    ),
    "DEVELOPER": (
        "users:read",
        "roles:read",
        "permissions:read",
        "journey:read",
        "analytics:read",
        "audit:read",
        "db:read",
        "db:backup",
    ),
    "MEMBER": ("journey:read", "analytics:read"),
    "GUEST": ("journey:read",),
}


@dataclass(frozen=True)
class Stage:
    """One journey stage of the seed data."""

    order: int
    name: str
    xp_reward: int
    description: str


# Rewards add up past 1000 so that finishing the journey alone reaches the top level.
JOURNEY_STAGES: tuple[Stage, ...] = (
    Stage(1, "Welcome", 10, "Create an account and take the tour of the platform"),
    Stage(2, "Email Verification", 20, "Confirm the email address"),
    Stage(3, "Profile Setup", 50, "Add a name, a photo and a short bio"),
    Stage(4, "Skills Assessment", 75, "Tell the platform what you know and want to learn"),
    Stage(5, "First Project", 150, "Start a first project"),
    Stage(6, "Team Collaboration", 200, "Join a team and work on a shared project"),
    Stage(7, "Community Contribution", 250, "Help others: answer, review, share"),
    Stage(8, "Mentorship", 300, "Guide a newer member through their first stages"),
)


@dataclass(frozen=True)
class SeedUser:
    """One of the guide's users, with the journey states it starts with."""

    email: str
    username: str
    first_name: str
    last_name: str
    role: str
    journey: dict[str, str]


SEED_USERS: tuple[SeedUser, ...] = (
    SeedUser(
        "admin@alicesolutionsgroup.com",
        "admin",
        "Platform",
        "Admin",
        "SUPER_ADMIN",
        # "Profile Setup" is left open so that the guide's UPDATE of it completes something.
        {
            "Welcome": "COMPLETED",
            "Email Verification": "COMPLETED",
            "Profile Setup": "IN_PROGRESS",
        },
    ),
    SeedUser(
        "developer@alicesolutionsgroup.com",
        "developer",
        "Platform",
        "Developer",
        "DEVELOPER",
        {
            "Welcome": "COMPLETED",
            "Email Verification": "COMPLETED",
            "Profile Setup": "COMPLETED",
            "Skills Assessment": "COMPLETED",
            "First Project": "IN_PROGRESS",
        },
    ),
)

SEED_TABLES: tuple[str, ...] = (
    "Role",
    "Permission",
    "RolePermission",
    "JourneyStage",
    "User",
    "UserRole",
    "UserJourneyState",
)


@dataclass
class SeedReport:
    """What one `seed` run created; `credentials` holds passwords generated by this run only."""

    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEED_TABLES, 0))
    credentials: dict[str, str] = field(default_factory=dict)
    credentials_file: Path | None = None

    @property
    def total(self) -> int:
        """Rows created in all tables."""
        return sum(self.created.values())


def hash_password(password: str) -> str:
    """bcrypt hash (cost 12, `$2b$`) of a password."""
    raw = password.encode()
    if len(raw) > 72:
        # bcrypt only reads 72 bytes; bcrypt 5 refuses more instead of truncating silently.
        raise SmartStartError(
            "password is longer than 72 bytes, the most bcrypt can use",
            "choose a shorter password",
        )
    return bcrypt.hashpw(raw, bcrypt.gensalt(BCRYPT_COST)).decode()


def is_empty(conn: psycopg.Connection[Any]) -> bool:
    """True when the database has neither roles nor users (a fresh schema that needs seeding)."""
    row = conn.execute(
        'SELECT NOT EXISTS (SELECT 1 FROM "Role") AND NOT EXISTS (SELECT 1 FROM "User")'
    ).fetchone()
    return bool(row and row[0])


def seed(conn: psycopg.Connection[Any], settings: Settings) -> SeedReport:
    """Create whatever seed data is missing, in one transaction; existing rows are left alone."""
    report = SeedReport()
    path = settings.home_dir / CREDENTIALS_FILE
    previous: str | None = None
    touched = False
    try:
        with conn.transaction(), conn.cursor() as cur:
            new_roles = _insert_names(
                cur,
                'INSERT INTO "Role" (name, description) VALUES (%s, %s) '
                "ON CONFLICT DO NOTHING RETURNING name",
                list(ROLES.items()),
            )
            new_perms = _insert_names(
                cur,
                'INSERT INTO "Permission" (name, resource, action, description) '
                "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING name",
                [(name, *name.split(":", 1), desc) for name, desc in PERMISSIONS.items()],
            )
            # Only grants involving a role or permission created now: a grant an
            # operator revoked on purpose is not brought back by a later seed.
            grants = [
                (role, perm)
                for role, perms in ROLE_PERMISSIONS.items()
                for perm in perms
                if role in new_roles or perm in new_perms
            ]
            report.created["RolePermission"] = _insert_count(
                cur,
                'INSERT INTO "RolePermission" ("roleId", "permissionId") '
                'SELECT r.id, p.id FROM "Role" r, "Permission" p WHERE r.name = %s AND p.name = %s '
                "ON CONFLICT DO NOTHING",
                grants,
            )
            # "order" is unique but deferrable, which ON CONFLICT refuses even as an
            # implied arbiter: a stage whose place an operator gave away is skipped instead.
            new_stages = _insert_names(
                cur,
                'INSERT INTO "JourneyStage" (name, description, "order", "xpReward") '
                "SELECT %(name)s, %(description)s, %(order)s, %(xp)s "
                'WHERE NOT EXISTS (SELECT 1 FROM "JourneyStage" WHERE "order" = %(order)s) '
                "ON CONFLICT (name) DO NOTHING RETURNING name",
                [
                    {
                        "name": s.name,
                        "description": s.description,
                        "order": s.order,
                        "xp": s.xp_reward,
                    }
                    for s in JOURNEY_STAGES
                ],
            )
            report.created["Role"] = len(new_roles)
            report.created["Permission"] = len(new_perms)
            report.created["JourneyStage"] = len(new_stages)
            _seed_users(cur, settings, report)
            if report.credentials:
                # Written before the commit, so that a file that cannot be written
                # leaves no user behind whose password nobody knows.
                previous = path.read_text() if path.exists() else None
                touched = True
                _write_credentials(path, report.credentials, previous)
                report.credentials_file = path
    except BaseException:
        # The users were rolled back: their passwords must not stay behind in the file.
        if touched:
            if previous is None:
                path.unlink(missing_ok=True)
            else:
                _write_private(path, previous)
        raise
    return report


def _insert_names(cur: psycopg.Cursor[Any], query: str, params: list[Any]) -> set[str]:
    """Run an INSERT ... RETURNING name for each parameter set; the names actually inserted."""
    names: set[str] = set()
    for p in params:
        row = cur.execute(query, p).fetchone()
        if row is not None:
            names.add(row[0])
    return names


def _insert_count(cur: psycopg.Cursor[Any], query: str, params: list[Any]) -> int:
    """Run an INSERT for each parameter set; the number of rows inserted."""
    count = 0
    for p in params:
        cur.execute(query, p)
        count += max(cur.rowcount, 0)
    return count


def _seed_users(cur: psycopg.Cursor[Any], settings: Settings, report: SeedReport) -> None:
    """Insert the guide's users that are missing, with their journey states."""
    emails = [u.email for u in SEED_USERS]
    cur.execute('SELECT lower(email) FROM "User" WHERE lower(email) = ANY(%s)', [emails])
    existing = {row[0] for row in cur.fetchall()}
    missing = [u for u in SEED_USERS if u.email.lower() not in existing]
    if not missing:
        return
    given = settings.admin_password.get_secret_value() if settings.admin_password else None
    hashed = hash_password(given) if given is not None else None
    stage_ids = dict(cur.execute('SELECT name, id FROM "JourneyStage"').fetchall())
    for user in missing:
        password = given if given is not None else secrets.token_urlsafe(18)
        row = cur.execute(
            'INSERT INTO "User" (email, username, name, "firstName", "lastName", password, role) '
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
            [
                user.email,
                user.username,
                f"{user.first_name} {user.last_name}",
                user.first_name,
                user.last_name,
                hashed or hash_password(password),
                user.role,
            ],
        ).fetchone()
        if row is None:
            continue  # created meanwhile by a concurrent seed, or its username is taken
        report.created["User"] += 1
        report.created["UserRole"] += 1  # the "User" trigger assigns the primary role
        if given is None:
            report.credentials[user.email] = password
        # Every stage gets a state (NOT_STARTED when the user has not reached it): the
        # guide's completion-rate query divides by each stage's number of states.
        for stage, stage_id in stage_ids.items():
            cur.execute(
                'INSERT INTO "UserJourneyState" ("userId", "stageId", status) '
                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [row[0], stage_id, user.journey.get(stage, "NOT_STARTED")],
            )
            report.created["UserJourneyState"] += max(cur.rowcount, 0)


def _write_credentials(path: Path, credentials: dict[str, str], previous: str | None) -> None:
    """Write credentials into the file, keeping the lines of other users it already holds."""
    entries: dict[str, str] = {}
    for line in (previous or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            entries[parts[0]] = parts[1]
    entries.update(credentials)
    _write_private(
        path,
        "# SmartStart initial credentials, generated by `smartstart db seed`.\n"
        "# Log in, change these passwords (`smartstart users passwd`), then delete this file.\n"
        + "".join(f"{email}\t{pw}\n" for email, pw in entries.items()),
    )


def _write_private(path: Path, text: str) -> None:
    """Replace path atomically with text, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created 0600 from the start: the passwords are never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover temp file keeps its old mode otherwise
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- demo users -----------------------------------------------------------------

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
    shared_hash = hash_password(secrets.token_urlsafe(32))
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
