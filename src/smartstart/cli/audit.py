"""`smartstart audit …`: read the audit log, over smartstart.domain.audit."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

import typer

from smartstart.cli.common import (
    JsonOpt,
    WhenOpt,
    err_console,
    handle_errors,
    print_json,
    print_table,
)
from smartstart.cli.context import transaction
from smartstart.domain import audit

app = typer.Typer(help="The audit log: who did what, to what, when.", no_args_is_help=True)

COLUMNS = ("id", "createdAt", "actor", "action", "resource", "resourceId", "ip")


def parse_cursor(value: str | None) -> str | None:
    """The next_cursor of a previous page: a positive whole number."""
    if value is not None and not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise typer.BadParameter(f"{value!r} is not a cursor (the number a previous page gave)")
    return value


@app.command("list")
@handle_errors
def list_(
    actor: Annotated[
        str | None, typer.Option(help="Who acted: a user id, cli:<os user> or anonymous.")
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(help="Exact action (users.create), or a prefix ending in * (journey.*)."),
    ] = None,
    resource: Annotated[str | None, typer.Option(help="Resource type (e.g. journey).")] = None,
    resource_id: Annotated[str | None, typer.Option(help="Resource id.")] = None,
    since: WhenOpt = None,
    until: WhenOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Entries per page.")] = 50,
    cursor: Annotated[
        str | None,
        typer.Option(callback=parse_cursor, help="Continue after a previous page (older)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List audit entries, newest first; filter by actor, action, resource and time."""
    if since is not None and until is not None and since >= until:
        raise typer.BadParameter("--since must be before --until")
    filters = audit.AuditFilter(actor, action, resource, resource_id, since, until)
    with transaction() as (conn, _):
        rows = audit.list_entries(
            conn, filters, limit=limit + 1, before_id=int(cursor) if cursor else None
        )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = str(rows[-1]["id"]) if more and rows else None
    if as_json:
        print_json({"items": rows, "next_cursor": next_cursor})
        return
    shown = [{**r, "createdAt": r["createdAt"].astimezone(UTC).strftime("%F %T")} for r in rows]
    print_table(shown, COLUMNS, title="Audit log (UTC)")
    if next_cursor:
        err_console.print(f"more entries: --cursor {next_cursor}", highlight=False)
