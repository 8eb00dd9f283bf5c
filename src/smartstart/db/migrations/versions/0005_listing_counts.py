"""listing counts: role holders kept by triggers, role and level listing indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 17:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# How many users hold each role (any assignment) and how many hold it as their primary
# role, kept by statement triggers so that `GET /api/roles` reads a few rows instead of
# counting a million assignments. Each backend adds its deltas to its own shard row
# (pg_backend_pid() % 64): concurrent assignments by different backends rarely touch the
# same row, so they do not queue behind each other's commit; a reader sums the shards.
# The primary count lets `list_users` skip looking for additional holders when there are
# none (holders - primaries = users holding the role besides their primary one).
UP = r"""
CREATE TABLE role_holders (
    "roleId" text NOT NULL REFERENCES "Role"(id) ON DELETE CASCADE,
    shard integer NOT NULL,
    holders bigint NOT NULL DEFAULT 0,
    primaries bigint NOT NULL DEFAULT 0,
    CONSTRAINT role_holders_pkey PRIMARY KEY ("roleId", shard)
);

-- (delta of holders, delta of primaries) per role id, added to this backend's shard.
-- Rows of a role deleted meanwhile are left out (its counts go with it by cascade).
CREATE FUNCTION smartstart_role_holders_add(deltas jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO role_holders AS c ("roleId", shard, holders, primaries)
    SELECT r.id, pg_backend_pid() % 64, d.holders, d.primaries
    FROM jsonb_to_recordset(deltas) AS d("roleId" text, holders bigint, primaries bigint)
    JOIN "Role" r ON r.id = d."roleId"
    WHERE d.holders <> 0 OR d.primaries <> 0
    ORDER BY r.id  -- one lock order for every writer
    ON CONFLICT ("roleId", shard) DO UPDATE
    SET holders = c.holders + excluded.holders, primaries = c.primaries + excluded.primaries
$$;

CREATE FUNCTION smartstart_role_holders() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    deltas jsonb;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        IF TG_TABLE_NAME = 'UserRole' THEN
            UPDATE role_holders SET holders = 0 WHERE holders <> 0;
        ELSE
            UPDATE role_holders SET primaries = 0 WHERE primaries <> 0;
        END IF;
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'UserRole' THEN
        IF TG_OP = 'INSERT' THEN
            SELECT jsonb_agg(jsonb_build_object('roleId', "roleId", 'holders', n, 'primaries', 0))
            INTO deltas FROM (SELECT "roleId", count(*) AS n FROM new_rows GROUP BY 1) t;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT jsonb_agg(jsonb_build_object('roleId', "roleId", 'holders', -n, 'primaries', 0))
            INTO deltas FROM (SELECT "roleId", count(*) AS n FROM old_rows GROUP BY 1) t;
        ELSE
            SELECT jsonb_agg(jsonb_build_object('roleId', "roleId", 'holders', n, 'primaries', 0))
            INTO deltas FROM (
                SELECT "roleId", sum(n) AS n FROM (
                    SELECT "roleId", 1 AS n FROM new_rows
                    UNION ALL SELECT "roleId", -1 FROM old_rows
                ) u GROUP BY 1
            ) t;
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT jsonb_agg(jsonb_build_object('roleId', r.id, 'holders', 0, 'primaries', n))
        INTO deltas FROM (SELECT role, count(*) AS n FROM new_rows GROUP BY 1) t
        JOIN "Role" r ON r.name = t.role;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT jsonb_agg(jsonb_build_object('roleId', r.id, 'holders', 0, 'primaries', -n))
        INTO deltas FROM (SELECT role, count(*) AS n FROM old_rows GROUP BY 1) t
        JOIN "Role" r ON r.name = t.role;
    ELSE
        -- One user's primary role changed (a row trigger: role changes are rare). When the
        -- old name no longer names a role, the role itself was renamed (ON UPDATE CASCADE):
        -- same role, nothing moves.
        SELECT jsonb_agg(jsonb_build_object('roleId', r.id, 'holders', 0, 'primaries', d.n))
        INTO deltas FROM (VALUES (OLD.role, -1), (NEW.role, 1)) d(role, n)
        JOIN "Role" r ON r.name = d.role
        WHERE EXISTS (SELECT 1 FROM "Role" WHERE name = OLD.role);
    END IF;
    IF deltas IS NOT NULL THEN
        PERFORM smartstart_role_holders_add(deltas);
    END IF;
    RETURN NULL;
END
$$;

-- Counted under a lock that keeps writers out until this transaction commits.
LOCK TABLE "User", "UserRole" IN SHARE MODE;
INSERT INTO role_holders ("roleId", shard, holders, primaries)
SELECT r.id, 0,
       (SELECT count(*) FROM "UserRole" ur WHERE ur."roleId" = r.id),
       (SELECT count(*) FROM "User" u WHERE u.role = r.name)
FROM "Role" r;

CREATE TRIGGER "UserRole_holders_insert" AFTER INSERT ON "UserRole"
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION smartstart_role_holders();
CREATE TRIGGER "UserRole_holders_delete" AFTER DELETE ON "UserRole"
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION smartstart_role_holders();
CREATE TRIGGER "UserRole_holders_update" AFTER UPDATE ON "UserRole"
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION smartstart_role_holders();
-- Before "UserRole_truncate_restore" (triggers fire by name): the primary roles it
-- inserts again are then counted by the insert trigger.
CREATE TRIGGER "UserRole_holders_truncate" AFTER TRUNCATE ON "UserRole"
    FOR EACH STATEMENT EXECUTE FUNCTION smartstart_role_holders();
CREATE TRIGGER "User_holders_insert" AFTER INSERT ON "User"
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION smartstart_role_holders();
CREATE TRIGGER "User_holders_delete" AFTER DELETE ON "User"
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION smartstart_role_holders();
CREATE TRIGGER "User_holders_update" AFTER UPDATE OF role ON "User"
    FOR EACH ROW WHEN (OLD.role IS DISTINCT FROM NEW.role)
    EXECUTE FUNCTION smartstart_role_holders();
CREATE TRIGGER "User_holders_truncate" AFTER TRUNCATE ON "User"
    FOR EACH STATEMENT EXECUTE FUNCTION smartstart_role_holders();

-- Like every function of the schema (0003), these resolve names in it whatever the
-- caller's search_path (pg_dump's restore script sets it to '').
DO $pin$
BEGIN
    EXECUTE format('ALTER FUNCTION smartstart_role_holders() SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION smartstart_role_holders_add(jsonb)'
                   ' SET search_path = %I, pg_temp', current_schema());
END
$pin$;

-- Users of a role newest first (GET /api/users?role=ADMIN): the primary role next to the
-- sort key. It serves what "User_role_idx" served too (the foreign key, the guide's role
-- distribution), which `db health` would otherwise report as its duplicate.
CREATE INDEX "User_role_createdAt_id_idx" ON "User" (role, "createdAt", id);
DROP INDEX "User_role_idx";
-- Users of a level newest first (level=WISE_OWL: 4 % of users).
CREATE INDEX "User_level_createdAt_id_idx" ON "User" (level, "createdAt", id);
ANALYZE role_holders;
"""

DOWN = r"""
DROP INDEX IF EXISTS "User_level_createdAt_id_idx";
CREATE INDEX "User_role_idx" ON "User" (role);
DROP INDEX IF EXISTS "User_role_createdAt_id_idx";
DROP TRIGGER IF EXISTS "User_holders_truncate" ON "User";
DROP TRIGGER IF EXISTS "User_holders_update" ON "User";
DROP TRIGGER IF EXISTS "User_holders_delete" ON "User";
DROP TRIGGER IF EXISTS "User_holders_insert" ON "User";
DROP TRIGGER IF EXISTS "UserRole_holders_truncate" ON "UserRole";
DROP TRIGGER IF EXISTS "UserRole_holders_update" ON "UserRole";
DROP TRIGGER IF EXISTS "UserRole_holders_delete" ON "UserRole";
DROP TRIGGER IF EXISTS "UserRole_holders_insert" ON "UserRole";
DROP FUNCTION IF EXISTS smartstart_role_holders();
DROP FUNCTION IF EXISTS smartstart_role_holders_add(jsonb);
DROP TABLE IF EXISTS role_holders;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
