"""analytics: a large UPDATE of "User" costs its rows, not their square

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 21:20:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _analytics() -> ModuleType:
    """Revision 0007, whose SQL builders this one reuses (a revision is not importable)."""
    spec = importlib.util.spec_from_file_location(
        "smartstart_migration_0007", Path(__file__).with_name("0007_analytics.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# 0007 found the users whose registration day an UPDATE changed by joining the statement's
# old and new rows. Transition tables have no statistics, so that join was planned as a
# nested loop: 10,000 rows updated in one statement took 46 s, 20,000 took 219 s, a million
# never finished. Grouping both sides by id finds the same users in one hashed pass.
def _moved_users(m: ModuleType) -> str:
    day = m.DAY.format('"createdAt"')
    return f"""
        SELECT id, min(day) FILTER (WHERE side = 'old') AS old_day,
               min(day) FILTER (WHERE side = 'new') AS day
        FROM (SELECT id, 'old' AS side, {day} AS day FROM old_rows
              UNION ALL
              SELECT id, 'new', {day} FROM new_rows) AS sides
        GROUP BY id
        HAVING min(day) FILTER (WHERE side = 'old') <> min(day) FILTER (WHERE side = 'new')"""


def _user_function(m: ModuleType, moved: str) -> str:
    children = m._MOVED_CHILDREN.replace(m._MOVED_USERS, moved)
    update = (
        m._insert(m._user("new_rows", "") + " UNION ALL " + m._user("old_rows", "-"))
        + f"""
        IF EXISTS ({moved}) THEN {m._insert(children)}
        END IF;"""
    )
    function = m._trigger_function(
        "smartstart_analytics_user",
        m._insert(m._user("new_rows", "")),
        update,
        m._insert(m._user("old_rows", "-")),
        "'user', 'created', 'active'",
    )
    replaced = str(function).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    # A replaced function loses its settings: pinned again, as 0003 and 0007 pin them.
    return replaced + PIN


PIN = r"""
DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION smartstart_analytics_user() SET search_path = %I, pg_temp',
        current_schema()
    );
END
$$;
"""


def upgrade() -> None:
    m = _analytics()
    op.execute(_user_function(m, _moved_users(m)))


def downgrade() -> None:
    m = _analytics()
    op.execute(_user_function(m, m._MOVED_USERS))
