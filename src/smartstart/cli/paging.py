"""The options every listing command takes (--limit, --cursor) and how it ends a page."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from smartstart.cli.common import err_console
from smartstart.cli.output import say
from smartstart.domain.paging import DEFAULT_LIMIT, MAX_LIMIT, Page

# Checked by domain.paging, not by typer: the same error as the API's for a bad limit.
LimitOpt = Annotated[int, typer.Option("--limit", "-n", help=f"Items per page, 1 to {MAX_LIMIT}.")]
CursorOpt = Annotated[
    str | None,
    typer.Option("--cursor", help="Continue after a previous page (the cursor it printed)."),
]
__all__ = ["DEFAULT_LIMIT", "CursorOpt", "LimitOpt", "more"]


def more(page: Page[Any]) -> None:
    """Say how to get the next page (on stderr, so the table on stdout stays clean)."""
    if page.next_cursor:
        say(err_console, f"more: --cursor {page.next_cursor}")
