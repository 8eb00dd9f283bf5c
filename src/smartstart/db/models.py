"""The platform's tables, with the guide's exact (Prisma-style, quoted) names.

Invariants that raw SQL must not be able to break (levels, "updatedAt", the
primary role, XP awards, session revocation) are database triggers, created by
the migrations; these models describe the columns and constraints only.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import INET, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from smartstart.db import triggers
from smartstart.db.vocabulary import JOURNEY_STATUSES as JOURNEY_STATUSES
from smartstart.db.vocabulary import LEVELS as LEVELS
from smartstart.db.vocabulary import SEARCH_TEXT as SEARCH_TEXT
from smartstart.db.vocabulary import USER_STATUSES as USER_STATUSES
from smartstart.db.vocabulary import level_for as level_for
from smartstart.db.vocabulary import search_key

GEN_ID = text("gen_random_uuid()::text")
NOW = func.now()


def _in(column: str, values: tuple[str, ...]) -> str:
    return f'"{column}" IN (' + ", ".join(f"'{v}'" for v in values) + ")"


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "pk": "%(table_name)s_pkey",
            "uq": "%(table_name)s_%(column_0_N_name)s_key",
            "fk": "%(table_name)s_%(column_0_name)s_fkey",
            "ix": "%(table_name)s_%(column_0_N_name)s_idx",
            "ck": "%(table_name)s_%(constraint_name)s_check",
        }
    )


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)


def _updated() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)


class Role(Base):
    __tablename__ = "Role"

    id: Mapped[str] = mapped_column(Text, primary_key=True, server_default=GEN_ID)
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    createdAt: Mapped[datetime] = _created()
    updatedAt: Mapped[datetime] = _updated()


class Permission(Base):
    __tablename__ = "Permission"
    __table_args__ = (
        UniqueConstraint("resource", "action"),
        CheckConstraint("name = resource || ':' || action", name="name_format"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, server_default=GEN_ID)
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    resource: Mapped[str] = mapped_column(Text, nullable=False)
    action: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    createdAt: Mapped[datetime] = _created()
    updatedAt: Mapped[datetime] = _updated()


class User(Base):
    __tablename__ = "User"
    __table_args__ = (
        CheckConstraint(_in("status", USER_STATUSES), name="status"),
        CheckConstraint(_in("level", tuple(n for n, _ in LEVELS)), name="level"),
        CheckConstraint("xp >= 0", name="xp"),
        # Plain-text passwords written by hand must never land in the table.
        CheckConstraint("password ~ '^\\$2[aby]\\$'", name="password_bcrypt"),
        CheckConstraint("email ~ '^[^@\\s]+@[^@\\s]+$'", name="email"),
        Index("User_email_lower_key", func.lower(text("email")), unique=True),
        Index("User_email_idx", "email"),
        Index("User_status_lastActive_idx", "status", "lastActive"),
        # Users of a role or a level, newest first (migration 0005).
        Index("User_role_createdAt_id_idx", "role", "createdAt", "id"),
        Index("User_level_createdAt_id_idx", "level", "createdAt", "id"),
        Index("User_xp_id_idx", "xp", "id"),
        # db health's primary-role proof: a merge anti-join with "UserRole_pkey" (0009).
        Index("User_id_role_idx", "id", postgresql_include=["role"]),
        # Substring search (`list_users` q), migration 0011: the rare matches through
        # pg_trgm, a page of common ones by walking creation order without the table.
        Index(
            "User_searchText_trgm_idx",
            "searchText",
            postgresql_using="gin",
            postgresql_ops={"searchText": "gin_trgm_ops"},
        ),
        Index(
            "User_createdAt_id_searchText_idx",
            "createdAt",
            "id",
            postgresql_include=["searchText"],
        ),
        Index(
            "User_email_prefix_idx",
            func.lower(text("email")),
            postgresql_ops={"lower_1": "text_pattern_ops"},
        ),
        Index(
            "User_username_prefix_idx",
            func.lower(text("username")),
            postgresql_ops={"lower_1": "text_pattern_ops"},
        ),
        Index("User_lastActive_idx", "lastActive", "id"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, server_default=GEN_ID)
    email: Mapped[str] = mapped_column(Text, nullable=False)
    username: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    firstName: Mapped[str | None] = mapped_column(Text)
    lastName: Mapped[str | None] = mapped_column(Text)
    password: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(
        Text,
        ForeignKey("Role.name", onupdate="CASCADE", ondelete="RESTRICT"),
        nullable=False,
        server_default="MEMBER",
    )
    level: Mapped[str] = mapped_column(Text, nullable=False, server_default="OWLET")
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="ACTIVE")
    xp: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    reputation: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    lastActive: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    createdAt: Mapped[datetime] = _created()
    updatedAt: Mapped[datetime] = _updated()
    # What `list_users` searches, as vocabulary.search_key makes it (PostgreSQL computes it).
    searchText: Mapped[str] = mapped_column(
        Text, Computed(search_key(SEARCH_TEXT), persisted=True), nullable=False
    )


class UserRole(Base):
    __tablename__ = "UserRole"
    __table_args__ = (
        PrimaryKeyConstraint("userId", "roleId"),
        Index("UserRole_roleId_userId_idx", "roleId", "userId"),
        Index("UserRole_assignedBy_idx", "assignedBy"),
    )

    userId: Mapped[str] = mapped_column(Text, ForeignKey("User.id", ondelete="CASCADE"))
    roleId: Mapped[str] = mapped_column(Text, ForeignKey("Role.id", ondelete="CASCADE"))
    assignedAt: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    assignedBy: Mapped[str | None] = mapped_column(Text, ForeignKey("User.id", ondelete="SET NULL"))


class RolePermission(Base):
    __tablename__ = "RolePermission"
    __table_args__ = (
        PrimaryKeyConstraint("roleId", "permissionId"),
        Index("RolePermission_permissionId_idx", "permissionId"),
    )

    roleId: Mapped[str] = mapped_column(Text, ForeignKey("Role.id", ondelete="CASCADE"))
    permissionId: Mapped[str] = mapped_column(Text, ForeignKey("Permission.id", ondelete="CASCADE"))
    grantedAt: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )


class JourneyStage(Base):
    __tablename__ = "JourneyStage"
    __table_args__ = (
        # Deferred so that stages can swap places within one transaction.
        UniqueConstraint("order", deferrable=True, initially="DEFERRED"),
        CheckConstraint('"xpReward" >= 0', name="xpReward"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, server_default=GEN_ID)
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    order: Mapped[int] = mapped_column(Integer, nullable=False)
    xpReward: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="true")
    createdAt: Mapped[datetime] = _created()
    updatedAt: Mapped[datetime] = _updated()


class UserJourneyState(Base):
    __tablename__ = "UserJourneyState"
    __table_args__ = (
        UniqueConstraint("userId", "stageId"),
        CheckConstraint(_in("status", JOURNEY_STATUSES), name="status"),
        Index("UserJourneyState_stageId_status_idx", "stageId", "status"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, server_default=GEN_ID)
    userId: Mapped[str] = mapped_column(
        Text, ForeignKey("User.id", ondelete="CASCADE"), nullable=False
    )
    # RESTRICT: a stage with history is deactivated, not deleted.
    stageId: Mapped[str] = mapped_column(
        Text, ForeignKey("JourneyStage.id", ondelete="RESTRICT"), nullable=False
    )
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="NOT_STARTED")
    startedAt: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completedAt: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set once by the trigger that awards the stage's XP; never cleared.
    xpAwardedAt: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    createdAt: Mapped[datetime] = _created()
    updatedAt: Mapped[datetime] = _updated()


class Session(Base):
    __tablename__ = "Session"
    __table_args__ = (
        Index("Session_userId_idx", "userId"),
        Index("Session_expiresAt_idx", "expiresAt"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, server_default=GEN_ID)
    tokenHash: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    userId: Mapped[str] = mapped_column(
        Text, ForeignKey("User.id", ondelete="CASCADE"), nullable=False
    )
    expiresAt: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    createdAt: Mapped[datetime] = _created()
    lastSeenAt: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    ip: Mapped[str | None] = mapped_column(INET)
    userAgent: Mapped[str | None] = mapped_column(Text)
    revokedAt: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("audit_log_createdAt_idx", "createdAt"),
        # The listing is newest first by id: each filter's index ends with id.
        Index("audit_log_actor_id_idx", "actor", "id"),
        Index(
            "audit_log_action_id_idx", "action", "id", postgresql_ops={"action": "text_pattern_ops"}
        ),
        Index("audit_log_resource_resourceId_id_idx", "resource", "resourceId", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    actor: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text, nullable=False)
    resource: Mapped[str | None] = mapped_column(Text)
    resourceId: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    ip: Mapped[str | None] = mapped_column(INET)
    createdAt: Mapped[datetime] = _created()


class RbacVersion(Base):
    """One row whose version every RBAC change bumps (by trigger)."""

    __tablename__ = "rbac_version"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="1")
    changedAt: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )


class LoginThrottle(Base):
    """Failed-login counters per account and per client address."""

    __tablename__ = "LoginThrottle"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    firstFailureAt: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    lastFailureAt: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    lockedUntil: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AnalyticsCount(Base):
    """Analytics totals per kind and key (migration 0007; see domain/analytics.py)."""

    __tablename__ = "analytics_count"
    __table_args__ = (PrimaryKeyConstraint("kind", "day", "subject", "status", "level", "band"),)

    kind: Mapped[str] = mapped_column(Text)
    day: Mapped[date] = mapped_column(Date)
    subject: Mapped[str] = mapped_column(Text, server_default="")
    status: Mapped[str] = mapped_column(Text, server_default="")
    level: Mapped[str] = mapped_column(Text, server_default="")
    band: Mapped[str] = mapped_column(Text, server_default="")
    n: Mapped[int] = mapped_column(BigInteger, nullable=False)
    xp: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")


class AnalyticsDelta(Base):
    """What the analytics triggers added since the last compaction into analytics_count."""

    __tablename__ = "analytics_delta"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    day: Mapped[date] = mapped_column(Date, nullable=False)
    subject: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    level: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    band: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    n: Mapped[int] = mapped_column(BigInteger, nullable=False)
    xp: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")


# Exact medians of the time to complete a stage: its completed states by duration bucket
# (64 per factor e; migration 0007's DURATION_BUCKET, as Alembic reflects it), then duration.
DURATION_BUCKET = (
    'floor(ln(GREATEST(date_part(\'epoch\'::text, "completedAt" - "startedAt"),'
    " 0::double precision) + 1::double precision) * 64::double precision)"
)
Index(
    "UserJourneyState_stageId_duration_idx",
    UserJourneyState.stageId,
    text(DURATION_BUCKET),
    text('("completedAt" - "startedAt")'),
    postgresql_include=["completedAt", "startedAt"],
    postgresql_where=text("(status = 'COMPLETED'::text)"),
)


class RoleHolders(Base):
    """Users holding each role (any assignment) and holding it as primary, kept by triggers.

    One row per role and shard (a backend adds to its own shard): sum the shards.
    """

    __tablename__ = "role_holders"

    roleId: Mapped[str] = mapped_column(
        Text, ForeignKey("Role.id", ondelete="CASCADE"), primary_key=True
    )
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holders: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    primaries: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")


class StatsSnapshot(Base):
    """One snapshot of the server's statistics (`db stats --since` compares with it)."""

    __tablename__ = "stats_snapshot"
    __table_args__ = (Index("stats_snapshot_takenAt_idx", "takenAt"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    takenAt: Mapped[datetime] = _created()
    databaseBytes: Mapped[int] = mapped_column(BigInteger, nullable=False)


class StatsStatement(Base):
    """A statement's pg_stat_statements counters at a snapshot (summed over roles)."""

    __tablename__ = "stats_statement"

    snapshotId: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("stats_snapshot.id", ondelete="CASCADE"), primary_key=True
    )
    queryid: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    query: Mapped[str] = mapped_column(Text, nullable=False)
    calls: Mapped[int] = mapped_column(BigInteger, nullable=False)
    totalMs: Mapped[float] = mapped_column(Double, nullable=False)
    rows: Mapped[int] = mapped_column(BigInteger, nullable=False)


class StatsTable(Base):
    """A table's sizes and tuple counts at a snapshot."""

    __tablename__ = "stats_table"

    snapshotId: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("stats_snapshot.id", ondelete="CASCADE"), primary_key=True
    )
    schema: Mapped[str] = mapped_column(Text, primary_key=True)
    table: Mapped[str] = mapped_column(Text, primary_key=True)
    totalBytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    tableBytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    indexBytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    liveTuples: Mapped[int] = mapped_column(BigInteger, nullable=False)
    deadTuples: Mapped[int] = mapped_column(BigInteger, nullable=False)


# The triggers the migrations at head create (Alembic cannot compare triggers, so
# `smartstart db check` compares the catalog with this list; see db/triggers.py).
TRIGGERS = triggers.TRIGGERS


class JobRun(Base):
    """One attempt at one slot of a scheduled job (services/scheduler.py)."""

    __tablename__ = "job_runs"
    __table_args__ = (
        CheckConstraint("outcome IN ('running', 'ok', 'failed')", name="outcome"),
        CheckConstraint("attempt >= 1", name="attempt"),
        UniqueConstraint("job", "slot", "attempt"),
        Index("job_runs_job_startedAt_idx", "job", "startedAt"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    job: Mapped[str] = mapped_column(Text, nullable=False)
    slot: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    startedAt: Mapped[datetime] = _created()
    finishedAt: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(Text, nullable=False, server_default="'running'")
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    runner: Mapped[str | None] = mapped_column(Text)
