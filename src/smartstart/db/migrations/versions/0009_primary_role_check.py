"""primary-role proof: users in id order with their role, next to "UserRole_pkey"

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 18:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# `db health`'s users_without_primary_role, one role at a time: this index and
# "UserRole_roleId_userId_idx" give both sides in id order, so the proof is a merge anti-join
# of two index-only scans (no hash of 1,000,000 rows, no heap read).
UP = r"""
CREATE INDEX "User_id_role_idx" ON "User" (id) INCLUDE (role);
"""

DOWN = r"""
DROP INDEX IF EXISTS "User_id_role_idx";
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
