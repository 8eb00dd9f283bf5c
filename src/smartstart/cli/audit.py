"""`smartstart audit …`: read the audit log, over smartstart.domain.audit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from smartstart.cli.common import JsonOpt, handle_errors, print_json, print_table, settings
from smartstart.cli.context import transaction
from smartstart.cli.paging import DEFAULT_LIMIT, CursorOpt, LimitOpt, more
from smartstart.domain import audit

app = typer.Typer(help="The audit log: who did what, to what, when.", no_args_is_help=True)

COLUMNS = ("id", "createdAt", "actor", "action", "resource", "resourceId", "ip")


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or datetime; one without a zone is taken as UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or datetime"
            " (e.g. 2025-01-31 or 2025-01-31T14:00:00+01:00)",
            param_hint=option,
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


TimeOpt = Annotated[
    str | None,
    typer.Option(
        metavar="ISO",
        help="ISO 8601 date or datetime (UTC when no zone is given).",
    ),
]


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
    since: TimeOpt = None,
    until: TimeOpt = None,
    limit: LimitOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List audit entries, newest first; filter by actor, action, resource and time."""
    start = parse_time(since, "--since")
    end = parse_time(until, "--until")
    if start is not None and end is not None and start >= end:
        raise typer.BadParameter("--since must be before --until")
    filters = audit.AuditFilter(actor, action, resource, resource_id, start, end)
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
