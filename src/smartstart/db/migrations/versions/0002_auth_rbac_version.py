"""auth and RBAC support: permission version counter, login throttling

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every RBAC change by any path bumps the version in the same transaction: a Brain
# worker reads it with the session lookup it does anyway, so a cached permission
# set is never used after the change commits (NOTIFY alone could arrive late).
RBAC_VERSION_UP = r"""
INSERT INTO rbac_version (id, version) VALUES (1, 1);

-- Once per transaction: a bulk import (one UserRole insert per new user) would
-- otherwise update the same row thousands of times in one transaction.
CREATE OR REPLACE FUNCTION smartstart_rbac_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('smartstart.rbac_bumped', true) IS DISTINCT FROM 'on' THEN
        UPDATE rbac_version SET version = version + 1, "changedAt" = now() WHERE id = 1;
        PERFORM set_config('smartstart.rbac_bumped', 'on', true);
    END IF;
    PERFORM pg_notify('smartstart_rbac', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
"""

RBAC_VERSION_DOWN = r"""
CREATE OR REPLACE FUNCTION smartstart_rbac_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smartstart_rbac', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
"""


def upgrade() -> None:
    op.create_table(
        "rbac_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column(
            "changedAt", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint("id = 1", name=op.f("rbac_version_single_row_check")),
        sa.PrimaryKeyConstraint("id", name=op.f("rbac_version_pkey")),
    )
    op.create_table(
        "LoginThrottle",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "firstFailureAt",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "lastFailureAt",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("lockedUntil", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("LoginThrottle_pkey")),
    )
    op.execute(RBAC_VERSION_UP)


def downgrade() -> None:
    op.execute(RBAC_VERSION_DOWN)
    op.drop_table("LoginThrottle")
    op.drop_table("rbac_version")
