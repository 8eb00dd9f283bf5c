"""Demo users in bulk: the rows made by the server in one transaction, indexes built after.

What `demo.demo_users` does for many users (`BULK_MIN` and more, and at least as many as
the table holds): row by row, a million users cost ~1,000 s in per-row triggers,
foreign-key checks and index entries; here they cost one pass each. The users' transaction
locks the tables it fills (`"User"`, `"UserRole"`, `"UserJourneyState"`: readers of them
wait until it commits), drops their indexes and constraints but the primary key other
tables' foreign keys reference (`"User"`'s), builds them again from the catalog's own
definitions, analyzes them before it commits, and pauses the triggers whose work it does
itself: the level (`User_derive`), the primary role (`User_primary_role`,
`UserRole_dedupe`), the journey derivations and XP award, and the statement triggers that
count role holders (0005) and keep the analytics summaries (0007), whose counts it adds
from the drawn users in one aggregate. Before it commits it checks what those triggers
guarantee on the rows it wrote (their RETURNING); any difference rolls everything back.
The audit entries go in on another connection at the same time (`insert_audit`). Nothing
is updated after its insert: no dead rows."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from smartstart.errors import SmartStartError

# Below this many users the chunked COPY path is cheaper than rebuilding the indexes.
BULK_MIN = 100_000
_USER_TABLES = ("User", "UserRole", "UserJourneyState")
# The per-row triggers whose work the statements below do themselves, and the statement
# triggers whose counts (role holders, analytics summaries) `_SUMMARIES` adds at once from
# the drawn users instead of from transition tables of every inserted row (~20 s at 1M).
_PAUSED = (
    ("User", "User_derive"),
    ("User", "User_primary_role"),
    ("User", "User_holders_insert"),
    ("User", "User_analytics_insert"),
    ("UserRole", "UserRole_dedupe"),
    ("UserRole", "UserRole_holders_insert"),
    ("UserRole", "UserRole_analytics_insert"),
    ("UserJourneyState", "UserJourneyState_derive"),
    ("UserJourneyState", "UserJourneyState_award_insert"),
    ("UserJourneyState", "UserJourneyState_analytics_insert"),
)


# Each user's draws are hashes of its number and the run's seed, not random(), and "now" is
# the run's: the audit entries, made on another connection at the same time, see the same
# users (id, created, active) without waiting for them. The id is a UUIDv7 of the run's
# start and the number, so ids grow: every insert lands at the right edge of the id
# indexes. Numbers follow registration (each user's draw within its own slice of the
# year's spread): "createdAt" grows with the id, so its index is built from sorted input.
def _draw(salt: int) -> str:
    return (
        f"((hashint8extended(g, %(draw_seed)s::bigint + {salt}) & 4503599627370495)::float8"
        " / 4503599627370496)"
    )


_USERS = f"""
SELECT number, id, first, last, role, status, k, created, xp,
       k + CASE WHEN k < %(n_stages)s AND status <> 'PENDING' AND r_open < 0.5
                THEN 1 ELSE 0 END AS steps,
       CASE WHEN status = 'INACTIVE' AND %(now)s - created > interval '91 days'
            THEN created + r_active * (%(now)s - created - interval '91 days')
            ELSE created + (%(now)s - created) * power(r_active, 0.3) END AS active,
       xp / 10 + floor(r_rep * 25)::int AS reputation
FROM (
    SELECT number, first, last, role, status, r_open, r_active, r_rep,
           %(id_prefix)s || substr(c, 1, 3) || '-8' || substr(c, 4, 3) || '-'
               || substr(c, 7, 9) || lpad(to_hex(floor(r_id * 4096)::int), 3, '0') AS id,
           CASE WHEN status = 'PENDING' THEN 0 ELSE k_drawn END AS k,
           (%(xp_after)s::int[])[1 + CASE WHEN status = 'PENDING' THEN 0 ELSE k_drawn END] AS xp,
           %(now)s - make_interval(secs => 60 + %(year)s * (1 - sqrt(
               (number - %(first)s::bigint + r_created) / %(n)s::float8))) AS created
    FROM (
        SELECT g AS number, lpad(to_hex(g), 15, '0') AS c,
               (%(firsts)s::text[])[1 + floor({_draw(1)} * %(n_firsts)s)::int] AS first,
               (%(lasts)s::text[])[1 + floor({_draw(2)} * %(n_lasts)s)::int] AS last,
               (%(roles)s::text[])[width_bucket({_draw(3)}, %(role_cum)s::float8[])] AS role,
               (%(statuses)s::text[])[width_bucket({_draw(4)}, %(status_cum)s::float8[])]
                   AS status,
               width_bucket({_draw(5)}, %(k_cum)s::float8[]) - 1 AS k_drawn,
               {_draw(6)} AS r_open, {_draw(7)} AS r_active, {_draw(8)} AS r_rep,
               {_draw(9)} AS r_id, {_draw(10)} AS r_created
        FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
    ) draws
) decided
"""
# No ORDER BY here nor in the users' inserts: generate_series yields the numbers in order, a
# temporary table is read back in the order it was written (local buffers: no synchronized
# scans, no parallel workers), and a hash join with a small inner side keeps its outer
# order; sorting 1,000,000 users again cost seconds. The states are sorted on purpose.
_NEW_USERS = f"CREATE TEMP TABLE demo_new ON COMMIT DROP AS {_USERS}"


# Each insert returns what the invariant check needs of the rows it wrote (RETURNING: the
# rows as stored, without reading the tables again). `_pair` is a hash of a (user, role id)
# pair: the users' sum equals the assignments' sum when each user got its primary role.
def _pair(user: str, role_id: str) -> str:
    return f"hashtext({user} || ' ' || {role_id})"


_INSERT_USERS = f"""
WITH written AS (
    INSERT INTO "User" (id, email, username, name, "firstName", "lastName", password, role,
                        level, status, xp, reputation, "lastActive", "createdAt", "updatedAt")
    SELECT id, handle || '@' || %(domain)s, handle, first || ' ' || last, first, last,
           %(hash)s, role, (%(levels)s::text[])[1 + k], status, xp, reputation, active, created,
           active
    FROM (SELECT d.*, lower(first) || '.' || lower(last) || '.' || number AS handle
          FROM demo_new d) t
    RETURNING id, role, level, xp
), kinds AS (
    SELECT w.level, w.xp, count(*) AS n, sum({_pair("w.id", "r.id")}) AS pairs
    FROM written w LEFT JOIN "Role" r ON r.name = w.role
    GROUP BY 1, 2
)
SELECT COALESCE(sum(n), 0)::bigint,
       COALESCE(sum(n) FILTER (WHERE level IS DISTINCT FROM smartstart_level_for(xp)), 0)::bigint,
       COALESCE(sum(n * xp), 0)::bigint, COALESCE(sum(pairs), 0)::bigint
FROM kinds
"""

_INSERT_ROLES = f"""
WITH written AS (
    INSERT INTO "UserRole" ("userId", "roleId", "assignedAt")
    SELECT d.id, r.id, d.created FROM demo_new d JOIN "Role" r ON r.name = d.role
    RETURNING "userId", "roleId"
)
SELECT count(*), COALESCE(sum({_pair('"userId"', '"roleId"')}), 0) FROM written
"""

# The state of stage j for a user who completed k stages (and has one open after them).
_STATE_STATUS = "CASE WHEN {j} <= {k} THEN 'COMPLETED' ELSE 'IN_PROGRESS' END"
# A completed state's duration bucket, as migration 0007's trigger counts it ('duration').
_BUCKET = (
    'floor((ln((GREATEST(date_part(\'epoch\'::text, ("completedAt" - "startedAt")),'
    " (0)::double precision) + (1)::double precision)) * (64)::double precision))"
)

# Stages finish in order, spread between registration and last activity; a completed one
# is paid when it goes in ("xpAwardedAt", as the derive trigger would set it), its XP
# already in the user's row. The states go in stage by stage (in the order of the stage
# ids), completed before open, by duration: the order of "UserJourneyState"'s
# (stageId, status) and duration indexes, whose builds then find their input sorted
# (at 1M users 21 s of serial CPU became 3.5 s; the (userId, stageId) index, sorted before,
# now costs 6.5 s instead of 2.8, and this sort 2.5 s). One integer key orders them
# (durations are whole milliseconds, exact in it); ids grow in that order too.
_INSERT_STATES = f"""
WITH written AS (
    INSERT INTO "UserJourneyState" (id, "userId", "stageId", status, "startedAt",
                                    "completedAt", "xpAwardedAt")
    SELECT %(id_prefix)s || substr(c, 1, 3) || '-9' || substr(c, 4, 3) || '-'
               || substr(c, 7, 9) || '000',
           user_id, stage, {_STATE_STATUS.format(j="j", k="k")}, done_at - ms * interval '1 ms',
           CASE WHEN j <= k THEN done_at END, CASE WHEN j <= k THEN %(now)s END
    FROM (
        SELECT s.*, lpad(to_hex(row_number() OVER ()), 15, '0') AS c
        FROM (
            SELECT d.id AS user_id, j, d.k, (%(stage_ids)s::text[])[j] AS stage, x.ms,
                   d.created + (d.active - d.created) * j / (d.steps + 1) AS done_at
            FROM demo_new d, generate_series(1, d.steps) AS j,
                 LATERAL (SELECT floor(date_part('epoch', d.active - d.created) * 1000
                                       / (d.steps + 1) * random())::bigint AS ms) x
            ORDER BY ((%(stage_rank)s::int[])[j] * 2
                      + CASE WHEN j <= d.k THEN 0 ELSE 1 END)::bigint * 100000000000 + x.ms
        ) s
    ) t
    RETURNING "stageId", status, "startedAt", "completedAt", "xpAwardedAt"
), durations AS (
    INSERT INTO analytics_delta (kind, day, subject, status, level, band, n, xp)
    SELECT 'duration', DATE '1970-01-01', "stageId", '', '', ({_BUCKET})::text, count(*), 0
    FROM written WHERE status = 'COMPLETED'
    GROUP BY 3, 6
    RETURNING n
)
SELECT count(*), count(*) FILTER (WHERE w.status = 'COMPLETED'),
       count(*) FILTER (WHERE (w.status = 'COMPLETED') <> (w."xpAwardedAt" IS NOT NULL)
                        OR w."startedAt" > COALESCE(w."completedAt", %(now)s)),
       COALESCE(sum(js."xpReward") FILTER (WHERE w."xpAwardedAt" IS NOT NULL), 0),
       (SELECT COALESCE(sum(n), 0) FROM durations)
FROM written w LEFT JOIN "JourneyStage" js ON js.id = w."stageId"
"""

# Each stage's place among the stage ids in the database's own order (its collation).
_STAGE_RANK = """
SELECT array_agg(r ORDER BY o) FROM (
    SELECT o, rank() OVER (ORDER BY id) AS r
    FROM unnest(%(stage_ids)s::text[]) WITH ORDINALITY AS s(id, o)
) t
"""
# The level of each XP a demo user can have (xp_after): looked up per user rather than
# calling smartstart_level_for a million times (its SET search_path keeps it from being
# inlined: a function call per row). The check compares the rows with the function.
_LEVELS = """
SELECT array_agg(smartstart_level_for(xp) ORDER BY o)
FROM unnest(%(xp_after)s::int[]) WITH ORDINALITY AS s(xp, o)
"""
_DAY = "(({0}) AT TIME ZONE 'UTC')::date"
_BAND = (
    "CASE WHEN {0} < 100 THEN '0-99' WHEN {0} < 500 THEN '100-499'"
    " WHEN {0} < 1000 THEN '500-999' ELSE '1000+' END"
)
# What the paused statement triggers of migration 0007 would have added to the analytics
# summaries for these rows (but the 'duration' counts, made with the states), computed
# from the drawn users grouped once by what the counts depend on (a few thousand groups;
# a user's XP follows from k) instead of joins over every inserted row. Returns the
# totals per kind, which the check compares with the rows written.
_SUMMARIES = f"""
WITH g AS (
    SELECT {_DAY.format("created")} AS day, role, status, k, steps, xp, count(*) AS n
    FROM demo_new GROUP BY 1, 2, 3, 4, 5, 6
), deltas AS (
    INSERT INTO analytics_delta (kind, day, subject, status, level, band, n, xp)
    SELECT kind, day, subject, status, level, band, sum(n), sum(xp)
    FROM (
        SELECT 'user' AS kind, day, role AS subject, status, smartstart_level_for(xp) AS level,
               {_BAND.format("xp")} AS band, n, n * xp AS xp
        FROM g
        UNION ALL
        SELECT 'created', day, '', '', '', '', n, 0 FROM g
        UNION ALL
        SELECT 'active', {_DAY.format("active")}, '', '', '', '', 1, 0 FROM demo_new
        UNION ALL
        SELECT 'role', g.day, r.id, '', '', '', g.n, 0 FROM g JOIN "Role" r ON r.name = g.role
        UNION ALL
        SELECT 'journey', g.day, (%(stage_ids)s::text[])[j],
               {_STATE_STATUS.format(j="j", k="g.k")}, '', '', g.n, 0
        FROM g, generate_series(1, g.steps) AS j
    ) d
    GROUP BY 1, 2, 3, 4, 5, 6
    HAVING sum(n) <> 0 OR sum(xp) <> 0
    RETURNING kind, n, xp
)
SELECT kind, sum(n), sum(xp) FROM deltas GROUP BY kind
"""

# What the paused triggers of migration 0005 would have added to the role holders: each
# user holds one role (its primary one). Returns how many were added.
_HOLDERS = """
WITH added AS (SELECT r.id, count(*) AS n FROM demo_new d JOIN "Role" r ON r.name = d.role
               GROUP BY r.id)
SELECT smartstart_role_holders_add(
           (SELECT jsonb_agg(jsonb_build_object('roleId', id, 'holders', n, 'primaries', n))
            FROM added)),
       (SELECT COALESCE(sum(n), 0) FROM added)
"""


def use_bulk(conn: psycopg.Connection[Any], table: str, rows: int) -> bool:
    """Whether adding `rows` to table goes faster with its indexes built afterwards: many
    rows, and no fewer than it holds (the planner's estimate, pg_class: no scan)."""
    if rows < BULK_MIN:
        return False
    row = conn.execute(
        "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
        [sql.Identifier(table).as_string()],
    ).fetchone()
    return rows >= (int(row[0]) if row else 0)


def _k_cumulative(
    cumulative: list[int],
    bands: tuple[tuple[int, int, int], ...],
    funnel: tuple[float, ...],
) -> list[float]:
    """Lower bounds of width_bucket for the number of completed stages (0..len-1)."""
    p = [0.0] * len(cumulative)
    total = sum(b[0] for b in bands)
    for weight, low, high in bands:
        fits = [k for k, xp in enumerate(cumulative) if low <= xp <= high]
        if not fits:
            fits = [max((k for k, xp in enumerate(cumulative) if xp <= high), default=0)]
        reach = weight / total  # chance of getting to stage fits[0], then further
        for k in range(fits[0], fits[-1]):
            go_on = funnel[min(k, len(funnel) - 1)]
            p[k] += reach * (1 - go_on)
            reach *= go_on
        p[fits[-1]] += reach
    return [0.0, *accumulate(p)][:-1]


def _cumulative(table: tuple[tuple[str, int], ...]) -> tuple[list[str], list[float]]:
    total = sum(w for _, w in table)
    return [name for name, _ in table], [0.0, *accumulate(w / total for _, w in table)][:-1]


def _rebuildable(
    cur: psycopg.Cursor[Any], tables: tuple[str, ...]
) -> tuple[list[sql.Composed], list[sql.Composed]]:
    """(DROP, CREATE) statements of the tables' indexes and constraints but referenced keys.

    Built again from the catalog's own definitions, so `smartstart db check` sees no
    difference. Unique ones are built again too (and so checked again, all at once).
    """
    drops: list[sql.Composed] = []
    indexes: list[sql.Composed] = []
    constraints: list[sql.Composed] = []
    for table, name, kind, definition in cur.execute(
        "SELECT c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid)"
        " FROM pg_constraint c WHERE c.conrelid = ANY(%s::regclass[]) AND (c.contype IN ('f', 'u')"
        # a primary key no foreign key references (that of "User" stays: other tables'
        # keys would have to be dropped and checked again with it)
        " OR c.contype = 'p' AND NOT EXISTS (SELECT 1 FROM pg_constraint f"
        "                                    WHERE f.contype = 'f' AND f.confrelid = c.conrelid))"
        " ORDER BY c.contype DESC, 1, 2",
        [[sql.Identifier(t).as_string() for t in tables]],
    ):
        drops.append(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.SQL(table), sql.Identifier(name)
            )
        )
        # Unique constraints first: foreign keys are validated after the indexes exist.
        (indexes if kind == "u" else constraints).append(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.SQL(table), sql.Identifier(name), sql.SQL(definition)
            )
        )
    for name, definition in cur.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
        " ORDER BY 1",
        [[sql.Identifier(t).as_string() for t in tables]],
    ):
        drops.append(sql.SQL("DROP INDEX {}").format(sql.SQL(name)))
        indexes.append(sql.SQL(definition).format())
    return drops, [*indexes, *constraints]


def _paused(cur: psycopg.Cursor[Any], tables: tuple[str, ...], state: str) -> None:
    for table, trigger in _PAUSED:
        if table in tables:
            cur.execute(
                sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                    sql.Identifier(table), sql.SQL(state), sql.Identifier(trigger)
                )
            )


@contextmanager
def _rebuilt(
    cur: psycopg.Cursor[Any], tables: tuple[str, ...], timing: Callable[[str], None]
) -> Iterator[None]:
    """The tables locked, without their indexes and constraints (primary keys kept) and
    with the paused triggers off inside; all of it back on the way out."""
    cur.execute(
        sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
            sql.SQL(", ").join(map(sql.Identifier, tables))
        )
    )
    drops, creates = _rebuildable(cur, tables)
    for drop in drops:
        cur.execute(drop)
    _paused(cur, tables, "DISABLE")
    # Sorts and index builds of millions of rows: in memory rather than spilled.
    cur.execute("SET LOCAL work_mem = '1GB'")
    cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
    # Compiling these statements (and the foreign keys' checks) cost more than the compiled
    # code saved: at 300,000 users the users' backend used 19.5 s of CPU without JIT
    # against 23.9 s with it.
    cur.execute("SET LOCAL jit = off")
    yield
    for create in creates:
        cur.execute(create)
        timing(create.as_string(cur)[:60])
    _paused(cur, tables, "ENABLE")
    # Fresh statistics for the listings' plans, taken before COMMIT: the rows are still
    # this transaction's, so the sampled pages get no hint bits, and with data checksums
    # a hint bit set after commit costs a full-page image in the WAL and a second write
    # of the page (ANALYZE after commit wrote ~1.9 GB of WAL at 1M users). Its pg_class
    # figures are written in place: a rollback after it leaves them too high until
    # autovacuum, which the rolled-back rows call in, counts the table again.
    cur.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(map(sql.Identifier, tables))))
    timing("ANALYZE")


def parameters(
    start: int, n: int, seed: int | None, stages: list[tuple[str, int]], password_hash: str
) -> dict[str, Any]:
    """What the statements above need to make users start .. start+n-1."""
    from smartstart.db import demo

    now = datetime.now(UTC)
    epoch_hex = f"{int(now.timestamp() * 1000) & ((1 << 48) - 1):012x}"
    cumulative = [0, *accumulate(reward for _, reward in stages)]
    roles, role_cum = _cumulative(demo._DEMO_ROLES)
    statuses, status_cum = _cumulative(demo._DEMO_STATUSES)
    return {
        "draw_seed": random.Random(seed).randrange(1 << 40),  # noqa: S311 - demo data
        "now": now,
        "n": n,
        "first": start,
        "last": start + n - 1,
        "id_prefix": f"{epoch_hex[:8]}-{epoch_hex[8:]}-7",
        "firsts": list(demo.FIRST_NAMES),
        "n_firsts": len(demo.FIRST_NAMES),
        "lasts": list(demo.LAST_NAMES),
        "n_lasts": len(demo.LAST_NAMES),
        "roles": roles,
        "role_cum": role_cum,
        "statuses": statuses,
        "status_cum": status_cum,
        "k_cum": _k_cumulative(cumulative, demo._DEMO_BANDS, demo._DEMO_FUNNEL),
        "xp_after": cumulative,
        "n_stages": len(stages),
        "year": 365 * 86400 - 120,
        "stage_ids": [s[0] for s in stages] or [None],
        "domain": demo.DEMO_DOMAIN,
        "hash": password_hash,
    }


def _backend_cpu(pid: int) -> float:
    """CPU seconds the server process pid has used (0 when it is not on this machine)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timer(conn: psycopg.Connection[Any], who: str) -> Callable[[str], None]:
    """Prints each step's wall and backend CPU seconds when SMARTSTART_DEMO_TIMING is set
    (for bench seed; the CPU of parallel workers is not the backend's)."""
    on = bool(os.environ.get("SMARTSTART_DEMO_TIMING"))
    pid = conn.info.backend_pid
    last = [time.perf_counter(), _backend_cpu(pid) if on else 0.0]

    def step(what: str) -> None:
        now = time.perf_counter()
        if on:
            cpu = _backend_cpu(pid)
            print(
                f"    {who:5} {now - last[0]:6.2f} s ({cpu - last[1]:6.2f} s CPU)"
                f"  {' '.join(what.split())}",
                flush=True,
            )
            last[1] = cpu
        last[0] = now

    return step


def insert_users(conn: psycopg.Connection[Any], params: dict[str, Any]) -> None:
    """The users with their primary roles and journey states, in the caller's transaction."""
    timing = _timer(conn, "users")
    with conn.cursor() as cur, _rebuilt(cur, _USER_TABLES, timing):
        cur.execute("SELECT setseed(%s)", [(params["draw_seed"] % 1000) / 1000])
        cur.execute(_NEW_USERS, params)
        params = {
            **params,
            "stage_rank": _one(cur.execute(_STAGE_RANK, params))[0],
            "levels": _one(cur.execute(_LEVELS, params))[0],
        }
        timing("users drawn")
        users = _one(cur.execute(_INSERT_USERS, params))
        timing('"User"')
        roles = _one(cur.execute(_INSERT_ROLES, params))
        timing('"UserRole"')
        states = _one(cur.execute(_INSERT_STATES, params))
        timing('"UserJourneyState"')
        kinds = {k: (n, xp) for k, n, xp in cur.execute(_SUMMARIES, params)}
        holders = _one(cur.execute(_HOLDERS, params))
        timing("role holders and analytics summaries")
        # before the indexes are built: a broken run fails without building them
        wrong = _broken(params, users, roles, states, kinds, holders)
        if wrong:
            raise SmartStartError(
                "the demo users broke an invariant: "
                + ", ".join(f"{k}: {v}" for k, v in wrong.items()),
                "nothing was added (rolled back); this is a bug in smartstart.db.demo_bulk",
            )


def _one(cur: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    row = cur.fetchone()
    assert row is not None
    return tuple(row)


def _broken(
    params: dict[str, Any],
    users: tuple[Any, ...],
    roles: tuple[Any, ...],
    states: tuple[Any, ...],
    kinds: dict[str, tuple[Any, Any]],
    holders: tuple[Any, ...],
) -> dict[str, Any]:
    """What the paused triggers guarantee, checked on the rows written (their RETURNING):
    each difference by name, none when all hold."""
    n_users, bad_levels, xp, user_pairs = users
    n_roles, role_pairs = roles
    n_states, completed, bad_states, paid, durations = states
    found = {
        "users missing": params["n"] - n_users,
        "users with a wrong level": bad_levels,
        # one assignment per user, and the same (user, role id) pairs on both sides
        "users without their primary role": abs(n_users - n_roles) or int(user_pairs != role_pairs),
        "XP not paid": xp - paid,
        "states not paid as completed": bad_states,
        "role holders not counted": abs(holders[1] - n_roles) + abs(holders[1] - n_users),
    }
    expected = {
        "user": (n_users, xp),
        "created": (n_users, 0),
        "active": (n_users, 0),
        "role": (n_roles, 0),
        "journey": (n_states, 0),
    }
    for kind, (n, total) in expected.items():
        got_n, got_xp = kinds.get(kind, (0, 0))
        found[f"{kind} summaries off by"] = abs(got_n - n) + abs(got_xp - total)
    found["duration summaries off by"] = completed - durations
    return {k: v for k, v in found.items() if v}


def insert_audit(
    conn: psycopg.Connection[Any],
    params: dict[str, Any],
    audit_sql: str,
    audit_params: dict[str, Any],
    *,
    rebuild: bool,
) -> None:
    """The users' audit entries, in the caller's transaction (any connection: the users
    need not be visible to it)."""
    timing = _timer(conn, "audit")
    users = sql.SQL("(SELECT id, created, active FROM ({}) x)").format(sql.SQL(_USERS))
    statement = sql.SQL(audit_sql).format(users=users)
    with conn.cursor() as cur:
        with _rebuilt(cur, ("audit_log",), timing) if rebuild else nullcontext():
            cur.execute("SELECT setseed(%s)", [audit_params["seed"]])
            cur.execute(statement, {**params, **audit_params})
            timing("audit_log")
        if not rebuild:  # _rebuilt analyzes it
            cur.execute("ANALYZE audit_log")
