"""search: VACUUM the "User" table that 0011 rewrote, so index-only walks read no row

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29 22:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0011 added a stored column: PostgreSQL rewrote "User", and a rewritten table has no page
# marked all-visible until a VACUUM, which autovacuum has no reason to start (no row
# changed). Until then the search's index-only walk fetched every row it passed from the
# table: 16-58 ms for a search at 1,000,000 users instead of a few. VACUUM cannot run in a
# transaction, so this revision commits the ones before it first; on its own it changes
# nothing but the visibility map and the statistics, and running it again is harmless.


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute('VACUUM (ANALYZE) "User"')


def downgrade() -> None:
    pass
