"""`smartstart rbac …`: roles, permissions, grants, role assignments and checks.

The operator at the CLI already holds the database (`Actor.operator()` holds every
permission), so `authorize` never refuses it; every other rule of
smartstart.domain.rbac applies, and every change is audited as `cli:<os user>`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, TypeVarTuple

import psycopg
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
from smartstart.domain import rbac
from smartstart.domain.actor import Actor
from smartstart.domain.paging import Page

app = typer.Typer(
    help="Roles, permissions, grants and role assignments (RBAC).", no_args_is_help=True
)
roles_app = typer.Typer(help="Roles: list (the default), show, create, update, delete.")
permissions_app = typer.Typer(help="Permissions: list (the default), show, create, update, delete.")
app.add_typer(roles_app, name="roles")
app.add_typer(permissions_app, name="permissions")

RoleArg = Annotated[str, typer.Argument(help="Role name (or id).")]
PermissionArg = Annotated[str, typer.Argument(help="Permission name, resource:action.")]
UserArg = Annotated[str, typer.Argument(help="The user: id, email or username.")]
DescriptionOpt = Annotated[str | None, typer.Option("--description", "-d", help="Description.")]

Connection = psycopg.Connection[Any]
P = TypeVar("P")
R = TypeVar("R")
T = TypeVar("T")
Refs = TypeVarTuple("Refs")
C = TypeVar("C", rbac.RoleRow, rbac.PermissionRow)


def _say(message: str) -> None:
    console.print(f"[green]•[/] {message}", highlight=False)


def _listing(
    lister: Callable[..., Page[R]],
    as_json: bool,
    limit: int,
    cursor: str | None,
    table: Callable[[R], dict[str, object]],
    title: str,
) -> None:
    """A page of `lister` (rbac.list_roles or rbac.list_permissions) as JSON or a table."""
    with transaction() as (conn, _):
        page = lister(conn, settings=settings(), limit=limit, cursor=cursor)
    if as_json:
        print_json(page.as_dict())
        return
    print_table([table(r) for r in page.items], title=title)
    more(page)


def _written(row: C, as_json: bool, message: str) -> None:
    if as_json:
        print_json(row)
    else:
        _say(message)


def _changes(name: str | None, description: str | None) -> dict[str, str | None]:
    """What an update sets: only what was given; --description "" clears it."""
    changes: dict[str, str | None] = {}
    if name is not None:
        changes["name"] = name
    if description is not None:
        changes["description"] = description or None
    return changes


def _planned(
    verb: str,
    touch: Callable[[P], str | None],
    plan: Callable[[Connection, Actor, *Refs], P],
    write: Callable[[Connection, Actor, *Refs], T],
    *refs: *Refs,
    yes: bool,
    dry_run: bool,
) -> tuple[P, T] | None:
    """Plan (its own read-only transaction), show it and stop for --dry-run, ask, write.

    `touch` names what the plan changes ("role X: …"), None when it changes nothing
    (no question then; the write still records the no-op). No transaction is open
    while we ask, and a dry run writes nothing at all.
    """
    with transaction() as (conn, actor):
        planned = plan(conn, actor, *refs)
    what = touch(planned)
    if dry_run:
        _say(f"would {verb} {what}" if what else f"nothing to {verb}")
        _say("nothing changed (dry run)")
        return None
    if what:
        confirm(f"{verb.capitalize()} {what}?", yes)
    with transaction() as (conn, actor):
        return planned, write(conn, actor, *refs)


# -- roles and permissions: the same commands over two kinds ---------------------------


@dataclass(frozen=True)
class _Catalogue(Generic[C]):
    """How `rbac roles …` and `rbac permissions …` differ; `_catalogue_commands` makes
    the same list, show, create, update and delete commands of each."""

    plural: str  # "roles": the listing's title
    arg_help: str  # of the ROLE / PERMISSION argument
    rename_help: str  # of update's --name
    docs: dict[str, str]  # command → its help
    # the domain's list_…, resolve_…, create_… and update_… functions of the kind
    domain: tuple[
        Callable[..., Page[C]], Callable[[Connection, str], C], Callable[..., C], Callable[..., C]
    ]
    table: Callable[[C], dict[str, object]]  # a listing's row
    show: Callable[[C], None]  # `show` without --json
    created: Callable[[C], str]  # what `create` says
    deletion: tuple[
        str,
        Callable[[Any], str | None],
        Callable[[Connection, Actor, str], Any],
        Callable[[Connection, Actor, str], C],
    ]


def _catalogue_commands(sub: typer.Typer, kind: _Catalogue[C]) -> None:
    """Register the commands of one catalogue sub-app (`rbac roles` lists, as does
    `rbac roles list`)."""
    lister, resolver, creator, updater = kind.domain

    @handle_errors
    def listing(
        as_json: JsonOpt = False, limit: LimitOpt = DEFAULT_LIMIT, cursor: CursorOpt = None
    ) -> None:
        _listing(lister, as_json, limit, cursor, kind.table, kind.plural)

    def default(  # `rbac roles` alone lists, as `rbac roles list` does
        ctx: typer.Context,
        as_json: JsonOpt = False,
        limit: LimitOpt = DEFAULT_LIMIT,
        cursor: CursorOpt = None,
    ) -> None:
        if ctx.invoked_subcommand is None:
            listing(as_json, limit, cursor)

    @handle_errors
    def show(
        ref: str = typer.Argument(help=kind.arg_help, metavar=kind.plural[:-1]),
        as_json: JsonOpt = False,
    ) -> None:
        with transaction() as (conn, _):
            row = resolver(conn, ref)
        if as_json:
            print_json(row)
        else:
            kind.show(row)

    @handle_errors
    def create(
        name: str = typer.Argument(help=kind.arg_help),
        description: DescriptionOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        with transaction() as (conn, actor):
            row = creator(conn, actor, name=name, description=description)
        _written(row, as_json, kind.created(row))

    @handle_errors
    def update(
        ref: str = typer.Argument(help=kind.arg_help, metavar=kind.plural[:-1]),
        name: str | None = typer.Option(None, "--name", help=kind.rename_help),
        description: DescriptionOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        with transaction() as (conn, actor):
            row = updater(conn, actor, ref, **_changes(name, description))
        _written(row, as_json, f"updated {kind.plural[:-1]} {row['name']}")

    @handle_errors
    def delete(
        ref: str = typer.Argument(help=kind.arg_help, metavar=kind.plural[:-1]),
        yes: YesOpt = False,
        dry_run: DryRunOpt = False,
    ) -> None:
        done = _planned(*kind.deletion, ref, yes=yes, dry_run=dry_run)
        if done:
            _say(f"deleted {kind.deletion[1](done[0])}")

    sub.callback(invoke_without_command=True)(default)
    for name, command in (
        ("list", listing),
        ("show", show),
        ("create", create),
        ("update", update),
        ("delete", delete),
    ):
        sub.command(name, help=kind.docs[name])(command)


def _role_row(r: rbac.RoleRow) -> dict[str, object]:
    return {
        "name": r["name"],
        "users": r["users"],
        "permissions": len(r["permissions"]),
        "description": r["description"],
    }


def _show_role(role: rbac.RoleRow) -> None:
    print_table(
        [{"field": k, "value": v} for k, v in role.items() if k != "permissions"],
        ["field", "value"],
        title=f"role {role['name']}",
    )
    print_table([{"permission": p} for p in role["permissions"]], ["permission"])


def _role_deletion(plan: rbac.RoleDeletePlan) -> str:
    return (
        f"role {plan['role']['name']}: {len(plan['grants'])} grant(s),"
        f" {plan['assignments']} assignment(s)"
    )


_catalogue_commands(
    roles_app,
    _Catalogue(
        plural="roles",
        arg_help="Role name (or id).",
        rename_help="New name; users' primary role follows.",
        docs={
            "list": "List roles with their number of users and permissions.",
            "show": "Show a role and the permissions it grants.",
            "create": "Create a role (without permissions: `rbac grant` them next).",
            "update": "Rename a role or change its description.",
            "delete": "Delete a role with its grants (refused while it is some user's primary"
            " role).",
        },
        domain=(rbac.list_roles, rbac.resolve_role, rbac.create_role, rbac.update_role),
        table=_role_row,
        show=_show_role,
        created=lambda row: f"created role {row['name']} ({row['id']})",
        deletion=("delete", _role_deletion, rbac.plan_delete_role, rbac.delete_role),
    ),
)


def _permission_row(p: rbac.PermissionRow) -> dict[str, object]:
    return {"name": p["name"], "roles": ", ".join(p["roles"]), "description": p["description"]}


def _show_permission(perm: rbac.PermissionRow) -> None:
    print_table(
        [{"field": k, "value": v} for k, v in {**perm, "roles": ", ".join(perm["roles"])}.items()],
        ["field", "value"],
        title=f"permission {perm['name']}",
    )


def _permission_deletion(plan: rbac.PermissionDeletePlan) -> str:
    granted = ", ".join(plan["roles"]) or "no role"
    return f"permission {plan['permission']['name']}, granted to {granted}"


_catalogue_commands(
    permissions_app,
    _Catalogue(
        plural="permissions",
        arg_help="Permission name, resource:action.",
        rename_help="New resource:action name.",
        docs={
            "list": "List permissions with the roles granting them.",
            "show": "Show a permission and the roles granting it.",
            "create": "Create a permission (resource:action); SUPER_ADMIN is granted it at once.",
            "update": "Rename a (non built-in) permission or change its description.",
            "delete": "Delete a (non built-in) permission and its grants.",
        },
        domain=(
            rbac.list_permissions,
            rbac.resolve_permission,
            rbac.create_permission,
            rbac.update_permission,
        ),
        table=_permission_row,
        show=_show_permission,
        created=lambda row: f"created permission {row['name']} (granted to SUPER_ADMIN)",
        deletion=(
            "delete",
            _permission_deletion,
            rbac.plan_delete_permission,
            rbac.delete_permission,
        ),
    ),
)


# -- grants ----------------------------------------------------------------------------


@app.command()
@handle_errors
def grant(role: RoleArg, permission: PermissionArg) -> None:
    """Grant a permission to a role (a no-op when already granted)."""
    with transaction() as (conn, actor):
        row, changed = rbac.grant(conn, actor, role, permission)
    _say(
        f"granted {permission} to {row['name']}"
        if changed
        else f"{row['name']} already had {permission}; nothing changed"
    )


def _revocation(plan: rbac.RevokePlan) -> str | None:
    if not plan["changed"]:
        return None
    return f"{plan['permission']} from role {plan['role']['name']} ({plan['users']} user(s))"


REVOCATION = ("revoke", _revocation, rbac.plan_revoke, rbac.revoke)


@app.command()
@handle_errors
def revoke(
    role: RoleArg, permission: PermissionArg, yes: YesOpt = False, dry_run: DryRunOpt = False
) -> None:
    """Revoke a permission from a role (a no-op when not granted)."""
    done = _planned(*REVOCATION, role, permission, yes=yes, dry_run=dry_run)
    if done:
        plan, (_, changed) = done
        _say(
            f"revoked {_revocation(plan)}"
            if changed
            else f"{plan['role']['name']} lacked {plan['permission']}; nothing changed"
        )


@app.command()
@handle_errors
def matrix(as_json: JsonOpt = False) -> None:
    """Roles × permissions: which role grants what."""
    with transaction() as (conn, _):
        m = rbac.matrix(conn)
    if as_json:
        print_json(m)
        return
    rows = [
        {"permission": p, **{r: ("✓" if p in m["grants"][r] else "") for r in m["roles"]}}
        for p in m["permissions"]
    ]
    print_table(rows, ["permission", *m["roles"]], title="role × permission")


# -- assignments and checks ---------------------------------------------------------------


def _roles_line(roles: rbac.UserRoles) -> str:
    return ", ".join(r["name"] + (" (primary)" if r["primary"] else "") for r in roles["roles"])


@app.command()
@handle_errors
def assign(user: UserArg, role: RoleArg) -> None:
    """Assign a role to a user (a no-op when already assigned)."""
    with transaction() as (conn, actor):
        roles, changed = rbac.assign(conn, actor, user, role)
    email = roles["user"]["email"]
    _say(
        f"assigned {role} to {email}" if changed else f"{email} already had {role}; nothing changed"
    )
    _say(f"roles: {_roles_line(roles)}")


def _unassignment(plan: rbac.UnassignPlan) -> str | None:
    return f"{plan['role']} from {plan['user']['email']}" if plan["changed"] else None


UNASSIGNMENT = ("unassign", _unassignment, rbac.plan_unassign, rbac.unassign)


@app.command()
@handle_errors
def unassign(user: UserArg, role: RoleArg, yes: YesOpt = False, dry_run: DryRunOpt = False) -> None:
    """Unassign an additional role from a user (the primary role: change it with `users update`)."""
    done = _planned(*UNASSIGNMENT, user, role, yes=yes, dry_run=dry_run)
    if done:
        plan, (roles, changed) = done
        email = plan["user"]["email"]
        _say(
            f"unassigned {_unassignment(plan)}"
            if changed
            else f"{email} lacked {plan['role']}; nothing changed"
        )
        _say(f"roles: {_roles_line(roles)}")


@app.command()
@handle_errors
def effective(user: UserArg, as_json: JsonOpt = False) -> None:
    """A user's effective permissions, each with the roles granting it."""
    with transaction() as (conn, _):
        eff = rbac.effective(conn, user)
    if as_json:
        print_json(eff)
        return
    u = eff["user"]
    print_table(
        [{"permission": p["name"], "via roles": ", ".join(p["roles"])} for p in eff["permissions"]],
        ["permission", "via roles"],
        title=f"{u['email']} ({u['role']}, {u['status']})",
    )


@app.command()
@handle_errors
def check(user: UserArg, permission: PermissionArg, as_json: JsonOpt = False) -> None:
    """Whether a user holds a permission, and why; exit status 0 if allowed, 1 if not."""
    with transaction() as (conn, _):
        result = rbac.check(conn, user, permission, explain=True)
    if as_json:
        print_json(result)
    else:
        verdict = "[green]allowed[/]" if result["allowed"] else "[red]denied[/]"
        console.print(
            f"{user} {permission}: {verdict} — {result['reason']}",
            highlight=False,
        )
    if not result["allowed"]:
        raise typer.Exit(1)
