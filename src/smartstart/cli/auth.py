"""`smartstart auth …`: login throttles and users' sessions, for operators."""

from __future__ import annotations

from typing import Annotated

import typer

from smartstart.cli.common import (
    DryRunOpt,
    JsonOpt,
    YesOpt,
    confirm,
    console,
    fail,
    handle_errors,
    print_json,
    print_table,
    settings,
)
from smartstart.cli.context import transaction
from smartstart.cli.output import say
from smartstart.cli.paging import DEFAULT_LIMIT, CursorOpt, LimitOpt, more

app = typer.Typer(help="Sign-in throttles and sessions.", no_args_is_help=True)

SESSION_COLUMNS = ("id", "state", "createdAt", "lastSeenAt", "expiresAt", "ip", "userAgent")


@app.command()
@handle_errors
def unlock(
    email: Annotated[
        str | None, typer.Argument(help="The account's email (or username).", show_default=False)
    ] = None,
    ip: Annotated[str | None, typer.Option("--ip", help="A client address to unlock.")] = None,
) -> None:
    """Lift the login throttle of an account and/or a client address."""
    from smartstart.domain import auth  # here, not to build the group: see cli/users.py

    if not email and not ip:
        raise fail("give an EMAIL and/or --ip ADDRESS")
    with transaction() as (conn, actor):
        cleared = auth.clear_throttle(conn, actor, email=email, ip=ip)
    what = " and ".join(x for x in (email, f"address {ip}" if ip else None) if x)
    console.print(
        f"[green]•[/] unlocked {what}" + ("" if cleared else " (it was not throttled)"),
        highlight=False,
    )


@app.command("sessions")
@handle_errors
def list_sessions(
    user: Annotated[str, typer.Argument(help="The user's id, email or username.")],
    include_ended: Annotated[
        bool, typer.Option("--all", help="Also list revoked, expired and idle sessions.")
    ] = False,
    limit: LimitOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a user's sessions, newest first (live ones unless --all)."""
    from smartstart.domain import auth
    from smartstart.domain.resolve import resolve_user

    with transaction() as (conn, _):
        found = resolve_user(conn, user)
        page = auth.list_user_sessions(
            conn,
            found["id"],
            settings(),
            include_ended=include_ended,
            limit=limit,
            cursor=cursor,
        )
    if as_json:
        print_json(page.as_dict())
        return
    if not page.items and cursor is None:
        say(console, f"{found['email']} has no {'' if include_ended else 'live '}sessions")
        return
    print_table(page.items, SESSION_COLUMNS, title=f"sessions of {found['email']}")
    more(page)


@app.command()
@handle_errors
def revoke(
    session_id: Annotated[
        str | None, typer.Argument(help="The session to end.", show_default=False)
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="With --all: the user whose sessions to end.")
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="End every live session of --user.")
    ] = False,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """End one session, or every session of a user (--user EMAIL --all)."""
    from smartstart.domain import auth

    if session_id and (user or everything):
        raise fail("give either SESSION_ID or --user EMAIL --all, not both")
    if not session_id and not (user and everything):
        raise fail("give a SESSION_ID, or --user EMAIL --all")
    # The plan is read, shown and confirmed with no transaction open; the write
    # then checks again in its own.
    if session_id:
        with transaction() as (conn, _):
            plan = auth.plan_revoke_session(conn, session_id)
        s = plan.session
        created = f"{s['createdAt']:%Y-%m-%d %H:%M}"
        console.print(
            f"session {s['id']} of {s['email']} ({'live' if plan.live else 'already ended'}),"
            f" created {created} from {s['ip'] or 'unknown address'}",
            highlight=False,
        )
        if dry_run:
            console.print("dry run: nothing was changed")
            return
        confirm("End this session?", yes)
        with transaction() as (conn, actor):
            ended = auth.revoke_session(conn, actor, session_id)
        console.print(
            "[green]•[/] " + ("session ended" if ended else "the session had already ended"),
            highlight=False,
        )
        return
    assert user is not None
    with transaction() as (conn, _):
        every = auth.plan_revoke_all(conn, user, settings())
    email = every.user["email"]
    console.print(f"{email} has {every.live} live session(s)", highlight=False)
    if dry_run:
        console.print("dry run: nothing was changed")
        return
    confirm(f"End every session of {email}?", yes)
    with transaction() as (conn, actor):
        count = auth.revoke_all_sessions(conn, actor, every.user["id"])
    console.print(f"[green]•[/] ended {count} session(s) of {email}", highlight=False)
