"""`smartstart rbac …`: roles, permissions, grants, role assignments and checks.

The operator at the CLI already holds the database (`Actor.operator()` holds every
permission), so `authorize` never refuses it; every other rule of
smartstart.domain.rbac applies, and every change is audited as `cli:<os user>`.
"""

from __future__ import annotations

from typing import Annotated, Any

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
from smartstart.domain.resolve import resolve_user

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


def _say(message: str) -> None:
    console.print(f"[green]•[/] {message}", highlight=False)


def _role_rows(roles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": r["name"],
            "users": r["users"],
            "permissions": len(r["permissions"]),
            "description": r["description"],
        }
        for r in roles
    ]


def _show_role(role: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(role)
        return
    print_table(
        [{"field": k, "value": v} for k, v in role.items() if k != "permissions"],
        ["field", "value"],
        title=f"role {role['name']}",
    )
    print_table([{"permission": p} for p in role["permissions"]], ["permission"])


def _show_permission(perm: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(perm)
        return
    print_table(
        [{"field": k, "value": ", ".join(v) if k == "roles" else v} for k, v in perm.items()],
        ["field", "value"],
        title=f"permission {perm['name']}",
    )


# -- roles ---------------------------------------------------------------------------


@roles_app.callback(invoke_without_command=True)
def roles(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    limit: LimitOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
) -> None:
    """List roles (`rbac roles` alone is `rbac roles list`)."""
    if ctx.invoked_subcommand is None:
        role_list(as_json, limit, cursor)


@roles_app.command("list")
@handle_errors
def role_list(
    as_json: JsonOpt = False, limit: LimitOpt = DEFAULT_LIMIT, cursor: CursorOpt = None
) -> None:
    """List roles with their number of users and permissions."""
    with transaction() as (conn, _):
        page = rbac.list_roles(conn, settings=settings(), limit=limit, cursor=cursor)
    if as_json:
        print_json(page.as_dict())
        return
    print_table(_role_rows(page.items), title="roles")
    more(page)


@roles_app.command("show")
@handle_errors
def role_show(role: RoleArg, as_json: JsonOpt = False) -> None:
    """Show a role and the permissions it grants."""
    with transaction() as (conn, _):
        row = rbac.resolve_role(conn, role)
    _show_role(row, as_json)


@roles_app.command("create")
@handle_errors
def role_create(
    name: RoleArg, description: DescriptionOpt = None, as_json: JsonOpt = False
) -> None:
    """Create a role (without permissions: `rbac grant` them next)."""
    with transaction() as (conn, actor):
        row = rbac.create_role(conn, actor, name=name, description=description)
    if as_json:
        print_json(row)
    else:
        _say(f"created role {row['name']} ({row['id']})")


@roles_app.command("update")
@handle_errors
def role_update(
    role: RoleArg,
    name: Annotated[
        str | None, typer.Option("--name", help="New name; users' primary role follows.")
    ] = None,
    description: DescriptionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename a role or change its description."""
    kwargs: dict[str, Any] = {}
    if name is not None:
        kwargs["name"] = name
    if description is not None:
        kwargs["description"] = description or None  # --description "" clears it
    with transaction() as (conn, actor):
        row = rbac.update_role(conn, actor, role, **kwargs)
    if as_json:
        print_json(row)
    else:
        _say(f"updated role {row['name']}")


@roles_app.command("delete")
@handle_errors
def role_delete(role: RoleArg, yes: YesOpt = False, dry_run: DryRunOpt = False) -> None:
    """Delete a role with its grants (refused while it is some user's primary role)."""
    with transaction() as (conn, actor):
        row = rbac.resolve_role(conn, role)
        touch = (
            f"role {row['name']}: {len(row['permissions'])} grant(s), {row['users']} assignment(s)"
        )
        if dry_run:
            rbac.delete_role(conn, actor, role)  # every rule checked, then undone
            conn.rollback()
            _say(f"would delete {touch}; nothing changed (dry run)")
            return
        confirm(f"Delete {touch}?", yes)
        rbac.delete_role(conn, actor, role)
    _say(f"deleted {touch}")


# -- permissions -----------------------------------------------------------------------


@permissions_app.callback(invoke_without_command=True)
def permissions(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    limit: LimitOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
) -> None:
    """List permissions (`rbac permissions` alone is `rbac permissions list`)."""
    if ctx.invoked_subcommand is None:
        permission_list(as_json, limit, cursor)


@permissions_app.command("list")
@handle_errors
def permission_list(
    as_json: JsonOpt = False, limit: LimitOpt = DEFAULT_LIMIT, cursor: CursorOpt = None
) -> None:
    """List permissions with the roles granting them."""
    with transaction() as (conn, _):
        page = rbac.list_permissions(conn, settings=settings(), limit=limit, cursor=cursor)
    if as_json:
        print_json(page.as_dict())
        return
    print_table(
        [
            {"name": p["name"], "roles": ", ".join(p["roles"]), "description": p["description"]}
            for p in page.items
        ],
        title="permissions",
    )
    more(page)


@permissions_app.command("show")
@handle_errors
def permission_show(permission: PermissionArg, as_json: JsonOpt = False) -> None:
    """Show a permission and the roles granting it."""
    with transaction() as (conn, _):
        row = rbac.resolve_permission(conn, permission)
    _show_permission(row, as_json)


@permissions_app.command("create")
@handle_errors
def permission_create(
    name: PermissionArg, description: DescriptionOpt = None, as_json: JsonOpt = False
) -> None:
    """Create a permission (resource:action); SUPER_ADMIN is granted it at once."""
    with transaction() as (conn, actor):
        row = rbac.create_permission(conn, actor, name=name, description=description)
    if as_json:
        print_json(row)
    else:
        _say(f"created permission {row['name']} (granted to SUPER_ADMIN)")


@permissions_app.command("update")
@handle_errors
def permission_update(
    permission: PermissionArg,
    name: Annotated[str | None, typer.Option("--name", help="New resource:action name.")] = None,
    description: DescriptionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename a (non built-in) permission or change its description."""
    kwargs: dict[str, Any] = {}
    if name is not None:
        kwargs["name"] = name
    if description is not None:
        kwargs["description"] = description or None
    with transaction() as (conn, actor):
        row = rbac.update_permission(conn, actor, permission, **kwargs)
    if as_json:
        print_json(row)
    else:
        _say(f"updated permission {row['name']}")


@permissions_app.command("delete")
@handle_errors
def permission_delete(
    permission: PermissionArg, yes: YesOpt = False, dry_run: DryRunOpt = False
) -> None:
    """Delete a (non built-in) permission and its grants."""
    with transaction() as (conn, actor):
        row = rbac.resolve_permission(conn, permission)
        touch = f"permission {row['name']}, granted to {', '.join(row['roles']) or 'no role'}"
        if dry_run:
            rbac.delete_permission(conn, actor, permission)
            conn.rollback()
            _say(f"would delete {touch}; nothing changed (dry run)")
            return
        confirm(f"Delete {touch}?", yes)
        rbac.delete_permission(conn, actor, permission)
    _say(f"deleted {touch}")


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


@app.command()
@handle_errors
def revoke(
    role: RoleArg, permission: PermissionArg, yes: YesOpt = False, dry_run: DryRunOpt = False
) -> None:
    """Revoke a permission from a role (a no-op when not granted)."""
    with transaction() as (conn, actor):
        target = rbac.resolve_role(conn, role)
        touch = f"{permission} from role {target['name']} ({target['users']} user(s))"
        if dry_run:
            _, changed = rbac.revoke(conn, actor, role, permission)
            conn.rollback()
            _say(f"would revoke {touch}" if changed else f"{target['name']} lacks {permission}")
            _say("nothing changed (dry run)")
            return
        confirm(f"Revoke {touch}?", yes)
        _, changed = rbac.revoke(conn, actor, role, permission)
    _say(
        f"revoked {touch}" if changed else f"{target['name']} lacked {permission}; nothing changed"
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


def _roles_line(roles: dict[str, Any]) -> str:
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


@app.command()
@handle_errors
def unassign(user: UserArg, role: RoleArg, yes: YesOpt = False, dry_run: DryRunOpt = False) -> None:
    """Unassign an additional role from a user (the primary role: change it with `users update`)."""
    with transaction() as (conn, actor):
        email = resolve_user(conn, user)["email"]
        if dry_run:
            _, changed = rbac.unassign(conn, actor, user, role)
            conn.rollback()
            _say(f"would unassign {role} from {email}" if changed else f"{email} lacks {role}")
            _say("nothing changed (dry run)")
            return
        confirm(f"Unassign {role} from {email}?", yes)
        roles, changed = rbac.unassign(conn, actor, user, role)
    _say(
        f"unassigned {role} from {email}" if changed else f"{email} lacked {role}; nothing changed"
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
