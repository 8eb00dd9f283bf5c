"""The invariant triggers the migrations at head create: the one list of them.

Alembic cannot compare triggers, so `smartstart db check` compares the catalog with
this list, and docs/schema.md's trigger table is generated from it
(`python -m smartstart.db.triggers` rewrites that table; a test fails when they differ).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Trigger:
    names: tuple[str, ...]  # triggers that share the function and the guarantee
    on: str  # table and firing, as docs/schema.md shows it
    function: str
    guarantees: str


TRIGGER_LIST: tuple[Trigger, ...] = (
    Trigger(
        ("User_derive",),
        '`"User"` BEFORE INSERT OR UPDATE, each row',
        "smartstart_user_derive()",
        "`level` is always `smartstart_level_for(xp)`, whatever the statement writes (the "
        "guide's insert passes `'OWLET'`; `UPDATE \"User\" SET xp = 1500` makes a `WISE_OWL`; "
        'a wrong level is corrected, not refused). On UPDATE, `"updatedAt"` becomes `now()` '
        "even if the statement does not mention it or sets another value.",
    ),
    Trigger(
        ("User_primary_role",),
        '`"User"` AFTER INSERT OR UPDATE OF role, each row',
        "smartstart_user_primary_role()",
        'The primary role is assigned in `"UserRole"` as soon as the user exists. Changing '
        '`"User".role` *moves* the assignment: the old role\'s row is deleted (a demotion '
        "really removes the old grant) and the new one is inserted if absent.",
    ),
    Trigger(
        ("User_end_sessions",),
        '`"User"` AFTER UPDATE OF status, password, each row',
        "smartstart_user_end_sessions()",
        'A status leaving `ACTIVE` (the guide\'s "revoke user access" `SET status = '
        "'SUSPENDED'`, the inactive-users cleanup, any other path) or a changed password sets "
        '`"revokedAt"` on all of that user\'s open sessions, in the same transaction. Other '
        "users' sessions, and a status staying `ACTIVE`, are untouched; reactivating a user "
        "does not revive old sessions.",
    ),
    Trigger(
        ("UserRole_keep_super_admin", "User_keep_super_admin", "Role_keep_super_admin"),
        '`"UserRole"` AFTER DELETE OR UPDATE OF "userId", "roleId"; `"User"` AFTER UPDATE OF '
        'status (leaving `ACTIVE`); `"Role"` AFTER DELETE OR UPDATE OF name (of '
        "`SUPER_ADMIN`); each row, constraint triggers **deferred** to commit",
        "smartstart_keep_super_admin()",
        "Once there is an ACTIVE `SUPER_ADMIN`, there always is one: a transaction that "
        "removes one (unassigning the role, demoting, suspending or deleting the user, "
        "renaming or deleting the role) takes a transaction-level advisory lock at commit and "
        "fails (SQLSTATE 23514, constraint `last_super_admin`) if no ACTIVE user holds "
        "`SUPER_ADMIN` any more. Two concurrent transactions each removing a different one "
        "check one after the other, so exactly one succeeds. Changes that remove no "
        "`SUPER_ADMIN` are not checked (an empty database can be seeded). "
        '`SET CONSTRAINTS "UserRole_keep_super_admin", "User_keep_super_admin", '
        '"Role_keep_super_admin" IMMEDIATE` runs the check at once.',
    ),
    Trigger(
        ("User_truncate",),
        '`"User"` BEFORE TRUNCATE, each statement',
        "smartstart_user_truncate()",
        '`TRUNCATE "User"` is refused while an ACTIVE `SUPER_ADMIN` exists '
        "(`last_super_admin`); delete the users you mean with `DELETE`.",
    ),
    Trigger(
        ("UserRole_dedupe",),
        '`"UserRole"` BEFORE INSERT, each row',
        "smartstart_user_role_dedupe()",
        "Assigning a role the user already has is a no-op (`INSERT 0 0`), not a primary-key "
        'error: the guide inserts a `MEMBER` user and then that same `"UserRole"` row, and '
        "both statements succeed.",
    ),
    Trigger(
        ("UserRole_keep_primary", "UserRole_keep_primary_update"),
        '`"UserRole"` BEFORE DELETE, and BEFORE UPDATE OF "userId", "roleId", each row',
        "smartstart_user_role_keep_primary()",
        "The primary role's row cannot be deleted or repointed (SQLSTATE 23000, \"cannot "
        'unassign the primary role"); change `"User".role` instead. Deleting the user '
        "itself still cascades.",
    ),
    Trigger(
        ("UserRole_truncate_check", "UserRole_truncate_restore"),
        '`"UserRole"` BEFORE and AFTER TRUNCATE, each statement',
        "smartstart_user_role_truncate()",
        '`TRUNCATE "UserRole"` removes the additional roles only: every user\'s primary-role '
        "row is inserted again at once. It is refused (`last_super_admin`) when it would "
        "leave no ACTIVE `SUPER_ADMIN`.",
    ),
    Trigger(
        ("UserJourneyState_derive",),
        '`"UserJourneyState"` BEFORE INSERT OR UPDATE, each row',
        "smartstart_journey_state()",
        '`"startedAt"` is set when the status becomes `IN_PROGRESS` or `COMPLETED`, '
        '`"completedAt"` on `COMPLETED` (unless given), and `"xpAwardedAt"` marks the state '
        "as paid: an UPDATE cannot clear or change it and an INSERT cannot pre-set it. A paid "
        'state cannot be moved to another user or stage (`UPDATE ... SET "stageId"` is '
        'refused, SQLSTATE 23000). On UPDATE, `"updatedAt"` becomes `now()`.',
    ),
    Trigger(
        ("UserJourneyState_award_insert", "UserJourneyState_award_update"),
        '`"UserJourneyState"` AFTER INSERT, and AFTER UPDATE, each row, when the state '
        "becomes paid",
        "smartstart_journey_award()",
        'Completing a stage — by the API, by the guide\'s `UPDATE "UserJourneyState" SET '
        "status = 'COMPLETED' …`, by inserting a `COMPLETED` state, or by an `INSERT … ON "
        "CONFLICT` — adds the stage's `\"xpReward\"` to the user's `xp` **once**: completing "
        "again, or toggling `COMPLETED → IN_PROGRESS → COMPLETED`, pays nothing more. AFTER "
        "triggers, so a row that `ON CONFLICT` skips pays nothing.",
    ),
    Trigger(
        ("UserJourneyState_keep_awarded",),
        '`"UserJourneyState"` BEFORE DELETE, each row',
        "smartstart_journey_keep_awarded()",
        "A paid state cannot be deleted (SQLSTATE 23000): deleting and inserting it again "
        "would pay twice. It goes with its user (cascade).",
    ),
    Trigger(
        ("UserJourneyState_truncate",),
        '`"UserJourneyState"` BEFORE TRUNCATE, each statement',
        "smartstart_journey_truncate()",
        '`TRUNCATE "UserJourneyState"` is refused (SQLSTATE 23000) while it holds a paid '
        'state, unless `"User"` is truncated in the same statement.',
    ),
    Trigger(
        (
            "User_analytics_insert",
            "User_analytics_update",
            "User_analytics_delete",
            "User_analytics_truncate",
        ),
        '`"User"` AFTER INSERT, UPDATE, DELETE (transition tables) and TRUNCATE, each statement',
        "smartstart_analytics_user()",
        "The analytics counts (`analytics_count` + `analytics_delta`, see "
        "[Analytics summaries](#analytics-summaries)) follow every change of users by any "
        "path: registrations per UTC day by role, status, level and XP band, and users by "
        'day of `"lastActive"`. Each statement inserts its net deltas (no shared row is '
        "updated, so concurrent writers never wait for each other); TRUNCATE empties them. "
        "The users an UPDATE moved to another registration day are found by grouping its "
        "old and new rows by id (migration 0010: 0007 joined the two transition tables, a "
        "nested loop that took 61 s for a 20,000-row UPDATE; now 1.7 s).",
    ),
    Trigger(
        ("User_analytics_gone",),
        '`"User"` BEFORE DELETE, each row',
        "smartstart_analytics_user_gone()",
        "A deleted user's role assignments and journey states leave the analytics counts "
        "(the cascade that deletes them runs when the user can no longer be looked up).",
    ),
    Trigger(
        (
            "UserRole_analytics_insert",
            "UserRole_analytics_update",
            "UserRole_analytics_delete",
            "UserRole_analytics_truncate",
        ),
        '`"UserRole"` AFTER INSERT, UPDATE, DELETE and TRUNCATE, each statement',
        "smartstart_analytics_user_role()",
        "Assigned roles per role and registration day of the user, in the analytics counts.",
    ),
    Trigger(
        (
            "UserJourneyState_analytics_insert",
            "UserJourneyState_analytics_update",
            "UserJourneyState_analytics_delete",
            "UserJourneyState_analytics_truncate",
        ),
        '`"UserJourneyState"` AFTER INSERT, UPDATE, DELETE and TRUNCATE, each statement',
        "smartstart_analytics_journey()",
        "Journey states per stage, status and registration day of the user, in the "
        "analytics counts.",
    ),
    Trigger(
        ("Role_touch", "Permission_touch", "JourneyStage_touch"),
        "BEFORE UPDATE, each row",
        "smartstart_touch_updated_at()",
        '`"updatedAt"` becomes `now()` on every UPDATE.',
    ),
    Trigger(
        (
            "Role_rbac_changed",
            "Permission_rbac_changed",
            "UserRole_rbac_changed",
            "RolePermission_rbac_changed",
        ),
        "AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE, each statement",
        "smartstart_rbac_changed()",
        "Any RBAC change by any path increments `rbac_version.version` in the same "
        "transaction and sends `NOTIFY smartstart_rbac` with the table's name as payload, "
        "delivered at commit (nothing is announced if the transaction rolls back). Brain "
        "workers `LISTEN smartstart_rbac` and drop cached permissions.",
    ),
    Trigger(
        ("User_rbac_changed",),
        '`"User"` AFTER UPDATE OF role, status OR DELETE, each statement',
        "smartstart_rbac_changed()",
        "Idem when a user's role or status changes or a user is deleted.",
    ),
    Trigger(
        (
            "UserRole_holders_insert",
            "UserRole_holders_delete",
            "UserRole_holders_update",
            "UserRole_holders_truncate",
            "User_holders_insert",
            "User_holders_delete",
            "User_holders_update",
            "User_holders_truncate",
        ),
        '`"UserRole"` and `"User"` AFTER INSERT, DELETE, TRUNCATE, each statement (transition '
        'tables); `"UserRole"` AFTER UPDATE, each statement; `"User"` AFTER UPDATE OF role, '
        "each row, when it changes",
        "smartstart_role_holders()",
        "`role_holders` always sums to the number of users holding each role (`holders`: "
        '`"UserRole"` rows) and holding it as their primary role (`primaries`: `"User".role`), '
        "whatever path writes: `GET /api/roles` reads it instead of counting. Each backend adds "
        "its deltas to its own shard row (`pg_backend_pid() % 64`), so concurrent assignments "
        "rarely wait for each other; renaming a role moves nothing.",
    ),
)


def _table(name: str) -> str:
    for table in ("UserJourneyState", "RolePermission", "JourneyStage", "Permission"):
        if name.startswith(table + "_"):
            return table
    return name.split("_", 1)[0]  # User, UserRole, Role


# table -> trigger names.
TRIGGERS: dict[str, frozenset[str]] = {}
for _t in TRIGGER_LIST:
    for _name in _t.names:
        TRIGGERS[_table(_name)] = TRIGGERS.get(_table(_name), frozenset()) | {_name}

SUPER_ADMIN_CONSTRAINTS = (
    "UserRole_keep_super_admin",
    "User_keep_super_admin",
    "Role_keep_super_admin",
)

BEGIN_MARK = "<!-- triggers:begin (generated by `python -m smartstart.db.triggers`) -->"
END_MARK = "<!-- triggers:end -->"
SCHEMA_DOC = Path(__file__).parents[3] / "docs" / "schema.md"


def markdown_table() -> str:
    """docs/schema.md's trigger table."""
    lines = ["| trigger | on | function | guarantees |", "|---|---|---|---|"]
    for t in TRIGGER_LIST:
        names = ", ".join(f"`{n}`" for n in t.names)
        lines.append(f"| {names} | {t.on} | `{t.function}` | {t.guarantees} |")
    return "\n".join(lines)


def documented_table(doc: str) -> str:
    """The generated part of a schema.md text (empty when its markers are missing)."""
    start, end = doc.find(BEGIN_MARK), doc.find(END_MARK)
    if start < 0 or end < start:
        return ""
    return doc[start + len(BEGIN_MARK) : end].strip()


def rewrite(path: Path = SCHEMA_DOC) -> None:
    doc = path.read_text()
    start, end = doc.index(BEGIN_MARK), doc.index(END_MARK)
    path.write_text(doc[: start + len(BEGIN_MARK)] + "\n" + markdown_table() + "\n" + doc[end:])


if __name__ == "__main__":
    rewrite(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DOC)
