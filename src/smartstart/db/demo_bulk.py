"""Demo users in bulk: the rows made by the server in one transaction, indexes built after.

What `demo.demo_users` does for many users (`BULK_MIN` and more, and at least as many as
the table holds): row by row, a million users cost ~1,000 s in per-row triggers,
foreign-key checks and index entries; here they cost one pass each. The users' transaction
locks the tables it fills (`"User"`, `"UserRole"`, `"UserJourneyState"`: readers of them
wait until it commits), drops their indexes and constraints but the primary keys, builds
them again from the catalog's own definitions, and pauses the per-row triggers whose work
it does itself: the level (`User_derive`), the primary role (`User_primary_role`,
`UserRole_dedupe`), the journey derivations and XP award. Before it commits it checks
what those triggers guarantee on the rows it wrote; any difference rolls everything back.
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
from typing import Any

import psycopg
from psycopg import sql

from smartstart.errors import SmartStartError

# Below this many users the chunked COPY path is cheaper than rebuilding the indexes.
BULK_MIN = 100_000
_USER_TABLES = ("User", "UserRole", "UserJourneyState")
_PAUSED = (
    ("User", "User_derive"),
    ("User", "User_primary_role"),
    ("UserRole", "UserRole_dedupe"),
    ("UserJourneyState", "UserJourneyState_derive"),
    ("UserJourneyState", "UserJourneyState_award_insert"),
)


# Each user's draws are hashes of its number and the run's seed, not random(): the audit
# entries, made on another connection at the same time, see the same users (id, created,
# active) without waiting for them. The id is a UUIDv7 of the run's start and the number,
# so ids grow: every insert lands at the right edge of the id indexes.
def _draw(salt: int) -> str:
    return (
        f"((hashint8extended(g, %(draw_seed)s::bigint + {salt}) & 4503599627370495)::float8"
        " / 4503599627370496)"
    )


_USERS = f"""
SELECT number, id, first, last, role, status, k, created, xp,
       k + CASE WHEN k < %(n_stages)s AND status <> 'PENDING' AND r_open < 0.5
                THEN 1 ELSE 0 END AS steps,
       CASE WHEN status = 'INACTIVE' AND now() - created > interval '91 days'
            THEN created + r_active * (now() - created - interval '91 days')
            ELSE created + (now() - created) * power(r_active, 0.3) END AS active,
       xp / 10 + floor(r_rep * 25)::int AS reputation
FROM (
    SELECT number, first, last, role, status, r_open, r_active, r_rep,
           %(id_prefix)s || substr(c, 1, 3) || '-8' || substr(c, 4, 3) || '-'
               || substr(c, 7, 9) || lpad(to_hex(floor(r_id * 4096)::int), 3, '0') AS id,
           CASE WHEN status = 'PENDING' THEN 0 ELSE k_drawn END AS k,
           (%(xp_after)s::int[])[1 + CASE WHEN status = 'PENDING' THEN 0 ELSE k_drawn END] AS xp,
           now() - make_interval(secs => 60 + %(year)s * (1 - sqrt(r_created))) AS created
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
# No ORDER BY here nor in the inserts below: generate_series yields the numbers in order, a
# temporary table is read back in the order it was written (local buffers: no synchronized
# scans, no parallel workers), and a nested loop or a hash join with a small inner side
# keeps its outer order; sorting 1,000,000 users and 3,500,000 states again cost seconds.
_NEW_USERS = f"CREATE TEMP TABLE demo_new ON COMMIT DROP AS {_USERS}"

_INSERT_USERS = """
INSERT INTO "User" (id, email, username, name, "firstName", "lastName", password, role,
                    level, status, xp, reputation, "lastActive", "createdAt", "updatedAt")
SELECT id, handle || '@' || %(domain)s, handle, first || ' ' || last, first, last,
       %(hash)s, role, smartstart_level_for(xp), status, xp, reputation, active, created, active
FROM (SELECT d.*, lower(first) || '.' || lower(last) || '.' || number AS handle
      FROM demo_new d) t
"""

_INSERT_ROLES = """
INSERT INTO "UserRole" ("userId", "roleId", "assignedAt")
SELECT d.id, r.id, d.created FROM demo_new d JOIN "Role" r ON r.name = d.role
"""

# Stages finish in order, spread between registration and last activity; a completed one
# is paid when it goes in ("xpAwardedAt", as the derive trigger would set it), its XP
# already in the user's row. State ids extend the user's: they grow too.
_INSERT_STATES = """
INSERT INTO "UserJourneyState" (id, "userId", "stageId", status, "startedAt", "completedAt",
                                "xpAwardedAt")
SELECT left(d.id, 33) || lpad(to_hex(j), 3, '0'), d.id, (%(stage_ids)s::text[])[j],
       CASE WHEN j <= d.k THEN 'COMPLETED' ELSE 'IN_PROGRESS' END,
       x.done_at - (d.active - d.created) / (d.steps + 1) * random(),
       CASE WHEN j <= d.k THEN x.done_at END,
       CASE WHEN j <= d.k THEN now() END
FROM demo_new d, generate_series(1, d.steps) AS j,
     LATERAL (SELECT d.created + (d.active - d.created) * j / (d.steps + 1) AS done_at) x
"""

# What the paused triggers guarantee, on the rows written (their ids are the run's range):
# users with a wrong level, users without their primary role's row, and the XP of the
# users that their paid states did not pay (a total: per user it costs a 30 s aggregate).
_CHECKS = """
SELECT (SELECT count(*) FROM "User" u
        WHERE u.id BETWEEN %(low)s AND %(high)s AND u.level <> smartstart_level_for(u.xp)),
       %(n)s - (SELECT count(*) FROM "User" u JOIN "Role" r ON r.name = u.role
                JOIN "UserRole" ur ON ur."userId" = u.id AND ur."roleId" = r.id
                WHERE u.id BETWEEN %(low)s AND %(high)s),
       (SELECT COALESCE(sum(u.xp), 0) FROM "User" u WHERE u.id BETWEEN %(low)s AND %(high)s)
       - (SELECT COALESCE(sum(js."xpReward"), 0) FROM "UserJourneyState" s
          JOIN "JourneyStage" js ON js.id = s."stageId"
          WHERE s."userId" BETWEEN %(low)s AND %(high)s AND s."xpAwardedAt" IS NOT NULL)
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
    """(DROP, CREATE) statements of the tables' indexes and constraints but primary keys.

    Built again from the catalog's own definitions, so `smartstart db check` sees no
    difference. Unique ones are built again too (and so checked again, all at once).
    """
    drops: list[sql.Composed] = []
    indexes: list[sql.Composed] = []
    constraints: list[sql.Composed] = []
    for table, name, kind, definition in cur.execute(
        "SELECT c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid)"
        " FROM pg_constraint c WHERE c.conrelid = ANY(%s::regclass[]) AND c.contype IN ('f', 'u')"
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
    cur.execute("SET LOCAL work_mem = '512MB'")
    cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
    yield
    for create in creates:
        cur.execute(create)
        timing(create.as_string(cur)[:60])
    _paused(cur, tables, "ENABLE")


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


def _timer() -> Callable[[str], None]:
    """Prints each step's seconds when SMARTSTART_DEMO_TIMING is set (for bench seed)."""
    last = [time.perf_counter()]
    on = bool(os.environ.get("SMARTSTART_DEMO_TIMING"))

    def step(what: str) -> None:
        now = time.perf_counter()
        if on:
            print(f"    {now - last[0]:6.2f} s  {' '.join(what.split())}", flush=True)
        last[0] = now

    return step


def insert_users(conn: psycopg.Connection[Any], params: dict[str, Any]) -> None:
    """The users with their primary roles and journey states, in the caller's transaction."""
    timing = _timer()
    with conn.cursor() as cur:
        with _rebuilt(cur, _USER_TABLES, timing):
            cur.execute("SELECT setseed(%s)", [(params["draw_seed"] % 1000) / 1000])
            cur.execute(_NEW_USERS, params)
            timing("users drawn")
            cur.execute(_INSERT_USERS, params)
            timing('"User"')
            cur.execute(_INSERT_ROLES)
            timing('"UserRole"')
            cur.execute(_INSERT_STATES, params)
            timing('"UserJourneyState"')
        bounds = cur.execute("SELECT min(id), max(id), count(*) FROM demo_new").fetchone()
        assert bounds is not None
        low, high, n = bounds
        found = cur.execute(_CHECKS, {"low": low, "high": high, "n": n}).fetchone()
        assert found is not None
        timing("invariants checked")
    what = ("users with a wrong level", "users without their primary role", "XP not paid")
    wrong = {k: v for k, v in zip(what, found, strict=True) if v}
    if wrong:
        raise SmartStartError(
            "the demo users broke an invariant: "
            + ", ".join(f"{k}: {v}" for k, v in wrong.items()),
            "nothing was added (rolled back); this is a bug in smartstart.db.demo_bulk",
        )


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
    timing = _timer()
    users = sql.SQL("(SELECT id, created, active FROM ({}) x)").format(sql.SQL(_USERS))
    statement = sql.SQL(audit_sql).format(users=users)
    with (
        conn.cursor() as cur,
        _rebuilt(cur, ("audit_log",), timing) if rebuild else nullcontext(),
    ):
        cur.execute("SELECT setseed(%s)", [audit_params["seed"]])
        cur.execute(statement, {**params, **audit_params})
        timing("audit_log")
