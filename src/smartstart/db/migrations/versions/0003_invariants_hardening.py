"""invariants: last ACTIVE SUPER_ADMIN, TRUNCATE guards, pinned search_path, ip as inet

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 14:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Any fixed key works: every transaction that removes a SUPER_ADMIN takes it at commit, so
# two such transactions check one after the other and the second sees the first's result.
SUPER_ADMIN_LOCK_KEY = 7_274_637_361

KEEP_SUPER_ADMIN = r"""
-- At least one ACTIVE user holds SUPER_ADMIN once one did. Deferred constraint triggers
-- run this at commit (or at `SET CONSTRAINTS ... IMMEDIATE`), only for rows whose change
-- can remove a SUPER_ADMIN, so an empty database can still be seeded.
CREATE FUNCTION smartstart_keep_super_admin() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    removed boolean := false;
BEGIN
    IF TG_TABLE_NAME = 'UserRole' THEN
        -- A user row already gone is one being deleted (the cascade), so it counts.
        removed := EXISTS (SELECT 1 FROM "Role" WHERE id = OLD."roleId" AND name = 'SUPER_ADMIN')
            AND NOT EXISTS (SELECT 1 FROM "User" WHERE id = OLD."userId" AND status <> 'ACTIVE');
    ELSIF TG_TABLE_NAME = 'Role' THEN
        removed := OLD.name = 'SUPER_ADMIN';
    ELSIF TG_TABLE_NAME = 'User' THEN
        removed := OLD.role = 'SUPER_ADMIN' OR EXISTS (
            SELECT 1 FROM "UserRole" ur JOIN "Role" r ON r.id = ur."roleId"
            WHERE ur."userId" = OLD.id AND r.name = 'SUPER_ADMIN');
    END IF;
    IF NOT removed THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(__LOCK_KEY__);
    -- READ COMMITTED: each statement sees what committed before the lock was granted.
    -- A transaction snapshot would not, so there the rows are locked instead: one that a
    -- concurrent transaction changed raises a serialization failure.
    IF current_setting('transaction_isolation') = 'read committed' THEN
        PERFORM 1 FROM "UserRole" ur
            JOIN "Role" r ON r.id = ur."roleId" JOIN "User" u ON u.id = ur."userId"
            WHERE r.name = 'SUPER_ADMIN' AND u.status = 'ACTIVE' LIMIT 1;
    ELSE
        PERFORM 1 FROM "UserRole" ur
            JOIN "Role" r ON r.id = ur."roleId" JOIN "User" u ON u.id = ur."userId"
            WHERE r.name = 'SUPER_ADMIN' AND u.status = 'ACTIVE' FOR SHARE OF ur, u;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no ACTIVE SUPER_ADMIN would remain: this is the last one'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'last_super_admin',
                  HINT = 'make another ACTIVE user SUPER_ADMIN first';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER "UserRole_keep_super_admin" AFTER DELETE OR UPDATE OF "userId", "roleId"
    ON "UserRole" DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION smartstart_keep_super_admin();
CREATE CONSTRAINT TRIGGER "User_keep_super_admin" AFTER UPDATE OF status ON "User"
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.status = 'ACTIVE' AND NEW.status <> 'ACTIVE')
    EXECUTE FUNCTION smartstart_keep_super_admin();
CREATE CONSTRAINT TRIGGER "Role_keep_super_admin" AFTER DELETE OR UPDATE OF name ON "Role"
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.name = 'SUPER_ADMIN')
    EXECUTE FUNCTION smartstart_keep_super_admin();

-- TRUNCATE runs no row trigger: "User" cannot be emptied under its SUPER_ADMINs.
CREATE FUNCTION smartstart_user_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM "UserRole" ur
               JOIN "Role" r ON r.id = ur."roleId" JOIN "User" u ON u.id = ur."userId"
               WHERE r.name = 'SUPER_ADMIN' AND u.status = 'ACTIVE') THEN
        RAISE EXCEPTION 'TRUNCATE "User" would remove every ACTIVE SUPER_ADMIN'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'last_super_admin',
                  HINT = 'delete the users you mean with DELETE ... WHERE';
    END IF;
    -- Journey states go with their users (see smartstart_journey_truncate).
    PERFORM set_config('smartstart.truncating_users', 'on', true);
    RETURN NULL;
END
$$;

-- After TRUNCATE "UserRole", every user gets their primary role's row back; the
-- SUPER_ADMINs that only held it as an additional role must not all be lost.
CREATE FUNCTION smartstart_user_role_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_WHEN = 'BEFORE' THEN
        PERFORM set_config('smartstart.had_super_admin', (EXISTS (
            SELECT 1 FROM "UserRole" ur
            JOIN "Role" r ON r.id = ur."roleId" JOIN "User" u ON u.id = ur."userId"
            WHERE r.name = 'SUPER_ADMIN' AND u.status = 'ACTIVE'))::text, true);
        RETURN NULL;
    END IF;
    INSERT INTO "UserRole" ("userId", "roleId")
    SELECT u.id, r.id FROM "User" u JOIN "Role" r ON r.name = u.role
    ON CONFLICT DO NOTHING;
    IF current_setting('smartstart.had_super_admin', true) = 'true' AND NOT EXISTS (
            SELECT 1 FROM "UserRole" ur
            JOIN "Role" r ON r.id = ur."roleId" JOIN "User" u ON u.id = ur."userId"
            WHERE r.name = 'SUPER_ADMIN' AND u.status = 'ACTIVE') THEN
        RAISE EXCEPTION 'TRUNCATE "UserRole" would remove every ACTIVE SUPER_ADMIN'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'last_super_admin',
                  HINT = 'make an ACTIVE user SUPER_ADMIN by primary role first';
    END IF;
    RETURN NULL;
END
$$;

-- Emptying the journey states would let every stage pay its XP again.
CREATE FUNCTION smartstart_journey_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('smartstart.truncating_users', true) IS DISTINCT FROM 'on'
       AND EXISTS (SELECT 1 FROM "UserJourneyState" WHERE "xpAwardedAt" IS NOT NULL) THEN
        RAISE EXCEPTION 'cannot truncate "UserJourneyState": it holds completed states whose XP was awarded'
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'journey history is kept; reset progress with UPDATE ... SET status = ''NOT_STARTED''';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER "User_truncate" BEFORE TRUNCATE ON "User"
    FOR EACH STATEMENT EXECUTE FUNCTION smartstart_user_truncate();
CREATE TRIGGER "UserRole_truncate_check" BEFORE TRUNCATE ON "UserRole"
    FOR EACH STATEMENT EXECUTE FUNCTION smartstart_user_role_truncate();
CREATE TRIGGER "UserRole_truncate_restore" AFTER TRUNCATE ON "UserRole"
    FOR EACH STATEMENT EXECUTE FUNCTION smartstart_user_role_truncate();
CREATE TRIGGER "UserJourneyState_truncate" BEFORE TRUNCATE ON "UserJourneyState"
    FOR EACH STATEMENT EXECUTE FUNCTION smartstart_journey_truncate();
""".replace("__LOCK_KEY__", str(SUPER_ADMIN_LOCK_KEY))

# A paid state keeps its user and stage: moving it would free its (user, stage) for a
# new state that pays the stage again.
JOURNEY_STATE = r"""
CREATE OR REPLACE FUNCTION smartstart_journey_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD."xpAwardedAt" IS NOT NULL
           AND (NEW."userId" IS DISTINCT FROM OLD."userId"
                OR NEW."stageId" IS DISTINCT FROM OLD."stageId") THEN
            RAISE EXCEPTION 'cannot move a completed journey state to another user or stage (its XP was awarded)'
                USING ERRCODE = 'integrity_constraint_violation',
                      HINT = 'journey history is kept; create a state for the other stage instead';
        END IF;
        NEW."updatedAt" := now();
        NEW."xpAwardedAt" := OLD."xpAwardedAt";
    ELSE
        NEW."xpAwardedAt" := NULL;
    END IF;
    IF NEW.status IN ('IN_PROGRESS', 'COMPLETED') AND NEW."startedAt" IS NULL THEN
        NEW."startedAt" := COALESCE(NEW."completedAt", now());
    END IF;
    IF NEW.status = 'COMPLETED' THEN
        NEW."completedAt" := COALESCE(NEW."completedAt", now());
        NEW."xpAwardedAt" := COALESCE(NEW."xpAwardedAt", now());
    END IF;
    RETURN NEW;
END
$$;
"""

JOURNEY_STATE_DOWN = r"""
CREATE OR REPLACE FUNCTION smartstart_journey_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW."updatedAt" := now();
        NEW."xpAwardedAt" := OLD."xpAwardedAt";
    ELSE
        NEW."xpAwardedAt" := NULL;
    END IF;
    IF NEW.status IN ('IN_PROGRESS', 'COMPLETED') AND NEW."startedAt" IS NULL THEN
        NEW."startedAt" := COALESCE(NEW."completedAt", now());
    END IF;
    IF NEW.status = 'COMPLETED' THEN
        NEW."completedAt" := COALESCE(NEW."completedAt", now());
        NEW."xpAwardedAt" := COALESCE(NEW."xpAwardedAt", now());
    END IF;
    RETURN NEW;
END
$$;
"""

# Every function of the schema resolves names in the schema it lives in, whatever the
# caller's search_path (pg_dump's restore script sets it to '').
PIN_SEARCH_PATH = r"""
DO $$
DECLARE f record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
             WHERE p.pronamespace = current_schema()::regnamespace
               AND p.proname LIKE 'smartstart\_%' LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f.sig, current_schema());
    END LOOP;
END
$$;
"""

UNPIN_SEARCH_PATH = r"""
DO $$
DECLARE f record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
             WHERE p.pronamespace = current_schema()::regnamespace
               AND p.proname LIKE 'smartstart\_%' LOOP
        EXECUTE format('ALTER FUNCTION %s RESET search_path', f.sig);
    END LOOP;
END
$$;
"""

# Text that is not an address becomes NULL: it cannot be trusted as one anyway.
IP_TO_INET = r"""
CREATE FUNCTION pg_temp.smartstart_inet_or_null(value text) RETURNS inet
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN value::inet;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END
$$;
ALTER TABLE audit_log ALTER COLUMN ip TYPE inet USING pg_temp.smartstart_inet_or_null(ip);
ALTER TABLE "Session" ALTER COLUMN ip TYPE inet USING pg_temp.smartstart_inet_or_null(ip);
"""

IP_TO_TEXT = r"""
ALTER TABLE audit_log ALTER COLUMN ip TYPE text USING host(ip);
ALTER TABLE "Session" ALTER COLUMN ip TYPE text USING host(ip);
"""

DROP_NEW = r"""
DROP TRIGGER IF EXISTS "UserJourneyState_truncate" ON "UserJourneyState";
DROP TRIGGER IF EXISTS "UserRole_truncate_restore" ON "UserRole";
DROP TRIGGER IF EXISTS "UserRole_truncate_check" ON "UserRole";
DROP TRIGGER IF EXISTS "User_truncate" ON "User";
DROP TRIGGER IF EXISTS "Role_keep_super_admin" ON "Role";
DROP TRIGGER IF EXISTS "User_keep_super_admin" ON "User";
DROP TRIGGER IF EXISTS "UserRole_keep_super_admin" ON "UserRole";
DROP FUNCTION IF EXISTS smartstart_journey_truncate();
DROP FUNCTION IF EXISTS smartstart_user_role_truncate();
DROP FUNCTION IF EXISTS smartstart_user_truncate();
DROP FUNCTION IF EXISTS smartstart_keep_super_admin();
"""


def upgrade() -> None:
    op.execute(IP_TO_INET)
    op.execute(JOURNEY_STATE)
    op.execute(KEEP_SUPER_ADMIN)
    op.execute(PIN_SEARCH_PATH)


def downgrade() -> None:
    op.execute(UNPIN_SEARCH_PATH)
    op.execute(DROP_NEW)
    op.execute(JOURNEY_STATE_DOWN)
    op.execute(IP_TO_TEXT)
