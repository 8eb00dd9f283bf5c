"""scale: trigram search, lastActive, role-holder and audit indexes, statistics, demo numbering

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 15:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The one text `list_users` searches (db/models.py SEARCH_TEXT must stay identical:
# the planner uses the index only for the same expression, written as PostgreSQL prints
# it so `smartstart db check` sees no drift). One GIN index instead of
# five keeps inserts cheap; the newline keeps a match inside one field for any search
# without one.
SEARCH_TEXT = (
    "(((((((((email || '\n') || username) || '\n') || COALESCE(name, '')) || '\n')"
    " || COALESCE(\"firstName\", '')) || '\n') || COALESCE(\"lastName\", '')))"
)

UP = rf"""
-- Trusted and shipped with the server: the database owner creates it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX "User_search_trgm_idx" ON "User" USING gin ({SEARCH_TEXT} gin_trgm_ops);
-- Searches of one or two characters match the start of the email or username.
CREATE INDEX "User_email_prefix_idx" ON "User" (lower(email) text_pattern_ops);
CREATE INDEX "User_username_prefix_idx" ON "User" (lower(username) text_pattern_ops);
CREATE INDEX "User_lastActive_idx" ON "User" ("lastActive", id);
-- sort=xp pages: XP takes few distinct values (stage rewards), so the key needs the id.
CREATE INDEX "User_xp_id_idx" ON "User" (xp, id);
DROP INDEX "User_xp_idx";
-- Holders of a role, driven from the role (SUPER_ADMIN: a handful among a million).
CREATE INDEX "UserRole_roleId_userId_idx" ON "UserRole" ("roleId", "userId");
DROP INDEX "UserRole_roleId_idx";
-- The audit listing is newest first by id: each filter's index ends with id, so a
-- page is a walk of the matching entries only, however rare they are among millions.
CREATE INDEX "audit_log_actor_id_idx" ON audit_log (actor, id);
DROP INDEX "audit_log_actor_createdAt_idx";
CREATE INDEX "audit_log_action_id_idx" ON audit_log (action text_pattern_ops, id);
CREATE INDEX "audit_log_resource_resourceId_id_idx" ON audit_log (resource, "resourceId", id);
DROP INDEX "audit_log_resource_resourceId_idx";
-- The guide's registration trends group by date("createdAt"): with its statistics the
-- planner knows there are a few hundred days, not a million, and hash-aggregates.
CREATE STATISTICS "User_createdAt_date_stats" ON (date("createdAt")) FROM "User";
-- Demo user numbers (emails `first.last.N@…`): taking the next ones costs no scan.
CREATE SEQUENCE smartstart_demo_number AS bigint;
SELECT setval('smartstart_demo_number', GREATEST(n, 1), n > 0) FROM (
    SELECT COALESCE(max((regexp_match(email, '\.(\d+)@demo\.smartstart\.example$'))[1]::bigint),
                    0) AS n
    FROM "User" WHERE email LIKE '%@demo.smartstart.example'
) t;
ANALYZE "User";
"""

DOWN = r"""
DROP SEQUENCE IF EXISTS smartstart_demo_number;
DROP STATISTICS IF EXISTS "User_createdAt_date_stats";
CREATE INDEX "UserRole_roleId_idx" ON "UserRole" ("roleId");
DROP INDEX IF EXISTS "UserRole_roleId_userId_idx";
CREATE INDEX "audit_log_resource_resourceId_idx" ON audit_log (resource, "resourceId");
DROP INDEX IF EXISTS "audit_log_resource_resourceId_id_idx";
DROP INDEX IF EXISTS "audit_log_action_id_idx";
CREATE INDEX "audit_log_actor_createdAt_idx" ON audit_log (actor, "createdAt");
DROP INDEX IF EXISTS "audit_log_actor_id_idx";
DROP INDEX IF EXISTS "User_lastActive_idx";
CREATE INDEX "User_xp_idx" ON "User" (xp);
DROP INDEX IF EXISTS "User_xp_id_idx";
DROP INDEX IF EXISTS "User_username_prefix_idx";
DROP INDEX IF EXISTS "User_email_prefix_idx";
DROP INDEX IF EXISTS "User_search_trgm_idx";
DROP EXTENSION IF EXISTS pg_trgm;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
