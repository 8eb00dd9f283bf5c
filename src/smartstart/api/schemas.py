"""API response models shared by several routers (kept apart from the database models)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel


# Named enums: one schema each in the OpenAPI document, used alike by query parameters,
# request bodies and responses (a generated client gets one type, not one per use). Roles
# stay strings: custom roles are made at run time.
class UserStatus(StrEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    SUSPENDED = "SUSPENDED"
    PENDING = "PENDING"


class UserLevel(StrEnum):
    OWLET = "OWLET"
    FLEDGLING = "FLEDGLING"
    NIGHT_OWL = "NIGHT_OWL"
    WISE_OWL = "WISE_OWL"


class StageStatus(StrEnum):
    """A user's state in one journey stage."""

    NOT_STARTED = "NOT_STARTED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    SKIPPED = "SKIPPED"


class StageAction(StrEnum):
    """A move in a journey stage: start (-> IN_PROGRESS), complete or skip."""

    start = "start"
    complete = "complete"
    skip = "skip"


class UserAccount(BaseModel):
    """A user as the API shows it (never the password hash)."""

    id: str
    email: str
    username: str
    name: str | None
    firstName: str | None
    lastName: str | None
    role: str
    level: UserLevel
    status: UserStatus
    xp: int
    reputation: int
    lastActive: datetime
    createdAt: datetime
    updatedAt: datetime
