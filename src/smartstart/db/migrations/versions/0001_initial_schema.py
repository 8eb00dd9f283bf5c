"""initial schema: the guide's tables, their constraints and invariant triggers

Revision ID: 0001
Revises:
Create Date: 2026-11-25 21:02:07.622925
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Invariants that hold whatever path changes the data (API, CLI or the guide's raw SQL).
TRIGGERS_UP = r"""
CREATE FUNCTION smartstart_level_for(xp integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN xp >= 1000 THEN 'WISE_OWL'
        WHEN xp >= 500 THEN 'NIGHT_OWL'
        WHEN xp >= 100 THEN 'FLEDGLING'
        ELSE 'OWLET'
    END
$$;

-- "updatedAt" follows every UPDATE, whoever issues it.
CREATE FUNCTION smartstart_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW."updatedAt" := now();
    RETURN NEW;
END
$$;

-- level is derived from xp: the guide sets xp (and even passes a level) by hand.
CREATE FUNCTION smartstart_user_derive() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.level := smartstart_level_for(NEW.xp);
    IF TG_OP = 'UPDATE' THEN
        NEW."updatedAt" := now();
    END IF;
    RETURN NEW;
END
$$;

-- The primary role is always assigned in "UserRole"; changing it moves the row,
-- so a demotion by `UPDATE "User" SET role = ...` really removes the old grant.
CREATE FUNCTION smartstart_user_primary_role() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.role IS DISTINCT FROM NEW.role THEN
        DELETE FROM "UserRole" ur USING "Role" r
        WHERE ur."userId" = NEW.id AND ur."roleId" = r.id AND r.name = OLD.role;
    END IF;
    INSERT INTO "UserRole" ("userId", "roleId")
    SELECT NEW.id, r.id FROM "Role" r WHERE r.name = NEW.role
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

-- A user leaving ACTIVE (the guide's "revoke user access") or getting a new
-- password loses every session at once.
CREATE FUNCTION smartstart_user_end_sessions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status = 'ACTIVE' AND NEW.status <> 'ACTIVE')
       OR OLD.password IS DISTINCT FROM NEW.password THEN
        UPDATE "Session" SET "revokedAt" = now()
        WHERE "userId" = NEW.id AND "revokedAt" IS NULL;
    END IF;
    RETURN NULL;
END
$$;

-- Assigning a role that is already assigned is a no-op, not an error: the guide
-- inserts a MEMBER user and then the same "UserRole" row by hand.
CREATE FUNCTION smartstart_user_role_dedupe() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM "UserRole"
               WHERE "userId" = NEW."userId" AND "roleId" = NEW."roleId") THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION smartstart_user_role_keep_primary() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM "User" u JOIN "Role" r ON r.name = u.role
               WHERE u.id = OLD."userId" AND r.id = OLD."roleId") THEN
        RAISE EXCEPTION 'cannot unassign the primary role of user %', OLD."userId"
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'change "User".role first; the primary role is always assigned';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

-- Journey states: timestamps follow the status, and COMPLETED marks the state as
-- awarded exactly once per (user, stage), however often it is set. The XP itself
-- is paid by AFTER triggers: BEFORE INSERT also runs for rows that ON CONFLICT
-- then skips or turns into an UPDATE, which would pay twice.
CREATE FUNCTION smartstart_journey_state() RETURNS trigger
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

CREATE FUNCTION smartstart_journey_award() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE "User" u SET xp = u.xp + s."xpReward"
    FROM "JourneyStage" s
    WHERE s.id = NEW."stageId" AND u.id = NEW."userId";
    RETURN NULL;
END
$$;

-- An awarded state is history: deleting it and inserting it again would pay the
-- XP twice. It goes only with its user (cascade), when the user row is gone.
CREATE FUNCTION smartstart_journey_keep_awarded() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD."xpAwardedAt" IS NOT NULL
       AND EXISTS (SELECT 1 FROM "User" WHERE id = OLD."userId") THEN
        RAISE EXCEPTION 'cannot delete a completed journey state (its XP was awarded)'
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'journey history is kept; deleting the user removes it';
    END IF;
    RETURN OLD;
END
$$;

-- Any change to roles, permissions or assignments tells every Brain worker to
-- drop its cached permissions.
CREATE FUNCTION smartstart_rbac_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smartstart_rbac', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER "User_derive" BEFORE INSERT OR UPDATE ON "User"
    FOR EACH ROW EXECUTE FUNCTION smartstart_user_derive();
CREATE TRIGGER "User_primary_role" AFTER INSERT OR UPDATE OF role ON "User"
    FOR EACH ROW EXECUTE FUNCTION smartstart_user_primary_role();
CREATE TRIGGER "User_end_sessions" AFTER UPDATE OF status, password ON "User"
    FOR EACH ROW EXECUTE FUNCTION smartstart_user_end_sessions();
CREATE TRIGGER "UserRole_dedupe" BEFORE INSERT ON "UserRole"
    FOR EACH ROW EXECUTE FUNCTION smartstart_user_role_dedupe();
CREATE TRIGGER "UserRole_keep_primary" BEFORE DELETE ON "UserRole"
    FOR EACH ROW EXECUTE FUNCTION smartstart_user_role_keep_primary();
CREATE TRIGGER "UserRole_keep_primary_update" BEFORE UPDATE OF "userId", "roleId" ON "UserRole"
    FOR EACH ROW
    WHEN (OLD."userId" IS DISTINCT FROM NEW."userId" OR OLD."roleId" IS DISTINCT FROM NEW."roleId")
    EXECUTE FUNCTION smartstart_user_role_keep_primary();
CREATE TRIGGER "UserJourneyState_derive" BEFORE INSERT OR UPDATE ON "UserJourneyState"
    FOR EACH ROW EXECUTE FUNCTION smartstart_journey_state();
CREATE TRIGGER "UserJourneyState_award_insert" AFTER INSERT ON "UserJourneyState"
    FOR EACH ROW WHEN (NEW."xpAwardedAt" IS NOT NULL)
    EXECUTE FUNCTION smartstart_journey_award();
CREATE TRIGGER "UserJourneyState_award_update" AFTER UPDATE ON "UserJourneyState"
    FOR EACH ROW WHEN (OLD."xpAwardedAt" IS NULL AND NEW."xpAwardedAt" IS NOT NULL)
    EXECUTE FUNCTION smartstart_journey_award();
CREATE TRIGGER "UserJourneyState_keep_awarded" BEFORE DELETE ON "UserJourneyState"
    FOR EACH ROW EXECUTE FUNCTION smartstart_journey_keep_awarded();
CREATE TRIGGER "Role_touch" BEFORE UPDATE ON "Role"
    FOR EACH ROW EXECUTE FUNCTION smartstart_touch_updated_at();
CREATE TRIGGER "Permission_touch" BEFORE UPDATE ON "Permission"
    FOR EACH ROW EXECUTE FUNCTION smartstart_touch_updated_at();
CREATE TRIGGER "JourneyStage_touch" BEFORE UPDATE ON "JourneyStage"
    FOR EACH ROW EXECUTE FUNCTION smartstart_touch_updated_at();
CREATE TRIGGER "Role_rbac_changed" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "Role"
    FOR EACH STATEMENT EXECUTE FUNCTION smartstart_rbac_changed();
CREATE TRIGGER "Permission_rbac_changed" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "Permission"
    FOR EACH STATEMENT EXECUTE FUNCTION smartstart_rbac_changed();
CREATE TRIGGER "UserRole_rbac_changed" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "UserRole"
    FOR EACH STATEMENT EXECUTE FUNCTION smartstart_rbac_changed();
CREATE TRIGGER "RolePermission_rbac_changed" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "RolePermission"
    FOR EACH STATEMENT EXECUTE FUNCTION smartstart_rbac_changed();
CREATE TRIGGER "User_rbac_changed" AFTER UPDATE OF role, status OR DELETE ON "User"
    FOR EACH STATEMENT EXECUTE FUNCTION smartstart_rbac_changed();
"""

TRIGGERS_DOWN = """
DROP FUNCTION IF EXISTS smartstart_rbac_changed() CASCADE;
DROP FUNCTION IF EXISTS smartstart_journey_keep_awarded() CASCADE;
DROP FUNCTION IF EXISTS smartstart_journey_award() CASCADE;
DROP FUNCTION IF EXISTS smartstart_journey_state() CASCADE;
DROP FUNCTION IF EXISTS smartstart_user_role_keep_primary() CASCADE;
DROP FUNCTION IF EXISTS smartstart_user_role_dedupe() CASCADE;
DROP FUNCTION IF EXISTS smartstart_user_end_sessions() CASCADE;
DROP FUNCTION IF EXISTS smartstart_user_primary_role() CASCADE;
DROP FUNCTION IF EXISTS smartstart_user_derive() CASCADE;
DROP FUNCTION IF EXISTS smartstart_touch_updated_at() CASCADE;
DROP FUNCTION IF EXISTS smartstart_level_for(integer);
"""


def upgrade() -> None:

    op.create_table(
        "JourneyStage",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("order", sa.Integer(), nullable=False),
        sa.Column("xpReward", sa.Integer(), server_default="0", nullable=False),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column(
            "createdAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "updatedAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint('"xpReward" >= 0', name=op.f("JourneyStage_xpReward_check")),
        sa.PrimaryKeyConstraint("id", name=op.f("JourneyStage_pkey")),
        sa.UniqueConstraint("name", name=op.f("JourneyStage_name_key")),
        sa.UniqueConstraint(
            "order", deferrable=True, initially="DEFERRED", name=op.f("JourneyStage_order_key")
        ),
    )
    op.create_table(
        "Permission",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "createdAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "updatedAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "name = resource || ':' || action", name=op.f("Permission_name_format_check")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("Permission_pkey")),
        sa.UniqueConstraint("name", name=op.f("Permission_name_key")),
        sa.UniqueConstraint("resource", "action", name=op.f("Permission_resource_action_key")),
    )
    op.create_table(
        "Role",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "createdAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "updatedAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("Role_pkey")),
        sa.UniqueConstraint("name", name=op.f("Role_name_key")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=True),
        sa.Column("resourceId", sa.Text(), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.Column(
            "createdAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("audit_log_pkey")),
    )
    op.create_index(
        "audit_log_actor_createdAt_idx", "audit_log", ["actor", "createdAt"], unique=False
    )
    op.create_index("audit_log_createdAt_idx", "audit_log", ["createdAt"], unique=False)
    op.create_index(
        "audit_log_resource_resourceId_idx", "audit_log", ["resource", "resourceId"], unique=False
    )
    op.create_table(
        "RolePermission",
        sa.Column("roleId", sa.Text(), nullable=False),
        sa.Column("permissionId", sa.Text(), nullable=False),
        sa.Column(
            "grantedAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["permissionId"],
            ["Permission.id"],
            name=op.f("RolePermission_permissionId_fkey"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["roleId"], ["Role.id"], name=op.f("RolePermission_roleId_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("roleId", "permissionId", name=op.f("RolePermission_pkey")),
    )
    op.create_index(
        "RolePermission_permissionId_idx", "RolePermission", ["permissionId"], unique=False
    )
    op.create_table(
        "User",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("firstName", sa.Text(), nullable=True),
        sa.Column("lastName", sa.Text(), nullable=True),
        sa.Column("password", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), server_default="MEMBER", nullable=False),
        sa.Column("level", sa.Text(), server_default="OWLET", nullable=False),
        sa.Column("status", sa.Text(), server_default="ACTIVE", nullable=False),
        sa.Column("xp", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reputation", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "lastActive",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "createdAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "updatedAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint("email ~ '^[^@\\s]+@[^@\\s]+$'", name=op.f("User_email_check")),
        sa.CheckConstraint("password ~ '^\\$2[aby]\\$'", name=op.f("User_password_bcrypt_check")),
        sa.CheckConstraint(
            "\"level\" IN ('OWLET', 'FLEDGLING', 'NIGHT_OWL', 'WISE_OWL')",
            name=op.f("User_level_check"),
        ),
        sa.CheckConstraint(
            "\"status\" IN ('ACTIVE', 'INACTIVE', 'SUSPENDED', 'PENDING')",
            name=op.f("User_status_check"),
        ),
        sa.CheckConstraint("xp >= 0", name=op.f("User_xp_check")),
        sa.ForeignKeyConstraint(
            ["role"],
            ["Role.name"],
            name=op.f("User_role_fkey"),
            onupdate="CASCADE",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("User_pkey")),
        sa.UniqueConstraint("username", name=op.f("User_username_key")),
    )
    op.create_index("User_createdAt_idx", "User", ["createdAt"], unique=False)
    op.create_index(
        "User_email_lower_key", "User", [sa.literal_column("lower(email)")], unique=True
    )
    # The guide looks users up with `WHERE email = '…'`, which the lower() index cannot serve.
    op.create_index("User_email_idx", "User", ["email"], unique=False)
    op.create_index("User_role_idx", "User", ["role"], unique=False)
    op.create_index("User_status_lastActive_idx", "User", ["status", "lastActive"], unique=False)
    op.create_index("User_xp_idx", "User", ["xp"], unique=False)
    op.create_table(
        "Session",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column("tokenHash", sa.Text(), nullable=False),
        sa.Column("userId", sa.Text(), nullable=False),
        sa.Column("expiresAt", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "createdAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "lastSeenAt",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.Column("userAgent", sa.Text(), nullable=True),
        sa.Column("revokedAt", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["userId"], ["User.id"], name=op.f("Session_userId_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("Session_pkey")),
        sa.UniqueConstraint("tokenHash", name=op.f("Session_tokenHash_key")),
    )
    op.create_index("Session_expiresAt_idx", "Session", ["expiresAt"], unique=False)
    op.create_index("Session_userId_idx", "Session", ["userId"], unique=False)
    op.create_table(
        "UserJourneyState",
        sa.Column(
            "id", sa.Text(), server_default=sa.text("gen_random_uuid()::text"), nullable=False
        ),
        sa.Column("userId", sa.Text(), nullable=False),
        sa.Column("stageId", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="NOT_STARTED", nullable=False),
        sa.Column("startedAt", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completedAt", sa.DateTime(timezone=True), nullable=True),
        sa.Column("xpAwardedAt", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "createdAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "updatedAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "\"status\" IN ('NOT_STARTED', 'IN_PROGRESS', 'COMPLETED', 'SKIPPED')",
            name=op.f("UserJourneyState_status_check"),
        ),
        sa.ForeignKeyConstraint(
            ["stageId"],
            ["JourneyStage.id"],
            name=op.f("UserJourneyState_stageId_fkey"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["userId"], ["User.id"], name=op.f("UserJourneyState_userId_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("UserJourneyState_pkey")),
        sa.UniqueConstraint("userId", "stageId", name=op.f("UserJourneyState_userId_stageId_key")),
    )
    op.create_index(
        "UserJourneyState_stageId_status_idx",
        "UserJourneyState",
        ["stageId", "status"],
        unique=False,
    )
    op.create_table(
        "UserRole",
        sa.Column("userId", sa.Text(), nullable=False),
        sa.Column("roleId", sa.Text(), nullable=False),
        sa.Column(
            "assignedAt",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("assignedBy", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["assignedBy"], ["User.id"], name=op.f("UserRole_assignedBy_fkey"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["roleId"], ["Role.id"], name=op.f("UserRole_roleId_fkey"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["userId"], ["User.id"], name=op.f("UserRole_userId_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("userId", "roleId", name=op.f("UserRole_pkey")),
    )
    op.create_index("UserRole_roleId_idx", "UserRole", ["roleId"], unique=False)
    op.create_index("UserRole_assignedBy_idx", "UserRole", ["assignedBy"], unique=False)
    op.execute(TRIGGERS_UP)


def downgrade() -> None:
    op.execute(TRIGGERS_DOWN)
    op.drop_table("UserRole")
    op.drop_table("UserJourneyState")
    op.drop_table("Session")
    op.drop_table("User")
    op.drop_table("RolePermission")
    op.drop_table("audit_log")
    op.drop_table("Role")
    op.drop_table("Permission")
    op.drop_table("JourneyStage")
