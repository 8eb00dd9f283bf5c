"""`smartstart users …`: list, show, create, update, suspend, passwords, XP, delete."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, cast

import typer

from smartstart.cli.common import (
    DryRunOpt,
    JsonOpt,
    YesOpt,
    ask_secret,
    confirm,
    console,
    fail,
    handle_errors,
    print_json,
    print_table,
    settings,
)
from smartstart.cli.context import transaction
from smartstart.cli.paging import DEFAULT_LIMIT, CursorOpt, LimitOpt, more

# The domain (and with it the driver) is imported by each command when it runs: building
# the group for its help or for completing a word does without it (~135 ms).
if TYPE_CHECKING:
    from smartstart.domain import users, xp
    from smartstart.domain.resolve import UserRow

app = typer.Typer(
    help="User accounts: list, show, create, update, status, passwords, XP, delete.",
    no_args_is_help=True,
)

UserArg = Annotated[str, typer.Argument(help="The user's id, email or username.")]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", "-r", help="Why (kept in the audit log).")
]
PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--password",
        help="The password (visible in the process list: prefer the prompt or --password-stdin).",
    ),
]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]
LIST_COLUMNS = ("id", "email", "username", "name", "role", "status", "level", "xp", "lastActive")


def _say(message: str) -> None:
    console.print(f"[green]•[/] {message}", highlight=False)


def _label(user: UserRow) -> str:
    return f"{user['username']} <{user['email']}> ({user['id']})"


def _password(given: str | None, from_stdin: bool) -> str:
    """The new password: --password, one line of stdin, or asked twice without echo."""
    if given is not None and from_stdin:
        raise fail("use either --password or --password-stdin, not both")
    if given is not None:
        return given
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return ask_secret("New password")


def _show(user: UserRow, as_json: bool) -> None:
    if as_json:
        print_json(user)
    else:
        from smartstart.domain.users import PUBLIC_COLUMNS

        print_table(
            [{"field": c, "value": user.get(c)} for c in PUBLIC_COLUMNS], ["field", "value"]
        )


@app.command("list")
@handle_errors
def list_(
    search: Annotated[
        str | None, typer.Option("--search", "-s", help="Substring of email, username or name.")
    ] = None,
    role: Annotated[str | None, typer.Option("--role", help="Users holding this role.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="ACTIVE, INACTIVE, SUSPENDED or PENDING.")
    ] = None,
    level: Annotated[
        str | None, typer.Option("--level", help="OWLET, FLEDGLING, NIGHT_OWL or WISE_OWL.")
    ] = None,
    sort: Annotated[
        str, typer.Option("--sort", help="createdAt, email, username, xp or lastActive.")
    ] = "createdAt",
    asc: Annotated[bool, typer.Option("--asc", help="Ascending (default: descending).")] = False,
    limit: LimitOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List users: search, filter by role/status/level, sort, one page at a time."""
    from smartstart.domain import users

    with transaction() as (conn, _):
        page = users.list_users(
            conn,
            users.UserFilter(q=search, role=role, status=status, level=level),
            settings=settings(),
            sort=sort,
            order="asc" if asc else "desc",
            limit=limit,
            cursor=cursor,
        )
    if as_json:
        print_json(page.as_dict())
        return
    print_table([dict(u) for u in page.items], LIST_COLUMNS)
    more(page)


@app.command()
@handle_errors
def show(user: UserArg, as_json: JsonOpt = False) -> None:
    """Show one user (by id, email or username)."""
    from smartstart.domain.resolve import resolve_user

    with transaction() as (conn, _):
        row = resolve_user(conn, user)
    _show(row, as_json)


@app.command()
@handle_errors
def create(
    email: Annotated[str, typer.Option("--email", help="Unique, case-insensitively.")],
    username: Annotated[str, typer.Option("--username", help="Unique.")],
    name: Annotated[str | None, typer.Option("--name")] = None,
    first_name: Annotated[str | None, typer.Option("--first-name")] = None,
    last_name: Annotated[str | None, typer.Option("--last-name")] = None,
    role: Annotated[str, typer.Option("--role", help="The primary role.")] = "MEMBER",
    status: Annotated[str, typer.Option("--status")] = "ACTIVE",
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a user (asks for the password twice unless given)."""
    from smartstart.domain import users

    secret = _password(password, password_stdin)
    with transaction() as (conn, actor):
        row = users.create(
            conn,
            actor,
            email=email,
            username=username,
            password=secret,
            name=name,
            first_name=first_name,
            last_name=last_name,
            role=role,
            status=status,
            rounds=settings().bcrypt_rounds,
        )
    if as_json:
        print_json(row)
    else:
        _say(f"created {_label(row)} with role {row['role']}")


@app.command()
@handle_errors
def update(
    user: UserArg,
    email: Annotated[str | None, typer.Option("--email")] = None,
    username: Annotated[str | None, typer.Option("--username")] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    first_name: Annotated[str | None, typer.Option("--first-name")] = None,
    last_name: Annotated[str | None, typer.Option("--last-name")] = None,
    role: Annotated[str | None, typer.Option("--role", help="The primary role.")] = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a user's email, username, names, role or status (only the options given)."""
    from smartstart.domain import users

    given = {
        "email": email,
        "username": username,
        "name": name,
        "firstName": first_name,
        "lastName": last_name,
        "role": role,
        "status": status,
    }
    # Only the options given (an empty name is a value: the CLI cannot clear one).
    changes = cast(users.UserChanges, {k: v for k, v in given.items() if v is not None})
    if not changes:
        raise fail("nothing to change: give at least one option (see --help)")
    with transaction() as (conn, actor):
        row = users.update(conn, actor, user, changes)
    if as_json:
        print_json(row)
    else:
        _say(f"updated {_label(row)}: {', '.join(sorted(changes))}")


def _set_status(user: str, verb: str, as_json: bool) -> None:
    from smartstart.domain import users

    action = {"suspend": users.suspend, "activate": users.activate, "deactivate": users.deactivate}
    with transaction() as (conn, actor):
        row = action[verb](conn, actor, user)
    if as_json:
        print_json(row)
    else:
        _say(f"{_label(row)} is now {row['status']}")


@app.command()
@handle_errors
def suspend(user: UserArg, as_json: JsonOpt = False) -> None:
    """Suspend a user: no login, every session ended at once."""
    _set_status(user, "suspend", as_json)


@app.command()
@handle_errors
def activate(user: UserArg, as_json: JsonOpt = False) -> None:
    """Activate a user (after suspension, deactivation or while pending)."""
    _set_status(user, "activate", as_json)


@app.command()
@handle_errors
def deactivate(user: UserArg, as_json: JsonOpt = False) -> None:
    """Deactivate a user: no login, sessions ended; reversible (unlike delete)."""
    _set_status(user, "deactivate", as_json)


@app.command()
@handle_errors
def passwd(
    user: UserArg, password: PasswordOpt = None, password_stdin: PasswordStdinOpt = False
) -> None:
    """Set a user's password (asks twice, hidden, unless given); ends their sessions."""
    from smartstart.domain import users

    secret = _password(password, password_stdin)
    with transaction() as (conn, actor):
        row = users.set_password(conn, actor, user, secret, rounds=settings().bcrypt_rounds)
    _say(f"password of {_label(row)} changed; their sessions were ended")


@dataclass(frozen=True)
class _CounterHelp:
    add: str
    amount: str
    set: str
    value: str


_COUNTERS: dict[xp.Counter, _CounterHelp] = {
    "xp": _CounterHelp(
        add="Add XP (atomically; the level follows). A reason is required.",
        amount="XP to add; to take, write `-- -50`.",
        set="Set a user's XP; the level follows.",
        value="The new XP total (≥ 0).",
    ),
    "reputation": _CounterHelp(
        add="Add reputation (atomically). A reason is required.",
        amount="Reputation to add; to take, write `-- -5`.",
        set="Set a user's reputation.",
        value="The new reputation.",
    ),
}


def _counter_commands(counter: xp.Counter, text: _CounterHelp) -> None:
    """`add-<counter>` and `set-<counter>`: one implementation for XP and reputation."""

    @app.command(f"add-{counter}", help=text.add)
    @handle_errors
    def add(
        user: UserArg,
        amount: int = typer.Argument(..., help=text.amount),
        reason: ReasonOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        from smartstart.domain import xp

        if reason is None:
            raise fail("give a --reason (it is kept in the audit log)")
        with transaction() as (conn, actor):
            row = xp.add(conn, actor, user, counter, amount, reason)
        _counter_done(row, counter, as_json)

    @app.command(f"set-{counter}", help=text.set)
    @handle_errors
    def set_(
        user: UserArg,
        value: int = typer.Argument(..., metavar=counter, help=text.value),
        reason: ReasonOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        from smartstart.domain import xp

        with transaction() as (conn, actor):
            row = xp.set_(conn, actor, user, counter, value, reason)
        _counter_done(row, counter, as_json)


for _counter, _help in _COUNTERS.items():
    _counter_commands(_counter, _help)


def _counter_done(row: UserRow, counter: xp.Counter, as_json: bool) -> None:
    if as_json:
        print_json(row)
    elif counter == "xp":
        _say(f"{_label(row)}: {row['xp']} XP, level {row['level']}")
    else:
        _say(f"{_label(row)}: reputation {row['reputation']}")


@app.command()
@handle_errors
def delete(user: UserArg, yes: YesOpt = False, dry_run: DryRunOpt = False) -> None:
    """Delete a user for good, with their sessions, journey and role assignments."""
    from smartstart.domain import users

    # The plan (refused as the deletion would be) in a read-only transaction of its own:
    # nothing is locked or open while the operator reads the question.
    with transaction() as (conn, actor):
        plan = users.plan_delete(conn, actor, user)
    target = plan.user
    if dry_run:
        _say(f"would delete {_label(target)} and {_touched(plan)}; nothing was changed")
        return
    confirm(f"Delete {_label(target)} and {_touched(plan)}? This cannot be undone.", yes)
    with transaction() as (conn, actor):
        done = users.delete(conn, actor, target["id"])
    _say(f"deleted {_label(target)} and {_touched(done)}")


def _touched(plan: users.DeletePlan) -> str:
    return (
        f"{plan.sessions} sessions ({plan.active_sessions} active), "
        f"{plan.journey_states} journey states, {plan.role_assignments} role assignments"
    )
