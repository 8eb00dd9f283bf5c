"""`smartstart journey …`: stages and users' progress, over smartstart.domain.journey."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from smartstart.cli.common import (
    DryRunOpt,
    JsonOpt,
    YesOpt,
    confirm,
    console,
    handle_errors,
    print_json,
    print_table,
    settings,
)
from smartstart.cli.context import transaction
from smartstart.cli.paging import DEFAULT_LIMIT, CursorOpt, LimitOpt, more
from smartstart.domain import journey

app = typer.Typer(
    help="Onboarding journeys: stages, users' progress, XP awards.", no_args_is_help=True
)

UserArg = Annotated[str, typer.Argument(help="The user: email, username or id.")]
StageArg = Annotated[str, typer.Argument(help="The stage: name or id.")]
STAGE_COLUMNS = ("order", "name", "xpReward", "active", "id", "description")
JOURNEY_COLUMNS = ("order", "name", "status", "xpReward", "startedAt", "completedAt")


def _say(message: str) -> None:
    console.print(f"[green]•[/] {message}", highlight=False)


def _when(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else None


def _stage_json(row: journey.StageRow) -> dict[str, object]:
    return dict(row)


@app.command()
@handle_errors
def stages(
    as_json: JsonOpt = False,
    all_: Annotated[bool, typer.Option("--all", help="Include inactive stages.")] = False,
    limit: LimitOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
) -> None:
    """List the journey stages by order (active ones unless --all)."""
    with transaction() as (conn, _):
        page = journey.list_stages(
            conn, settings=settings(), include_inactive=all_, limit=limit, cursor=cursor
        )
    if as_json:
        print_json({"items": [_stage_json(r) for r in page.items], "next_cursor": page.next_cursor})
        return
    print_table(page.items, STAGE_COLUMNS, title="Journey stages")
    more(page)


@app.command()
@handle_errors
def show(user: UserArg, as_json: JsonOpt = False) -> None:
    """A user's journey: every active stage with their state, and their XP and level."""
    with transaction() as (conn, _):
        data = journey.journey(conn, user)
    if as_json:
        print_json(data)
        return
    u = data["user"]
    rows = [
        {**s, "startedAt": _when(s["startedAt"]), "completedAt": _when(s["completedAt"])}
        for s in data["stages"]
    ]
    print_table(
        rows,
        JOURNEY_COLUMNS,
        title=f"{u['email']}: {data['completed']}/{data['total']} completed,"
        f" {u['xp']} XP, {u['level']}",
    )


def _progress(action: str, user: str, stage: str, as_json: bool) -> None:
    with transaction() as (conn, actor):
        result = journey.progress(conn, actor, user, stage, action)
    if as_json:
        print_json(result)
        return
    if not result["changed"]:
        _say(f"{result['stage']!r} was already {result['status']}; nothing changed")
        return
    extra = f", +{result['xpAwarded']} XP" if result["xpAwarded"] else ""
    _say(
        f"{result['stage']!r} is now {result['status']}{extra}"
        f" (user has {result['xp']} XP, {result['level']})"
    )


@app.command()
@handle_errors
def start(user: UserArg, stage: StageArg, as_json: JsonOpt = False) -> None:
    """Start a stage for a user (NOT_STARTED or SKIPPED -> IN_PROGRESS)."""
    _progress(journey.START, user, stage, as_json)


@app.command()
@handle_errors
def complete(user: UserArg, stage: StageArg, as_json: JsonOpt = False) -> None:
    """Complete a stage for a user (needs it started, or the previous stage done)."""
    _progress(journey.COMPLETE, user, stage, as_json)


@app.command()
@handle_errors
def skip(user: UserArg, stage: StageArg, as_json: JsonOpt = False) -> None:
    """Skip a stage for a user (not once it is completed)."""
    _progress(journey.SKIP, user, stage, as_json)


# -- stage management -------------------------------------------------------------------

NameOpt = Annotated[str | None, typer.Option("--name", help="The stage's name (unique).")]
OrderOpt = Annotated[
    int | None, typer.Option("--order", min=1, max=journey.ORDER_MAX, help="Its place.")
]
XpOpt = Annotated[
    int | None,
    typer.Option("--xp", min=0, max=journey.XP_REWARD_MAX, help="XP awarded on completion."),
]
DescriptionOpt = Annotated[str | None, typer.Option("--description", help="What the stage is.")]


@app.command("stage-create")
@handle_errors
def stage_create(
    name: Annotated[str, typer.Argument(help="The new stage's name (unique).")],
    order: OrderOpt = None,
    xp: XpOpt = 0,
    description: DescriptionOpt = None,
    inactive: Annotated[bool, typer.Option("--inactive", help="Create it hidden.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a journey stage (placed after the last one unless --order)."""
    with transaction() as (conn, actor):
        row = journey.create_stage(
            conn,
            actor,
            name=name,
            order=order,
            xp_reward=xp or 0,
            description=description,
            active=not inactive,
        )
    if as_json:
        print_json(_stage_json(row))
    else:
        _say(f"created stage {row['name']!r} (order {row['order']}, {row['xpReward']} XP)")


@app.command("stage-update")
@handle_errors
def stage_update(
    stage: StageArg,
    name: NameOpt = None,
    order: OrderOpt = None,
    xp: XpOpt = None,
    description: DescriptionOpt = None,
    active: Annotated[
        bool | None, typer.Option("--active/--inactive", help="Show or hide the stage.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a stage's name, order, XP reward, description or activity."""
    changes: journey.StageChanges = {}
    if name is not None:
        changes["name"] = name
    if order is not None:
        changes["order"] = order
    if xp is not None:
        changes["xpReward"] = xp
    if description is not None:
        changes["description"] = description
    if active is not None:
        changes["active"] = active
    if not changes:
        raise typer.BadParameter("give at least one of --name --order --xp --description --active")
    with transaction() as (conn, actor):
        row = journey.update_stage(conn, actor, stage, changes)
    if as_json:
        print_json(_stage_json(row))
    else:
        _say(
            f"stage {row['name']!r}: order {row['order']}, {row['xpReward']} XP,"
            f" {'active' if row['active'] else 'inactive'}"
        )


@app.command("stage-deactivate")
@handle_errors
def stage_deactivate(stage: StageArg) -> None:
    """Hide a stage from journeys; its history (and awarded XP) stays."""
    with transaction() as (conn, actor):
        row = journey.deactivate_stage(conn, actor, stage)
    _say(f"stage {row['name']!r} is inactive")


@app.command("stage-delete")
@handle_errors
def stage_delete(stage: StageArg, yes: YesOpt = False, dry_run: DryRunOpt = False) -> None:
    """Delete a stage nobody has progress in (otherwise deactivate it)."""
    with transaction() as (conn, _):
        plan = journey.plan_stage_delete(conn, stage)
    row = plan.stage
    what = f"stage {row['name']!r} (order {row['order']}, id {row['id']})"
    if dry_run:
        _say(
            f"would delete {what}"
            if plan.deletable
            else f"cannot delete {what}: {plan.states} journey state(s) reference it;"
            " use stage-deactivate"
        )
        return
    # No prompt inside a transaction: the delete checks the stage's use again itself.
    confirm(f"Delete {what}?", yes)
    with transaction() as (conn, actor):
        journey.delete_stage(conn, actor, row["id"])
    _say(f"deleted {what}")


@app.command()
@handle_errors
def reorder(
    stages_: Annotated[
        list[str],
        typer.Argument(
            metavar="STAGE...",
            help="Every active stage (name or id) in the new order; inactive ones follow.",
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Put the stages in the given order (orders 1..N, in one transaction)."""
    with transaction() as (conn, actor):
        rows = journey.reorder_stages(conn, actor, stages_)
    if as_json:
        print_json([_stage_json(r) for r in rows])
    else:
        print_table(rows, STAGE_COLUMNS, title="Journey stages")
