"""analytics: summary counts kept by statement triggers, duration index for journey medians

Revision ID: 0007
Revises: 0004
Create Date: 2026-11-29 17:00:00
"""

import re
from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Counted per UTC day: the summaries must not depend on a session's TimeZone.
DAY = "(({0}) AT TIME ZONE 'UTC')::date"
# The guide's XP bands, as its query labels them.
BAND = (
    "CASE WHEN {0} < 100 THEN '0-99' WHEN {0} < 500 THEN '100-499'"
    " WHEN {0} < 1000 THEN '500-999' ELSE '1000+' END"
)
# The bucket of a completed state's duration: 64 per factor e (1.6 % wide). The index
# "UserJourneyState_stageId_duration_idx" is on this very expression (with the duration
# after it), and the 'duration' counts use it too: a stage's median is the k-th entry of
# its bucket, found by skipping within that bucket only. domain/analytics.py repeats it.
DURATION_BUCKET = (
    'floor((ln((GREATEST(date_part(\'epoch\'::text, ({0}"completedAt" - {0}"startedAt")),'
    " (0)::double precision) + (1)::double precision)) * (64)::double precision))"
)
# The 'duration' counts are not per cohort: one fixed day.
NO_DAY = "DATE '1970-01-01'"
# Any fixed key: one compaction at a time; TRUNCATE waits for a running one.
COMPACT_LOCK_KEY = 7_274_637_407
# A writer's statement folds the pending deltas into the totals once in this many.
COMPACT_EVERY = 500


def _user(rows: str, sign: str) -> str:
    """The 'user', 'created' and 'active' deltas of a transition table, signed."""
    return f"""
        SELECT 'user' AS kind, {DAY.format('"createdAt"')} AS day, role AS subject, status,
               level, {BAND.format("xp")} AS band, {sign}1 AS n, {sign}xp::bigint AS xp
        FROM {rows}
        UNION ALL
        SELECT 'created', {DAY.format('"createdAt"')}, '', '', '', '', {sign}1, 0 FROM {rows}
        UNION ALL
        SELECT 'active', {DAY.format('"lastActive"')}, '', '', '', '', {sign}1, 0 FROM {rows}"""


def _child(kind: str, rows: str, sign: str, status: str) -> str:
    """The deltas of "UserRole" or "UserJourneyState" rows, by their user's registration day.

    A row whose user is gone is one its user's deletion cascades to: that deletion's
    BEFORE trigger subtracted it already.
    """
    subject = '"roleId"' if kind == "role" else '"stageId"'
    deltas = f"""
        SELECT '{kind}' AS kind, {DAY.format('u."createdAt"')} AS day, r.{subject} AS subject,
               {status} AS status, '' AS level, '' AS band, {sign}1 AS n, 0::bigint AS xp
        FROM {rows} r JOIN "User" u ON u.id = r."userId" """
    if kind == "journey":
        # Completed states by duration bucket, whoever the user (a cascade included).
        deltas += f"""
        UNION ALL
        SELECT 'duration', {NO_DAY}, r."stageId", '', '', ({DURATION_BUCKET.format("r.")})::text,
               {sign}1, 0
        FROM {rows} r WHERE r.status = 'COMPLETED' """
    return deltas


def _insert(deltas: str) -> str:
    """Insert the summed deltas of a query, leaving out those that cancel out."""
    return f"""
    INSERT INTO analytics_delta (kind, day, subject, status, level, band, n, xp)
    SELECT kind, day, subject, status, level, band, sum(n), sum(xp)
    FROM ({deltas}) d
    GROUP BY kind, day, subject, status, level, band
    HAVING sum(n) <> 0 OR sum(xp) <> 0;"""


def _trigger_function(name: str, insert: str, update: str, delete: str, kinds: str) -> str:
    return f"""
CREATE FUNCTION {name}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN {insert}
    ELSIF TG_OP = 'UPDATE' THEN {update}
    ELSIF TG_OP = 'DELETE' THEN {delete}
    ELSE
        -- TRUNCATE: nothing left to count. After any running compaction, so that none of
        -- the deltas it folds survives.
        PERFORM pg_advisory_xact_lock({COMPACT_LOCK_KEY});
        DELETE FROM analytics_delta WHERE kind IN ({kinds});
        DELETE FROM analytics_count WHERE kind IN ({kinds});
        RETURN NULL;
    END IF;
    IF random() < {1 / COMPACT_EVERY} THEN
        PERFORM smartstart_analytics_compact();
    END IF;
    RETURN NULL;
END
$$;"""


# A user whose registration day changes takes its roles and journey states along.
_MOVED_USERS = f"""
        SELECT n.id, {DAY.format('o."createdAt"')} AS old_day, {DAY.format('n."createdAt"')} AS day
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE {DAY.format('o."createdAt"')} <> {DAY.format('n."createdAt"')}"""
_MOVED_CHILDREN = f"""
        SELECT 'role' AS kind, v.d AS day, r."roleId" AS subject, '' AS status, '' AS level,
               '' AS band, v.s AS n, 0::bigint AS xp
        FROM ({_MOVED_USERS}) m JOIN "UserRole" r ON r."userId" = m.id,
             LATERAL (VALUES (m.day, 1), (m.old_day, -1)) v(d, s)
        UNION ALL
        SELECT 'journey', v.d, j."stageId", j.status, '', '', v.s, 0
        FROM ({_MOVED_USERS}) m JOIN "UserJourneyState" j ON j."userId" = m.id,
             LATERAL (VALUES (m.day, 1), (m.old_day, -1)) v(d, s)"""
_USER_UPDATE = (
    _insert(_user("new_rows", "") + " UNION ALL " + _user("old_rows", "-"))
    + f"""
        IF EXISTS ({_MOVED_USERS}) THEN {_insert(_MOVED_CHILDREN)}
        END IF;"""
)
_USER_GONE = f"""
        SELECT 'role' AS kind, {DAY.format('OLD."createdAt"')} AS day, "roleId" AS subject,
               '' AS status, '' AS level, '' AS band, -1 AS n, 0::bigint AS xp
        FROM "UserRole" WHERE "userId" = OLD.id
        UNION ALL
        SELECT 'journey', {DAY.format('OLD."createdAt"')}, "stageId", status, '', '', -1, 0
        FROM "UserJourneyState" WHERE "userId" = OLD.id"""


def _child_function(name: str, kind: str, status: str, kinds: str) -> str:
    """The trigger function of "UserRole" (kind role) or "UserJourneyState" (journey)."""
    inserted = _child(kind, "new_rows", "", status)
    deleted = _child(kind, "old_rows", "-", status)
    return _trigger_function(
        name,
        _insert(inserted),
        _insert(inserted + " UNION ALL " + deleted),
        _insert(deleted),
        kinds,
    )


_USER_FUNCTION = _trigger_function(
    "smartstart_analytics_user",
    _insert(_user("new_rows", "")),
    _USER_UPDATE,
    _insert(_user("old_rows", "-")),
    "'user', 'created', 'active'",
)
_USER_ROLE_FUNCTION = _child_function("smartstart_analytics_user_role", "role", "''", "'role'")
_JOURNEY_FUNCTION = _child_function(
    "smartstart_analytics_journey", "journey", "r.status", "'journey', 'duration'"
)
_EVERYTHING = " UNION ALL ".join(
    (
        _user('"User"', ""),
        _child("role", '"UserRole"', "", "''"),
        _child("journey", '"UserJourneyState"', "", "r.status"),
    )
)
_USER_GONE_INSERT = _insert(_USER_GONE)

# The columns of analytics_count and analytics_delta (after its id).
_COLUMNS = """    kind text NOT NULL,
    day date NOT NULL,
    subject text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT '',
    level text NOT NULL DEFAULT '',
    band text NOT NULL DEFAULT '',
    n bigint NOT NULL,
    xp bigint NOT NULL DEFAULT 0,"""

FUNCTIONS = f"""
-- Totals per kind and key; analytics_delta holds what the triggers added since the last
-- compaction. A read sums both, in one snapshot.
CREATE TABLE analytics_count (
{_COLUMNS}
    CONSTRAINT analytics_count_pkey PRIMARY KEY (kind, day, subject, status, level, band)
);
-- Writers only ever INSERT here: no row is shared between two transactions, so no
-- writer waits for another (a counter row per day would serialise the day's sign-ups).
CREATE TABLE analytics_delta (
    id bigint GENERATED BY DEFAULT AS IDENTITY,
{_COLUMNS}
    CONSTRAINT analytics_delta_pkey PRIMARY KEY (id)
);
-- Exact medians of time to complete: the completed states of a stage by duration bucket,
-- then duration; the timestamps included so that reading them never visits the table.
CREATE INDEX "UserJourneyState_stageId_duration_idx" ON "UserJourneyState"
    ("stageId", ({DURATION_BUCKET.format("")}), ("completedAt" - "startedAt"))
    INCLUDE ("completedAt", "startedAt") WHERE status = 'COMPLETED';

-- Fold the deltas into the totals; the number of deltas folded (0 when another
-- transaction is compacting). Safe at any time: the deltas deleted and the totals
-- updated commit together.
CREATE FUNCTION smartstart_analytics_compact() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    moved bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock({COMPACT_LOCK_KEY}) THEN
        RETURN 0;
    END IF;
    WITH gone AS (
        DELETE FROM analytics_delta RETURNING kind, day, subject, status, level, band, n, xp
    ), sums AS (
        SELECT kind, day, subject, status, level, band, sum(n) AS n, sum(xp) AS xp,
               count(*) AS deltas
        FROM gone GROUP BY kind, day, subject, status, level, band
    ), merged AS (
        INSERT INTO analytics_count AS c (kind, day, subject, status, level, band, n, xp)
        SELECT kind, day, subject, status, level, band, n, xp FROM sums
        WHERE n <> 0 OR xp <> 0
        ON CONFLICT (kind, day, subject, status, level, band)
        DO UPDATE SET n = c.n + EXCLUDED.n, xp = c.xp + EXCLUDED.xp
    )
    SELECT coalesce(sum(deltas), 0) INTO moved FROM sums;
    DELETE FROM analytics_count WHERE n = 0 AND xp = 0;
    RETURN moved;
END
$$;

-- Count everything again from the tables (the migration's first fill; a repair).
CREATE FUNCTION smartstart_analytics_rebuild() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({COMPACT_LOCK_KEY});
    -- Writers wait while the tables are counted; readers go on.
    LOCK TABLE "User", "UserRole", "UserJourneyState" IN SHARE MODE;
    DELETE FROM analytics_delta;
    DELETE FROM analytics_count;
    INSERT INTO analytics_count (kind, day, subject, status, level, band, n, xp)
    SELECT kind, day, subject, status, level, band, sum(n), sum(xp)
    FROM ({_EVERYTHING}) d
    GROUP BY kind, day, subject, status, level, band;
END
$$;

{_USER_FUNCTION}

{_USER_ROLE_FUNCTION}

{_JOURNEY_FUNCTION}

-- Before a user row goes, its roles and journey states leave the counts: the cascade
-- that deletes them runs when the user can no longer be looked up.
CREATE FUNCTION smartstart_analytics_user_gone() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    {_USER_GONE_INSERT}
    RETURN OLD;
END
$$;
"""

_TRANSITIONS = {
    "INSERT": "REFERENCING NEW TABLE AS new_rows",
    "UPDATE": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "DELETE": "REFERENCING OLD TABLE AS old_rows",
    "TRUNCATE": "",
}
# "UserRole_analytics_truncate" sorts (and so runs) before "UserRole_truncate_restore",
# which inserts the primary roles again.
TRIGGERS = "\n".join(
    f'CREATE TRIGGER "{table}_analytics_{event.lower()}" AFTER {event} ON "{table}"'
    f" {transitions} FOR EACH STATEMENT EXECUTE FUNCTION {function}();"
    for table, function in (
        ("User", "smartstart_analytics_user"),
        ("UserRole", "smartstart_analytics_user_role"),
        ("UserJourneyState", "smartstart_analytics_journey"),
    )
    for event, transitions in _TRANSITIONS.items()
) + (
    '\nCREATE TRIGGER "User_analytics_gone" BEFORE DELETE ON "User"'
    " FOR EACH ROW EXECUTE FUNCTION smartstart_analytics_user_gone();"
)

# Like every function of the schema (migration 0003): names resolve in the schema the
# function lives in, whatever the caller's search_path.
PIN = r"""
DO $$
DECLARE f record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
             WHERE p.pronamespace = current_schema()::regnamespace
               AND p.proname LIKE 'smartstart\_analytics\_%' LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f.sig, current_schema());
    END LOOP;
END
$$;
SELECT smartstart_analytics_rebuild();
ANALYZE analytics_count;
"""

DOWN = (
    "\n".join(
        f"DROP TRIGGER IF EXISTS {name} ON {table};"
        for name, table in re.findall(r'CREATE TRIGGER ("[^"]+") \w+ \w+ ON ("[^"]+")', TRIGGERS)
    )
    + """
DROP FUNCTION IF EXISTS smartstart_analytics_user_gone();
DROP FUNCTION IF EXISTS smartstart_analytics_journey();
DROP FUNCTION IF EXISTS smartstart_analytics_user_role();
DROP FUNCTION IF EXISTS smartstart_analytics_user();
DROP FUNCTION IF EXISTS smartstart_analytics_rebuild();
DROP FUNCTION IF EXISTS smartstart_analytics_compact();
DROP INDEX IF EXISTS "UserJourneyState_stageId_duration_idx";
DROP TABLE IF EXISTS analytics_delta;
DROP TABLE IF EXISTS analytics_count;
"""
)


def upgrade() -> None:
    op.execute(FUNCTIONS)
    op.execute(TRIGGERS)
    op.execute(PIN)


def downgrade() -> None:
    op.execute(DOWN)
