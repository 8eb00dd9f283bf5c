"""/api/analytics/…: the guide's Data Analysis (domain/analytics.py), `analytics:read`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from smartstart.api.deps import ConnDep, require
from smartstart.domain import analytics
from smartstart.domain.analytics import DateRange

router = APIRouter(prefix="/api/analytics", tags=["analytics"])
ACCESS = [require("analytics:read")]


class AnalyticsPeriod(StrEnum):
    day = "day"
    week = "week"
    month = "month"


Since = Annotated[date | None, Query(description="First day (UTC, inclusive), YYYY-MM-DD")]
Until = Annotated[date | None, Query(description="Last day (UTC, inclusive), YYYY-MM-DD")]
PeriodQuery = Annotated[AnalyticsPeriod, Query(description="Bucket size")]
SERIES_HELP = (
    " Whole buckets from the one holding `since` to the one holding `until` (default: the "
    f"last {analytics.DEFAULT_SPAN['day']} days, {analytics.DEFAULT_SPAN['week']} weeks or "
    f"{analytics.DEFAULT_SPAN['month']} months up to today), zero-filled; at most "
    f"{analytics.MAX_BUCKETS} buckets."
)
COHORT_HELP = " Of the users registered from `since` to `until` (UTC days); every user without."


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class AnalyticsBucket(_Out):
    start: date
    end: date = Field(description="The bucket's last day")
    users: int
    cumulative: int = Field(description="Users up to the end of this bucket, all time")


class AnalyticsSeries(_Out):
    period: AnalyticsPeriod
    since: date = Field(description="First day of the first bucket")
    until: date = Field(description="Last day of the last bucket")
    before: int = Field(description="Users before `since`")
    total: int = Field(description="Users from `since` to `until`")
    buckets: list[AnalyticsBucket]


class AnalyticsShare(_Out):
    name: str
    users: int
    share: float | None = Field(description="Percent of total, 2 decimals; null when total is 0")


class RoleDistribution(_Out):
    since: date | None
    until: date | None
    total: int
    primary: list[AnalyticsShare] = Field(description='By "User".role, most first')
    assigned: list[AnalyticsShare] = Field(description='Holders of each role ("UserRole")')


class XpBand(_Out):
    band: str
    minXp: int
    maxXp: int | None
    users: int
    share: float | None


class XpLevel(_Out):
    level: str
    minXp: int
    users: int
    share: float | None
    totalXp: int
    averageXp: float | None


class XpDistribution(_Out):
    since: date | None
    until: date | None
    total: int
    bands: list[XpBand]
    levels: list[XpLevel]


class StatusDistribution(_Out):
    since: date | None
    until: date | None
    total: int
    statuses: list[AnalyticsShare]


class FunnelStage(_Out):
    stageId: str
    name: str
    order: int
    active: bool
    total: int = Field(description="Journey states of the stage, any status")
    notStarted: int
    inProgress: int
    started: int = Field(description="In progress or completed")
    completed: int
    skipped: int
    completionRate: float | None = Field(description="completed / total in percent; null if 0")
    medianSecondsToComplete: float | None


class JourneyFunnel(_Out):
    since: date | None
    until: date | None
    stages: list[FunnelStage]
    mediansOmitted: bool = Field(
        description="The range's users completed more than "
        f"{analytics.COHORT_MEDIAN_MAX:,} states: medians left out (null)"
    )


def _series_route(name: str, compute: Callable[..., Any], summary: str, description: str) -> None:
    @router.get(
        f"/{name}",
        operation_id=f"analytics_{name}",
        summary=summary,
        description=description + SERIES_HELP,
        response_model=AnalyticsSeries,
        dependencies=ACCESS,
    )
    def route(
        conn: ConnDep,
        since: Since = None,
        until: Until = None,
        period: PeriodQuery = AnalyticsPeriod.day,
    ) -> AnalyticsSeries:
        return AnalyticsSeries.model_validate(compute(conn, DateRange(since, until), period.value))


def _cohort_route(
    name: str,
    compute: Callable[..., Any],
    model: type[_Out],
    summary: str,
    description: str,
) -> None:
    @router.get(
        f"/{name}",
        operation_id=f"analytics_{name}",
        summary=summary,
        description=description + COHORT_HELP,
        response_model=model,
        dependencies=ACCESS,
    )
    def route(conn: ConnDep, since: Since = None, until: Until = None) -> Any:
        return model.model_validate(compute(conn, DateRange(since, until)))


_series_route(
    "registrations",
    analytics.registrations,
    "New users per day, week or month, with cumulative totals",
    'By "createdAt" (UTC).',
)
_series_route(
    "activity",
    analytics.activity,
    "Users by the day of their last activity",
    'By "lastActive" (UTC): each user counts once, on the day last seen.',
)
_cohort_route(
    "roles",
    analytics.roles,
    RoleDistribution,
    "Role distribution: primary and assigned roles",
    "Every role, with 0 where nobody holds it.",
)
_cohort_route(
    "xp",
    analytics.xp,
    XpDistribution,
    "XP distribution in the guide's bands and by level",
    "Bands 0-99, 100-499, 500-999, 1000+; levels with total and average XP.",
)
_cohort_route(
    "journey",
    analytics.journey,
    JourneyFunnel,
    "Journey funnel: each stage's states, completion rate and median time",
    "Every stage in order (inactive ones too).",
)
_cohort_route(
    "status",
    analytics.statuses,
    StatusDistribution,
    "Users per status",
    "ACTIVE, INACTIVE, SUSPENDED, PENDING.",
)
