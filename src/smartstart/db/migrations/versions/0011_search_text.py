"""search: a stored search key, separators inside its trigrams, a covering walk

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 22:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As db/vocabulary.py has them (a revision must not change when the code does).
SEARCH_TEXT = (
    "(((((((((email || '\n') || username) || '\n') || COALESCE(name, '')) || '\n')"
    " || COALESCE(\"firstName\", '')) || '\n') || COALESCE(\"lastName\", '')))"
)
# vocabulary.search_key(SEARCH_TEXT): lower-cased, separators made upper-case letters.
SEARCH_KEY = (
    "replace(replace(replace(replace(replace(replace(lower(" + SEARCH_TEXT + "),"
    " ' ', 'Þ'), '.', 'Ð'), '@', 'Ŋ'), '-', 'Ƿ'), '_', 'Ȝ'), '+', 'Ʒ')"
)

# Measured at 1,000,000 users (docs/benchmarks.md, "Search: any substring"): a search was
# 0.1-300 ms depending on the substring. A page of a common one walks creation order and
# filters: on the heap that is a row fetch and a five-field ILIKE each; the covering index
# has the search key beside the order, so the walk reads no row (index-only) and a LIKE on
# it costs a fraction. A rare one reads the trigram matches: with "." "@" "-" "_" "+" and
# spaces inside the trigrams, those are the matching users, not every user with the same
# words somewhere, and their re-check is a LIKE on the stored key.
UP = f"""
ALTER TABLE "User" ADD COLUMN "searchText" text
    GENERATED ALWAYS AS ({SEARCH_KEY}) STORED NOT NULL;
DROP INDEX "User_search_trgm_idx";
CREATE INDEX "User_searchText_trgm_idx" ON "User" USING gin ("searchText" gin_trgm_ops);
CREATE INDEX "User_createdAt_id_searchText_idx" ON "User" ("createdAt", id)
    INCLUDE ("searchText");
-- Its prefix: what it served (creation order, ranges of "createdAt"), the new one serves.
DROP INDEX "User_createdAt_idx";
ANALYZE "User";
"""

DOWN = f"""
CREATE INDEX "User_createdAt_idx" ON "User" ("createdAt");
DROP INDEX IF EXISTS "User_createdAt_id_searchText_idx";
DROP INDEX IF EXISTS "User_searchText_trgm_idx";
ALTER TABLE "User" DROP COLUMN IF EXISTS "searchText";
CREATE INDEX "User_search_trgm_idx" ON "User" USING gin ({SEARCH_TEXT} gin_trgm_ops);
"""


def upgrade() -> None:
    # A million users: the rewrite and the index builds sort in memory, not on disk.
    op.execute("SET LOCAL maintenance_work_mem = '512MB'")
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
