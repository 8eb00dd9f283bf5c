"""API response models shared by several routers (kept apart from the database models)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class UserAccount(BaseModel):
    """A user as the API shows it (never the password hash)."""

    id: str
    email: str
    username: str
    name: str | None
    firstName: str | None
    lastName: str | None
    role: str
    level: str
    status: str
    xp: int
    reputation: int
    lastActive: datetime
    createdAt: datetime
    updatedAt: datetime
