"""The OpenAPI contract beyond the routers: stable operation ids, the health routes' bodies."""

from __future__ import annotations

from typing import Any, Literal

from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field


def operation_id(route: APIRoute) -> str:
    """The id of a route that sets none: `<tag>_<endpoint name>`, never built from its path."""
    # Every route of ours sets `operation_id` (`resource_action`); this only keeps a route
    # added without one off FastAPI's default, which changes whenever the path does.
    tag = str(route.tags[0]) if route.tags else "api"
    return f"{tag}_{route.name}".lower()


class Liveness(BaseModel):
    """The body of /healthz."""

    status: Literal["ok"]


class Workers(BaseModel):
    """A supervisor's workers (under `smartstart serve --workers N`)."""

    alive: int
    expected: int
    restarts: int


class FailedJob(BaseModel):
    """A scheduled job (backup, cleanup) whose latest slot failed for good."""

    job: str
    slot: str = Field(description="When the run was due (ISO 8601)")
    attempt: int
    error: str | None


class Readiness(BaseModel):
    """The body of /readyz, ready (200) or not (503)."""

    status: Literal["ready", "degraded", "unavailable"]
    revision: str | None = Field(default=None, description="The schema's migration revision")
    head: str | None = Field(default=None, description="The revision the Brain expects")
    reason: str | None = Field(default=None, description="Why it is not ready")
    workers: Workers | None = None
    jobs: list[FailedJob] | None = Field(
        default=None, description="Scheduled jobs whose latest slot failed, after its retry"
    )


READINESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"model": Readiness, "description": "Not ready; `reason` says why"}
}

# What /metrics sends: Prometheus' text exposition format, not JSON.
METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
    }
}
