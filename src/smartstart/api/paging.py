"""The query parameters every listing takes (limit, cursor), checked by domain.paging.

The bounds are documented here but enforced by the domain, so a bad limit or cursor
gets the same error from every listing and from the CLI.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from smartstart.domain.paging import DEFAULT_LIMIT, MAX_LIMIT

Limit = Annotated[
    int,
    Query(
        description=f"Items per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
        json_schema_extra={"minimum": 1, "maximum": MAX_LIMIT},
    ),
]
Cursor = Annotated[
    str | None,
    Query(description="The next_cursor of the previous page, unchanged (opaque, signed)"),
]
