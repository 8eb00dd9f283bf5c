"""The running platform: the database's lifecycle and the Brain's processes."""

from __future__ import annotations

from typing import Any

from smartstart.config import Settings
from smartstart.services import brain, database


def services_status(settings: Settings) -> list[dict[str, Any]]:
    """State, pid, port and URL of each service."""
    return [database.status_row(settings), brain.status_row(settings)]
