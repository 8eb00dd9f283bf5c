"""`smartstart audit …`: read the audit log, over smartstart.domain.audit."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

import typer

from smartstart.cli.common import (
    JsonOpt,
    WhenOpt,
    handle_errors,
    print_json,
    print_table,
    settings,
)
from smartstart.cli.context import transaction
from smartstart.cli.paging import DEFAULT_LIMIT, CursorOpt, LimitOpt, more

app = typer.Typer(help="The audit log: who did what, to what, when.", no_args_is_help=True)

COLUMNS = ("id", "createdAt", "actor", "action", "resource", "resourceId", "ip")


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
    limit: LimitOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List audit entries, newest first; filter by actor, action, resource and time."""
    from smartstart.domain import audit  # here, not to build the group: see cli/users.py

    if since is not None and until is not None and since >= until:
        raise typer.BadParameter("--since must be before --until")
    filters = audit.AuditFilter(actor, action, resource, resource_id, since, until)
    with transaction() as (conn, _):
        page = audit.list_entries(conn, filters, settings=settings(), limit=limit, cursor=cursor)
    if as_json:
        print_json(page.as_dict())
        return
    shown = [
        {
            **r,
            "createdAt": r["createdAt"].astimezone(UTC).strftime("%F %T"),
            # The person, where the actor is one; cli:<os user> and anonymous as they are.
            "actor": r["actorEmail"] or r["actor"],
        }
        for r in page.items
    ]
    print_table(shown, COLUMNS, title="Audit log (UTC)")
    more(page)
